//! Issue 12 §3: a hostile UCWA server cannot make the sink hold unbounded data. A response body
//! streamed without end (or announcing a huge length) is cut at `max_response_bytes` with a
//! clear error, and the sink reads no more of it; the server sees the client hang up.

mod common;
mod hostile;

use std::time::Duration;

use alertbridge_plugin_api::{HealthState, kit::Sink as _};
use common::{start_sink_config, wait_health_text};
use hostile::{Answer, Hostile, sign_in};
use serde_json::json;

const MIB: u64 = 1 << 20;

fn config(url: &str, extra: &str) -> String {
    format!(
        "autodiscover_url = \"{url}\"\nallow_http = true\nusername = \"alerts@contoso.localhost\"\n\
         password = \"pw\"\nrequest_timeout_secs = 30\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_is_cut_at_the_cap_and_not_read_further() {
    // 1 GiB, streamed as fast as loopback takes it; the default cap is 4 MiB.
    let lync = Hostile::start(|_| Answer::Stream {
        total: 1024 * MIB,
        announce: None,
    })
    .await;
    let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
    let started = std::time::Instant::now();
    let running = start_sink_config(config(&url, ""));
    let message = wait_health_text(&running, "response body larger than").await;
    let took = started.elapsed();
    running.stop().await;
    assert!(message.contains("4194304 bytes"), "{message}");
    // Give the server a moment to notice the hang-up, then see how much it got rid of:
    // the cap plus what the sockets' buffers hold, not the gigabyte.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let streamed = lync.streamed();
    eprintln!(
        "cap 4 MiB: the server wrote {:.1} MiB before the client hung up; refused after {took:?}",
        streamed as f64 / MIB as f64
    );
    assert!(streamed < 64 * MIB, "the client read {streamed} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announced_huge_body_is_refused_before_reading_and_the_cap_is_configurable() {
    let lync = Hostile::start(|_| Answer::Stream {
        total: 256 * 1024,
        announce: Some(1 << 40),
    })
    .await;
    let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
    let running = start_sink_config(config(&url, "max_response_bytes = 131072\n"));
    let message = wait_health_text(&running, "response body larger than 131072 bytes").await;
    running.stop().await;
    assert!(message.contains("max_response_bytes"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_token_lifetime_neither_crashes_nor_storms_the_token_endpoint() {
    for expires_in in [u64::MAX, 0] {
        let token = json!({"access_token": "t", "token_type": "Bearer", "expires_in": expires_in});
        let lync = Hostile::start(move |r| {
            sign_in(r, &token).unwrap_or_else(|| Answer::json(404, json!({"code": "NotFound"})))
        })
        .await;
        let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
        let running = start_sink_config(config(&url, ""));
        let start = std::time::Instant::now();
        while running.sink.health().state != HealthState::OK {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "expires_in {expires_in}: {}",
                running.sink.health()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // 1.5 s of the event channel (a request every 100 ms): a token of `expires_in = 0`
        // is taken as 1 s, not renewed before each request.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running.stop().await;
        let requests = lync.requests();
        let grants = requests.iter().filter(|r| r.path == "/token").count();
        let polls = requests
            .iter()
            .filter(|r| r.path.starts_with("/events"))
            .count();
        assert!(polls >= 5, "expires_in {expires_in}: {polls} polls");
        assert!(
            grants <= 3,
            "expires_in {expires_in}: {grants} token requests for {polls} polls"
        );
    }
}
