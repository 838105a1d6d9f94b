//! Issue 12 §3: a hostile UCWA server floods the event channel of a pending conversation with
//! event after event, each naming new invitation / conversation / messaging hrefs. The sink
//! keeps a fixed amount of state per conversation: the process's memory stays flat while the
//! flood lasts, and the invitation's real outcome still arrives and counts.

mod common;
mod hostile;

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use alertbridge_plugin_api::{DeliveryStatus, kit::Sink as _};
use common::{message, start_sink_config};
use hostile::{Answer, Hostile, Request};
use serde_json::json;

/// Pages of flood events, and events per page (each page stays well under the body cap).
const PAGES: usize = 40;
const PER_PAGE: usize = 5_000;

/// The resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

#[derive(Default)]
struct Flood {
    operation: Option<String>,
    pages: usize,
    /// RSS once the first pages were taken in (the per-page working set is reached).
    rss_warm: u64,
    /// RSS when the last flood page was taken in.
    rss_end: u64,
}

/// The page after which the working set counts as reached.
const WARM: usize = 5;

fn page(next: usize, events: &str) -> Answer {
    Answer::Full {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(
            r#"{{"_links":{{"next":{{"href":"/events?ack={next}"}}}},"sender":[{events}]}}"#
        )
        .into_bytes(),
    }
}

/// One page of `PER_PAGE` invitation updates, each with fresh hrefs.
fn flood_page(n: usize, operation: &str) -> String {
    let mut events = String::with_capacity(PER_PAGE * 400);
    for j in 0..PER_PAGE {
        if j > 0 {
            events.push(',');
        }
        let id = format!("{n}-{j}");
        let _ = write!(
            events,
            r#"{{"link":{{"rel":"messagingInvitation","href":"/inv/{id}"}},"type":"updated","_embedded":{{"messagingInvitation":{{"state":"Connecting","operationId":"{operation}","_links":{{"messaging":{{"href":"/conv/{id}/messaging"}},"conversation":{{"href":"/conv/{id}"}}}}}}}}}}"#
        );
    }
    format!(r#"{{"rel":"communication","href":"/comm","events":[{events}]}}"#)
}

fn script(state: &Mutex<Flood>, r: &Request) -> Answer {
    let ok = |body| Answer::json(200, body);
    match (r.method.as_str(), r.path.split('?').next().unwrap_or("")) {
        ("GET", "/") => ok(json!({"_links": {"user": {"href": "/user"}}})),
        ("GET", "/user") if !r.authorized() => Answer::challenge("/token"),
        ("GET", "/user") => ok(json!({"_links": {"applications": {"href": "/apps"}}})),
        ("POST", "/token") => ok(json!({"access_token": "t", "token_type": "Bearer"})),
        ("POST", "/apps") | ("GET", "/app") => ok(json!({
            "_links": {"self": {"href": "/app"}, "events": {"href": "/events?ack=1"}},
            "_embedded": {
                "me": {"_links": {}},
                "people": {"_links": {"self": {"href": "/people"}}},
                "communication": {"_links": {"startMessaging": {"href": "/start"}}},
            },
        })),
        ("POST", "/start") => {
            let mut s = state.lock().unwrap();
            s.operation = r.json()["operationId"].as_str().map(str::to_owned);
            ok(json!({}))
        }
        ("GET", "/events") => {
            let mut s = state.lock().unwrap();
            let Some(operation) = s.operation.clone() else {
                return Answer::Later {
                    after: Duration::from_millis(50),
                    answer: Box::new(page(1, "")),
                };
            };
            s.pages += 1;
            // Each P-GET follows the page before it, taken in and dispatched.
            let n = s.pages;
            if n == WARM + 1 {
                s.rss_warm = rss();
            }
            if n == PAGES + 1 {
                s.rss_end = rss();
            }
            if n <= PAGES {
                return page(n + 1, &flood_page(n, &operation));
            }
            if n == PAGES + 1 {
                let done = r#"{"rel":"communication","href":"/comm","events":[{"link":{"rel":"messagingInvitation","href":"/inv/1-0"},"type":"completed","status":"Success"}]}"#;
                return page(n + 1, done);
            }
            Answer::Later {
                after: Duration::from_millis(200),
                answer: Box::new(page(n + 1, "")),
            }
        }
        ("DELETE", "/app") => Answer::Full {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        },
        _ => Answer::json(404, json!({"code": "NotFound"})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_events_for_a_pending_conversation_keeps_memory_flat() {
    let state = Arc::new(Mutex::new(Flood::default()));
    let shared = state.clone();
    let lync = Hostile::start(move |r| script(&shared, r)).await;
    let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
    let running = start_sink_config(format!(
        "autodiscover_url = \"{url}\"\nallow_http = true\nusername = \"alerts@contoso.localhost\"\n\
         password = \"pw\"\ninvitation_timeout_secs = 120\nrequest_timeout_secs = 30\n"
    ));
    let results = running
        .sink
        .deliver(message(
            "flood",
            "under a flood",
            &["sip:alice@contoso.localhost"],
        ))
        .await
        .unwrap();
    running.stop().await;
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    let s = state.lock().unwrap();
    assert!(s.pages > PAGES, "the flood was served: {} pages", s.pages);
    // Per-page buffers come and go; what a conversation keeps must not add up.
    let grown = s.rss_end.saturating_sub(s.rss_warm);
    eprintln!(
        "flood of {} events ({} new hrefs) for one conversation: RSS after page {WARM} {:.1} MiB, \
         after page {PAGES} {:.1} MiB (+{:.1} MiB)",
        PAGES * PER_PAGE,
        PAGES * PER_PAGE * 3,
        s.rss_warm as f64 / (1 << 20) as f64,
        s.rss_end as f64 / (1 << 20) as f64,
        grown as f64 / (1 << 20) as f64
    );
    assert!(
        grown < 24 << 20,
        "memory grew by {grown} bytes while the flood lasted"
    );
}
