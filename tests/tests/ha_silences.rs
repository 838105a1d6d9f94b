//! Silences across hosts: two real hosts on one PostgreSQL (`[queue] backend = "postgres"`).
//! A silence created through host a's admin API silences an alert posted to host b; expiring
//! it on a lets b's next alert through; with the database away the admin API answers 503
//! `silences_unavailable` naming why, the silences in force stay in force on both hosts, and
//! once it is back they are all still there (the refused one never stored).

use alertbridge_testbed::{
    ha::{self, LONG, Node, Options},
    harness::{request, wait_until},
    postgres::{self, Database},
    servers,
};
use serde_json::{Value, json};

/// An admin API call on `node` (loopback, no token set): status and JSON body.
fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut headers = Vec::new();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let url = format!("{}{path}", node.host.admin);
    let (status, answer) = request(method, &url, &headers, &text)
        .unwrap_or_else(|| panic!("{method} {url}: no answer; {}", node.log_tail(20)));
    let v = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
    (status, v)
}

/// A silence of the alerts whose `key` label starts with `prefix`, for an hour.
fn silence_body(prefix: &str) -> Value {
    json!({"matchers": {"labels_regex": {"key": format!("^{prefix}")}}, "duration": "1h",
           "author": "alice", "comment": "maintenance"})
}

fn create(node: &Node, prefix: &str) -> u64 {
    let (status, v) = call(node, "POST", "/api/v1/silences", Some(silence_body(prefix)));
    assert_eq!(status, 201, "{}: {v}", node.name);
    v["id"].as_u64().expect("an id")
}

/// The state `node` shows for silence `id` ("missing" if it lists none).
fn state_on(node: &Node, id: u64) -> String {
    let (status, v) = call(node, "GET", &format!("/api/v1/silences/{id}"), None);
    if status == 404 {
        return "missing".into();
    }
    v["state"].as_str().unwrap_or("?").to_owned()
}

fn wait_state(node: &Node, id: u64, state: &str) {
    wait_until(
        &format!("{} to show silence {id} {state}", node.name),
        LONG,
        || state_on(node, id) == state,
    );
}

/// Waits until alert `id` is finished on `node`: (outcome, silence id) of its one recipient.
fn settled(node: &Node, id: u64) -> (String, Option<u64>) {
    let mut out = (String::new(), None);
    wait_until(
        &format!("alert {id} settled on {}", node.name),
        LONG,
        || {
            let a = node.host.api(&format!("/api/v1/alerts/{id}"));
            let r = &a["recipients"][0];
            out = (
                r["outcome"].as_str().unwrap_or("").to_owned(),
                r["silence"].as_u64(),
            );
            a["state"] == "finished"
        },
    );
    out
}

/// Posts alert `key` to `node` until it answers 202 (a sender retries a 503: the queue finds
/// the database back at its next commit); its id.
fn post_until_taken(node: &Node, key: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::new();
    let mut id = None;
    wait_until(&format!("a 202 for {key} from {}", node.name), LONG, || {
        let answer = rt.block_on(ha::post(
            &client,
            &node.hook_url(),
            ha::alert_body(key, ha::OPS),
        ));
        match answer {
            Ok(a) if a.status == 202 => {
                id = a.body["ids"][0].as_u64();
                true
            }
            Ok(a) if a.status == 503 => false,
            other => panic!("{key}: {other:?}"),
        }
    });
    id.expect("a 202 carries the id")
}

#[test]
fn a_silence_made_on_one_host_silences_alerts_on_the_other() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_silences");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let o = Options {
        lease_ms: 2000,
        ..Options::default()
    };
    let a = Node::start(dir.path(), "a", &db.url, &o);
    let b = Node::start(dir.path(), "b", &db.url, &o);

    // Made on a, in force on b: b's alert it matches is silenced, another is delivered.
    let quiet = create(&a, "quiet-");
    wait_state(&b, quiet, "active");
    let hushed = ha::post_now(&b.hook_url(), "quiet-1", ha::OPS);
    assert_eq!(settled(&b, hushed), ("silenced".into(), Some(quiet)));
    let loud = ha::post_now(&b.hook_url(), "loud-1", ha::OPS);
    assert_eq!(settled(&b, loud), ("delivered".into(), None));

    // Expired on a: b sees it expired, and its next such alert goes through.
    let (status, v) = call(&a, "DELETE", &format!("/api/v1/silences/{quiet}"), None);
    assert_eq!(status, 200, "{v}");
    wait_state(&b, quiet, "expired");
    let after = ha::post_now(&b.hook_url(), "quiet-2", ha::OPS);
    assert_eq!(settled(&b, after), ("delivered".into(), None));

    // The database away: a clear 503 for a change, and what is in force stays in force.
    let night = create(&b, "night-");
    wait_state(&a, night, "active");
    let allow = |yes: bool| {
        let mut sql = format!("ALTER DATABASE {} ALLOW_CONNECTIONS {yes};", db.name);
        if !yes {
            sql.push_str(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}';",
                db.name
            ));
        }
        postgres::sql(&server, &sql).unwrap_or_else(|e| panic!("{e}"));
    };
    allow(false);
    let (status, v) = call(&a, "POST", "/api/v1/silences", Some(silence_body("never-")));
    assert_eq!(
        (status, v["code"].as_str()),
        (503, Some("silences_unavailable")),
        "{v}"
    );
    let why = v["error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("PostgreSQL"), "the answer says why: {v}");
    let (status, v) = call(&a, "DELETE", &format!("/api/v1/silences/{night}"), None);
    assert_eq!(status, 503, "{v}");
    // Each host's refresh (every 2 s) fails meanwhile; the silence stays listed and active.
    for node in [&a, &b] {
        wait_until(&format!("{}: a refresh refused", node.name), LONG, || {
            node.host
                .log()
                .contains("Could not re-read the shared silences")
        });
        assert_eq!(state_on(node, night), "active", "{}", node.name);
    }
    allow(true);

    // Back: the silence is still in force on both, the refused one was never stored, and
    // changes work again.
    let hushed = post_until_taken(&b, "night-1");
    assert_eq!(settled(&b, hushed), ("silenced".into(), Some(night)));
    let (_, listed) = call(&a, "GET", "/api/v1/silences", None);
    let ids: Vec<u64> = listed["silences"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_u64())
        .collect();
    assert_eq!(ids, [night, quiet], "newest first, nothing else: {listed}");
    let (status, v) = call(&a, "DELETE", &format!("/api/v1/silences/{night}"), None);
    assert_eq!(status, 200, "{v}");
    wait_state(&b, night, "expired");
    eprintln!(
        "ha silences ({:.1?}): made on a, silenced on b; expired on a, delivered on b; \
         database away: 503 '{why}', silence kept in force",
        started.elapsed()
    );
}
