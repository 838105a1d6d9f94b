//! Incidents across hosts: two real hosts on one PostgreSQL (`[queue] backend = "postgres"`),
//! each with a route that opens an incident under a two-level policy (Alice at once, Bob after
//! a few seconds). An incident opened on host a, which is then SIGKILLed, has its level 2 paged
//! once, by host b. An incident acknowledged through a's admin API shows acknowledged on b at
//! once, the same ack at b answers "not changed", and b's timer never pages its level 2.

use std::{fs, path::Path};

use alertbridge_testbed::{
    ha::{self, LONG, Node, Options},
    harness::{request, wait_until},
    postgres::Database,
    servers,
};
use serde_json::{Value, json};

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
/// Level 2's wait.
const BOB_AFTER_SECS: u64 = 4;

/// The escalation policy and its route, ahead of the harness's own route (first match wins).
fn options() -> Options {
    Options {
        lease_ms: 2000,
        sink_extra: format!(
            r#"
[[escalation]]
name = "oncall"
levels = [
  {{ users = ["{ALICE}"], after_secs = 0 }},
  {{ users = ["{BOB}"], after_secs = {BOB_AFTER_SECS} }},
]

[[route]]
name = "incidents"
match = {{ labels = {{ team = "esc" }} }}
escalation = "oncall"
sinks = ["sink"]
"#
        ),
        ..Options::default()
    }
}

/// An alert for the incident route with dedup key `key`.
fn incident_alert(key: &str) -> String {
    json!({
        "subject": format!("disk full {key}"),
        "labels": {"team": "esc", "key": key},
        "dedup_key": key,
    })
    .to_string()
}

fn post(node: &Node, key: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = rt
        .block_on(ha::post(
            &reqwest::Client::new(),
            &node.hook_url(),
            incident_alert(key),
        ))
        .unwrap_or_else(|e| panic!("POST to {}: {e}", node.name));
    assert_eq!(answer.status, 202, "{key} at {}: {answer:?}", node.name);
}

/// The pages of incident `n` the test sinks of `dirs` delivered to `user`.
fn pages(dirs: &[&Path], user: &str, n: u64) -> usize {
    let tag = format!("[#{n}]");
    dirs.iter()
        .map(|d| {
            fs::read_to_string(d.join("delivered.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| {
                    v["user"] == user && v["subject"].as_str().is_some_and(|s| s.starts_with(&tag))
                })
                .count()
        })
        .sum()
}

/// An admin API call on `node`: status and JSON body.
fn call(node: &Node, method: &str, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", node.host.admin);
    let (status, answer) = request(method, &url, &[], "")
        .unwrap_or_else(|| panic!("{method} {url}: no answer; {}", node.log_tail(20)));
    let v = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
    (status, v)
}

/// The one incident `node` lists with dedup key `key`: its number.
fn incident_of(node: &Node, key: &str) -> u64 {
    let mut id = None;
    wait_until(
        &format!("{}: an incident for {key}", node.name),
        LONG,
        || {
            let (_, v) = call(node, "GET", "/api/v1/incidents");
            id = v["incidents"].as_array().and_then(|l| {
                l.iter()
                    .find(|i| i["dedup_key"] == key)
                    .and_then(|i| i["id"].as_u64())
            });
            id.is_some()
        },
    );
    id.expect("an incident")
}

#[test]
fn a_level_due_on_a_killed_host_is_paged_once_by_the_other() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_incidents");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let o = options();
    let mut a = Node::start(dir.path(), "a", &db.url, &o);
    let b = Node::start(dir.path(), "b", &db.url, &o);
    let dirs = [a.dir.clone(), b.dir.clone()];
    let dirs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

    post(&a, "disk");
    let n = incident_of(&b, "disk");
    wait_until("Alice paged", LONG, || pages(&dirs, ALICE, n) == 1);
    a.kill9();
    // Level 2 falls due while a is dead: b pages it, once.
    wait_until("Bob paged by b", LONG, || pages(&dirs, BOB, n) >= 1);
    let (_, inc) = call(&b, "GET", &format!("/api/v1/incidents/{n}"));
    assert_eq!(inc["level"].as_u64(), Some(2), "{inc}");
    assert_eq!(inc["pages"].as_array().map(Vec::len), Some(2), "{inc}");
    assert_eq!((pages(&dirs, ALICE, n), pages(&dirs, BOB, n)), (1, 1));
    eprintln!(
        "ha incidents ({:.1?}): opened on a, a killed, level 2 paged once by b",
        started.elapsed()
    );
}

#[test]
fn an_ack_on_one_host_is_seen_and_kept_by_the_other() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_incidents_ack");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let o = options();
    let a = Node::start(dir.path(), "a", &db.url, &o);
    let b = Node::start(dir.path(), "b", &db.url, &o);
    let dirs = [a.dir.clone(), b.dir.clone()];
    let dirs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();

    post(&b, "cpu");
    let n = incident_of(&a, "cpu");
    wait_until("Alice paged", LONG, || pages(&dirs, ALICE, n) == 1);
    let (status, v) = call(&a, "POST", &format!("/api/v1/incidents/{n}/ack"));
    assert_eq!((status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    // b shows it at once, and the same ack there changes nothing.
    let (_, seen) = call(&b, "GET", &format!("/api/v1/incidents/{n}"));
    assert_eq!(seen["state"], "acknowledged", "{seen}");
    let (status, v) = call(&b, "POST", &format!("/api/v1/incidents/{n}/ack"));
    assert_eq!((status, v["changed"].as_bool()), (200, Some(false)), "{v}");
    // Past level 2's time, a second incident opened after the ack is paged at level 2 by
    // the hosts' timers (they run): the first one's level 2 never was.
    post(&a, "mem");
    let m = incident_of(&b, "mem");
    wait_until("the second incident's level 2", LONG, || {
        pages(&dirs, BOB, m) == 1
    });
    assert_eq!(
        pages(&dirs, BOB, n),
        0,
        "an acknowledged incident's level 2 was paged"
    );
    let (_, inc) = call(&b, "GET", &format!("/api/v1/incidents/{n}"));
    assert_eq!(inc["pages"].as_array().map(Vec::len), Some(1), "{inc}");
    eprintln!(
        "ha incidents ack ({:.1?}): acked on a, seen on b at once, b's ack unchanged, level 2 never paged",
        started.elapsed()
    );
}
