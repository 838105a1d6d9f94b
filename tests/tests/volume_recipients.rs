//! Recipients named in an alert, under hostile volume, through the real webhook and host: the
//! 960 KB post that named 60,000 arbitrary strings (and so made 60,000 IMs and a 7.8 MB record
//! rewritten every round) is refused with its reason, as are names that are not SIP URIs; an
//! alert naming as many as `max_recipients_per_alert` allows reaches each of them once.
//!
//! Needs the built workspace: `cargo build -p alertbridge -p alertbridge-webhook -p
//! alertbridge-test-sink` (or `cargo build --workspace`).

use std::{collections::BTreeSet, fs, path::Path, time::Duration};

use alertbridge_testbed::harness::{Host, free_port, get, request, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "volume-token-51d0";
const LONG: Duration = Duration::from_secs(60);

/// A host with the webhook `hook`, the test sink, and one route that honours recipients named
/// in the alert; `host_extra` goes into `[host]`.
fn start(dir: &Path, host_extra: &str) -> (Host, String) {
    let (admin, hook) = (free_port(), free_port());
    let d = dir.display();
    let tokens = dir.join("webhook.tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens");
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
{host_extra}

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
allow_alert_recipients = true
"#,
        tokens = tokens.display(),
    );
    let host = Host::start(dir, admin, &config);
    let url = format!("http://127.0.0.1:{hook}");
    wait_until("the webhook to answer", LONG, || {
        get(&format!("{url}/healthz")).is_some_and(|b| b.trim() == "ok")
    });
    (host, format!("{url}/api/v1/alerts"))
}

/// POSTs a JSON body with the token: status and parsed answer.
fn post(url: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = request(
        "POST",
        url,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .unwrap_or_else(|| panic!("no answer from {url}"));
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn records(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn metrics(host: &Host) -> String {
    get(&format!("{}/metrics", host.admin)).unwrap_or_default()
}

#[test]
fn the_960_kb_post_naming_60000_strings_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (host, url) = start(dir.path(), "");
    // What the attack sent: one alert naming 60,000 arbitrary strings as users.
    let users: Vec<String> = (0..60_000).map(|i| format!("user{i:09}")).collect();
    let body = json!({"subject": "flood", "recipients": {"users": users}}).to_string();
    assert!(
        (900_000..1_000_000).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    let (status, answer) = post(&url, &body);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "alert 0: the host refused it: the alert names 60000 recipients (users and groups); \
         the limit is 100 (max_recipients_per_alert)",
        "{answer}"
    );
    assert_eq!(answer["refused"], json!([0]), "{answer}");

    // Within the count, every name must still be a SIP URI.
    let mut users: Vec<String> = (0..50).map(|i| format!("sip:u{i}@contoso.com")).collect();
    users[42] = "carol; rm -rf /".into();
    let body = json!({"subject": "odd names", "recipients": {"users": users}}).to_string();
    let (status, answer) = post(&url, &body);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"],
        "alert 0: the host refused it: recipients.users[42] \"carol; rm -rf /\" is not a SIP \
         URI like sip:user@domain: it does not start with sip:",
        "{answer}"
    );
    let m = metrics(&host);
    for reason in ["too_large", "invalid"] {
        assert!(
            m.contains(&format!(
                "alertbridge_alerts_rejected_total{{source=\"hook\",reason=\"{reason}\"}} 1"
            )),
            "{m}"
        );
    }

    // An alert naming as many as allowed reaches each once (the group's two as well).
    let named: Vec<String> = (0..100)
        .map(|i| format!("sip:oncall{i}@contoso.com"))
        .collect();
    let body = json!({"subject": "wide", "recipients": {"users": named}}).to_string();
    let (status, answer) = post(&url, &body);
    assert_eq!(status, 202, "{answer}");
    let id = answer["ids"][0].as_u64().expect("an id");
    wait_until("the wide alert to finish", LONG, || {
        host.api(&format!("/api/v1/alerts/{id}"))["state"] == "finished"
    });
    let got: Vec<String> = records(dir.path())
        .iter()
        .map(|r| r["user"].as_str().unwrap_or("").to_owned())
        .collect();
    let want: BTreeSet<String> = named
        .iter()
        .cloned()
        .chain(["sip:alice@contoso.com".into(), "sip:bob@contoso.com".into()])
        .collect();
    assert_eq!(got.len(), 102, "each recipient once: {got:?}");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    assert!(
        records(dir.path()).iter().all(|r| r["subject"] == "wide"),
        "nothing of the refused alerts went out"
    );
}

#[test]
fn named_recipients_count_against_the_size_limit_and_the_cap_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let (host, url) = start(
        dir.path(),
        "max_recipients_per_alert = 1000\nmax_body_bytes = 4096",
    );
    // 300 valid names: under the count, but 8 KB of names against a 4 KB limit.
    let users: Vec<String> = (0..300)
        .map(|i| format!("sip:member{i:05}@contoso.com"))
        .collect();
    let bytes: usize = users.iter().map(String::len).sum();
    let body = json!({"subject": "big list", "recipients": {"users": users}}).to_string();
    let (status, answer) = post(&url, &body);
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or("");
    assert!(
        error.contains(&format!(
            "labels, attributes and named recipients are {bytes} bytes, the limit is 4096"
        )),
        "{answer}"
    );
    let groups: Vec<String> = (0..1001).map(|i| format!("g{i}")).collect();
    let body = json!({"subject": "many groups", "recipients": {"groups": groups}}).to_string();
    let (status, answer) = post(&url, &body);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("names 1001 recipients (users and groups); the limit is 1000"),
        "{answer}"
    );
    assert!(host.alerts(10).is_empty(), "nothing was queued");
}
