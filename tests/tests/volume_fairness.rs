//! Fairness between sources under a flood, through real sockets and a real Dovecot: one
//! webhook post of 150 alerts takes no more than its source's share of the queue (`[[source]]
//! max_queued`; the places are reserved as the submits come, so the batch in flight cannot
//! overshoot), and a mail that lands during the flood is taken at once and delivered while the
//! flood's alerts still wait for the sink — it does not wait behind all of them.
//!
//! Before: one 150-alert post went past `max_queue_depth` (every submit of the batch was
//! checked before any was counted), the mailbox was refused as "queue full" until the flood
//! drained, and its alert then queued behind every flood delivery for the sink's slots.
//!
//! Needs Dovecot (`scripts/test` starts it; read: `ALERTBRIDGE_TEST_POP3_ADDR`,
//! `ALERTBRIDGE_TEST_MAILDIR_ROOT`) and the built workspace (`cargo build -p alertbridge -p
//! alertbridge-webhook -p alertbridge-pop3 -p alertbridge-test-sink`). The mailbox user
//! `tvolfair` is added to Dovecot's passwd-file at run time, as `pop3_host.rs` does.

use std::fs;

use alertbridge_testbed::{
    dovecot::{LONG, Mailbox, dovecot, records},
    harness::{Host, free_port, get, request, wait_until},
};
use serde_json::{Value, json};

const TOKEN: &str = "fair-token-0c2e";
const USER: &str = "tvolfair";

#[test]
fn a_flood_from_the_webhook_neither_overshoots_its_share_nor_makes_the_mailbox_wait() {
    let Some(env) = dovecot() else { return };
    let pop3 = env.addr.clone();
    let mailbox = Mailbox::create(&env, USER);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (admin, hook) = (free_port(), free_port());
    let tokens = dir.path().join("webhook.tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens");
    // The sink takes 400 ms a message, two at a time: 40 flood alerts keep it busy for 8 s.
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
max_queue_depth = 60

[delivery]
per_recipient_per_minute = 0
sink_concurrency = 2

[[source]]
name = "hook"
plugin = "webhook"
max_queued = 40
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{pop3}"
tls = "none"
username = "{USER}"
password = "{USER}pass"
state_dir = "{d}/pop3-state"
poll_interval_ms = 200
max_backoff_ms = 1000

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
delay_ms = 400

[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        tokens = tokens.display(),
    );
    let host = Host::start(dir.path(), admin, &config);
    wait_until("the webhook and the mailbox to be up", LONG, || {
        get(&format!("http://127.0.0.1:{hook}/healthz")).is_some() && {
            host.instance("mail")["state"] == "ok"
        }
    });

    // One post of 150 alerts, as the attack sent.
    let flood: Vec<Value> = (0..150)
        .map(|i| json!({"subject": format!("flood {i}")}))
        .collect();
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = request(
        "POST",
        &format!("http://127.0.0.1:{hook}/api/v1/alerts"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &Value::Array(flood).to_string(),
    )
    .expect("an answer to the flood");
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let taken = answer["ids"]
        .as_array()
        .map_or(0, |ids| ids.iter().filter(|id| id.is_u64()).count());
    assert_eq!(
        status, 503,
        "the rest is refused for back-pressure: {answer}"
    );
    assert!(
        taken <= 40,
        "the batch overshot the webhook's share of 40: {taken} taken"
    );
    assert!(
        taken >= 30,
        "the share was not available to the webhook: {taken} taken"
    );
    assert!(
        answer["error"].as_str().unwrap_or("").contains(
            "source `hook` has 40 alerts waiting, its share of the queue (max_queued 40)"
        ),
        "{answer}"
    );

    // A mail during the flood: taken at once, and delivered while the flood still waits.
    let mail = format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {USER}@example.test\r\n\
         Subject: mailbox during the flood\r\nMessage-ID: <fair-1@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nstill heard\r\n"
    );
    mailbox.deliver_as("fair-1.mail", &mail);
    wait_until("the mail's IM", LONG, || {
        records(dir.path())
            .iter()
            .any(|r| r["subject"] == "mailbox during the flood")
    });
    let flood_before = records(dir.path())
        .iter()
        .filter(|r| r["source"] == "hook")
        .count();
    eprintln!("flood alerts taken: {taken}; delivered before the mail's IM: {flood_before}");
    assert!(
        flood_before + 10 <= taken,
        "the mail waited behind the flood: {flood_before} of {taken} flood alerts went before it"
    );
    wait_until("the flood to drain", LONG, || {
        records(dir.path())
            .iter()
            .filter(|r| r["source"] == "hook")
            .count()
            == taken
    });
    // The sink writes its record before the host has the outcome: the places are given back
    // when the host has finished the alerts, which `/healthz` shows.
    wait_until("the host to finish the flood", LONG, || {
        host.api("/healthz")["queue_depth"] == 0
    });
    let metrics = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    assert!(
        !metrics.contains("alertbridge_alerts_rejected_total{source=\"mail\""),
        "the mailbox was refused: {metrics}"
    );

    // Finished alerts give their places back: the whole share is there again.
    let again: Vec<Value> = (0..40)
        .map(|i| json!({"subject": format!("after {i}")}))
        .collect();
    let (status, text) = request(
        "POST",
        &format!("http://127.0.0.1:{hook}/api/v1/alerts"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &Value::Array(again).to_string(),
    )
    .expect("an answer to the second post");
    assert_eq!(status, 202, "the share was not given back: {text}");
}
