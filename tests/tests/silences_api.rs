//! Silences end to end through the real host, the webhook source and the test sink: the API
//! (token, validation, 201/404/409), a matching alert recorded `silenced` with the silence's id
//! and not delivered while a non-matching one is, an alert already held when the silence is
//! made silenced at once, the silence kept across a restart, `DELETE` letting the next alert
//! through, a short silence expiring on its own, and the metrics.

use std::{fs, path::Path, time::Duration};

use alertbridge_testbed::harness::{Host, free_port, request, wait_until};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
const TOKEN: &str = "silence-admin-token-5c2e81";
const HOOK_TOKEN: &str = "silence-hook-token";

fn config(dir: &Path, admin: u16, webhook: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
admin_token_file = "admin.token"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
hold_recheck_ms = 60000
presence_cache_ms = 0

[[source]]
name = "monitoring"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{webhook}"
tokens_file = "{d}/tokens"

[[sink]]
name = "lync"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
presence = {{ "sip:carol@x" = "offline" }}

[groups]
ops = ["sip:alice@x", "sip:bob@x"]

[[route]]
name = "held"
match = {{ labels = {{ team = "carol" }} }}
users = ["sip:carol@x"]
sinks = ["lync"]
offline = {{ policy = "hold", max_wait_secs = 3600, then = "skip" }}

[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
"#
    )
}

struct Bed {
    _dir: tempfile::TempDir,
    host: Host,
    webhook: u16,
}

impl Bed {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("tokens"), format!("{HOOK_TOKEN}\n")).unwrap();
        fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        let (admin, webhook) = (free_port(), free_port());
        let host = Host::start(dir.path(), admin, &config(dir.path(), admin, webhook));
        Self {
            _dir: dir,
            host,
            webhook,
        }
    }

    /// An admin API call with the token: status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, answer) = request(
            method,
            &format!("{}{path}", self.host.admin),
            &headers,
            &text,
        )
        .unwrap_or_else(|| panic!("{method} {path}: no answer; log:\n{}", self.host.log()));
        let v = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
        (status, v)
    }

    fn silence(&self, body: Value) -> u64 {
        let (status, v) = self.call("POST", "/api/v1/silences", Some(body));
        assert_eq!(status, 201, "{v}");
        v["id"].as_u64().expect("an id")
    }

    /// Posts a JSON alert to the webhook; its id.
    fn alert(&self, subject: &str, labels: Value) -> u64 {
        let body = json!({"subject": subject, "severity": "high", "labels": labels});
        let (status, answer) = request(
            "POST",
            &format!("http://127.0.0.1:{}/api/v1/alerts", self.webhook),
            &[
                ("authorization", &format!("Bearer {HOOK_TOKEN}")),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        )
        .expect("the webhook answers");
        assert_eq!(status, 202, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        v["ids"][0]
            .as_u64()
            .or_else(|| v["id"].as_u64())
            .unwrap_or_else(|| panic!("no id in {answer}"))
    }

    /// Waits until every recipient of alert `id` has a final outcome; the recipients.
    fn settled(&self, id: u64) -> Vec<Value> {
        let mut out = Vec::new();
        wait_until(&format!("alert {id} settled"), LONG, || {
            let (_, a) = self.call("GET", &format!("/api/v1/alerts/{id}"), None);
            out = a["recipients"].as_array().cloned().unwrap_or_default();
            a["state"] == "finished"
        });
        out
    }

    fn delivered(&self, subject: &str) -> bool {
        fs::read_to_string(self.host.dir.join("delivered.jsonl"))
            .unwrap_or_default()
            .contains(subject)
    }

    fn metric(&self, line_start: &str) -> f64 {
        let text = alertbridge_testbed::harness::get(&format!("{}/metrics", self.host.admin))
            .expect("metrics");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

fn outcomes(recipients: &[Value]) -> Vec<(String, String, Option<u64>)> {
    recipients
        .iter()
        .map(|r| {
            (
                r["user"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
                r["silence"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn silences_keep_matching_alerts_from_recipients_until_they_end() {
    let mut bed = Bed::start();
    let db = json!({"host": "db01", "alertname": "DiskFull"});

    // Changes and listings need the token; bad requests are refused with the field.
    let (status, body) = request(
        "POST",
        &format!("{}/api/v1/silences", bed.host.admin),
        &[("content-type", "application/json")],
        r#"{"matchers": {"labels": {"host": "db01"}}, "duration": "1h", "author": "a", "comment": "c"}"#,
    )
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, _) = request(
        "GET",
        &format!("{}/api/v1/silences", bed.host.admin),
        &[],
        "",
    )
    .unwrap();
    assert_eq!(status, 401);
    for (body, code, field) in [
        (
            json!({"matchers": {}, "duration": "1h", "author": "a", "comment": "c"}),
            "invalid_silence",
            "matchers",
        ),
        (
            json!({"matchers": {"subject": "("}, "duration": "1h", "author": "a", "comment": "c"}),
            "invalid_silence",
            "matchers.subject",
        ),
        (
            json!({"matchers": {"labels": {"host": "db01"}}, "ends_at": "2001-01-01T00:00:00Z", "author": "a", "comment": "c"}),
            "invalid_silence",
            "ends_at",
        ),
        (
            json!({"matchers": {"labels": {"host": "db01"}}, "duration": "1h", "author": "", "comment": "c"}),
            "invalid_silence",
            "author",
        ),
    ] {
        let (status, v) = bed.call("POST", "/api/v1/silences", Some(body));
        assert_eq!(
            (status, v["code"].as_str(), v["field"].as_str()),
            (400, Some(code), Some(field)),
            "{v}"
        );
    }
    let (status, v) = bed.call(
        "POST",
        "/api/v1/silences",
        Some(json!({"matchers": {"lables": {}}, "duration": "1h", "author": "a", "comment": "c"})),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (422, Some("bad_request")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("lables"), "{v}");
    let (status, v) = bed.call("GET", "/api/v1/silences/77", None);
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")));

    // An alert already held (carol is offline, hold up to an hour) before the silence exists.
    let held = bed.alert(
        "Carol's batch job late",
        json!({"team": "carol", "host": "db01"}),
    );
    wait_until("carol held", LONG, || {
        let (_, a) = bed.call("GET", &format!("/api/v1/alerts/{held}"), None);
        a["recipients"][0]["outcome"] == "held"
    });

    // The silence.
    let id = bed.silence(json!({
        "matchers": {"labels": {"host": "db01"}, "severity": ">=high"},
        "duration": "1h", "author": "alice", "comment": "db01 maintenance"
    }));
    let (status, s) = bed.call("GET", &format!("/api/v1/silences/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(s["state"], "active");
    assert_eq!(s["match"], "severity >= high, host = db01");
    assert_eq!(s["author"], "alice");

    // The held alert is silenced at once (not at its next hold re-check, a minute away).
    let r = bed.settled(held);
    assert_eq!(
        outcomes(&r),
        [("sip:carol@x".into(), "silenced".into(), Some(id))]
    );
    assert!(
        r[0]["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("silence {id}"))
    );

    // A matching alert: silenced for each recipient, with the id; not delivered.
    let quiet = bed.alert("Disk full on db01", db.clone());
    let r = bed.settled(quiet);
    assert_eq!(
        outcomes(&r),
        [
            ("sip:alice@x".into(), "silenced".into(), Some(id)),
            ("sip:bob@x".into(), "silenced".into(), Some(id)),
        ]
    );
    // A non-matching one goes through.
    let loud = bed.alert("Disk full on web01", json!({"host": "web01"}));
    let r = bed.settled(loud);
    assert!(r.iter().all(|r| r["outcome"] == "delivered"), "{r:?}");
    assert!(bed.delivered("Disk full on web01"));
    assert!(!bed.delivered("Disk full on db01"));
    assert!(!bed.delivered("Carol's batch job"));
    assert_eq!(bed.metric("alertbridge_alerts_silenced_total "), 2.0);
    assert_eq!(
        bed.metric(r#"alertbridge_deliveries_total{sink="lync",outcome="silenced"}"#),
        3.0
    );

    // A restart keeps the silence, and it still works.
    assert!(bed.host.stop());
    bed.host.restart();
    let (_, list) = bed.call("GET", "/api/v1/silences", None);
    assert_eq!(list["silences"][0]["id"], id);
    assert_eq!(list["silences"][0]["state"], "active");
    let again = bed.alert("Disk full on db01 again", db.clone());
    let r = bed.settled(again);
    assert!(
        r.iter()
            .all(|r| r["outcome"] == "silenced" && r["silence"] == id),
        "{r:?}"
    );

    // DELETE expires it: the next matching alert is delivered; a second DELETE is refused.
    let (status, gone) = bed.call("DELETE", &format!("/api/v1/silences/{id}"), None);
    assert_eq!(
        (status, gone["state"].as_str()),
        (200, Some("expired")),
        "{gone}"
    );
    let (status, v) = bed.call("DELETE", &format!("/api/v1/silences/{id}"), None);
    assert_eq!((status, v["code"].as_str()), (409, Some("already_expired")));
    let after = bed.alert("Disk full on db01 after", db.clone());
    let r = bed.settled(after);
    assert!(r.iter().all(|r| r["outcome"] == "delivered"), "{r:?}");
    assert!(bed.delivered("Disk full on db01 after"));

    // A short silence expires on its own.
    let short = bed.silence(json!({
        "matchers": {"labels": {"alertname": "DiskFull"}},
        "duration": "2s", "author": "bob", "comment": "a quick one"
    }));
    let during = bed.alert("Disk full during", db.clone());
    assert!(bed.settled(during).iter().all(|r| r["silence"] == short));
    wait_until("the short silence to expire", LONG, || {
        bed.call("GET", &format!("/api/v1/silences/{short}"), None)
            .1["state"]
            == "expired"
    });
    let past = bed.alert("Disk full past", db);
    assert!(
        bed.settled(past)
            .iter()
            .all(|r| r["outcome"] == "delivered")
    );
    assert!(bed.delivered("Disk full past"));
    assert!(!bed.delivered("Disk full during"));
}
