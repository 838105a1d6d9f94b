//! The `webhook` source inside the real host, through real sockets: JSON, XML and Alertmanager
//! posts delivered to the test sink, 401/400/503 as the host makes them, a real Prometheus
//! Alertmanager as the sender, and a crash test of 10,000 posted alerts under repeated SIGKILL.
//!
//! Needs `cargo build --workspace` first (the host loads the real plugin files) and, for the
//! Alertmanager test, `prometheus-alertmanager` installed: that test starts its own instance on a
//! free port with `scripts/alertmanager.sh` (so it never meets the one `scripts/test` starts).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alertbridge_testbed::{
    alertmanager::Alertmanager,
    harness::{Host, free_port, get, wait_until},
    servers,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(60);
const TOKEN: &str = "e2e-token-7f3c";

/// A host config: the `webhook` source `hook` on `hook_port` with the tokens in `tokens_file`,
/// the test sink `sink`, and one route sending everything to `users` through it.
struct Setup<'a> {
    dir: &'a Path,
    admin: u16,
    hook_port: u16,
    tokens_file: PathBuf,
    users: &'a [&'a str],
    host_extra: &'a str,
    hook_extra: &'a str,
    sink_extra: &'a str,
}

impl<'a> Setup<'a> {
    /// Defaults: fresh ports, a tokens file holding [`TOKEN`], Alice and Bob as recipients.
    fn new(dir: &'a Path) -> Self {
        let tokens_file = dir.join("webhook.tokens");
        fs::write(&tokens_file, format!("# e2e\n{TOKEN}\n")).expect("write tokens");
        Self {
            dir,
            admin: free_port(),
            hook_port: free_port(),
            tokens_file,
            users: &["sip:alice@contoso.com", "sip:bob@contoso.com"],
            host_extra: "",
            hook_extra: "",
            sink_extra: "",
        }
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        let users: Vec<String> = self.users.iter().map(|u| format!("{u:?}")).collect();
        format!(
            r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
{host_extra}

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 60000

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"
{hook_extra}

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
redeliveries_file = "{d}/redeliveries.txt"
{sink_extra}

[groups]
ops = [{users}]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
            admin = self.admin,
            host_extra = self.host_extra,
            hook = self.hook_port,
            tokens = self.tokens_file.display(),
            hook_extra = self.hook_extra,
            sink_extra = self.sink_extra,
            users = users.join(", "),
        )
    }

    /// Starts the host and waits until the webhook answers on its port.
    fn start(&self) -> Host {
        let host = Host::start(self.dir, self.admin, &self.config());
        wait_for_webhook(&host, self.hook_port);
        host
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.hook_port)
    }
}

fn wait_for_webhook(host: &Host, port: u16) {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let start = Instant::now();
    while get(&url).is_none_or(|b| b.trim() != "ok") {
        assert!(
            start.elapsed() < LONG,
            "the webhook did not answer on {url}; host log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answer of the webhook.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    www_authenticate: Option<String>,
    body: Value,
}

impl Answer {
    /// The host's id of the `i`-th alert of the body.
    fn id(&self, i: usize) -> u64 {
        self.body["ids"][i]
            .as_u64()
            .unwrap_or_else(|| panic!("no id at {i}: {self:?}"))
    }
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Result<Answer> {
    let mut request = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, retry_after, www_authenticate) = (
        response.status().as_u16(),
        header("retry-after"),
        header("www-authenticate"),
    );
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer {
        status,
        retry_after,
        www_authenticate,
        body,
    })
}

/// [`post`] from a synchronous test.
fn post_now(
    url: &str,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async { post(&reqwest::Client::new(), url, token, content_type, body).await })
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// The test sink's record: one JSON object per delivered recipient.
fn records(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record line {l:?}: {e}")))
        .collect()
}

/// The record lines of alert `id`, by user.
fn records_of(dir: &Path, id: u64) -> BTreeMap<String, Value> {
    records(dir)
        .into_iter()
        .filter(|r| r["alert_id"] == id)
        .map(|r| (r["user"].as_str().unwrap_or("").to_owned(), r))
        .collect()
}

/// Waits until alert `id` is finished in the admin API, then checks it reached every user.
fn assert_delivered(host: &Host, id: u64, users: &[&str]) -> Value {
    wait_until(&format!("alert {id} to finish"), LONG, || {
        host.api(&format!("/api/v1/alerts/{id}"))["state"] == "finished"
    });
    let a = host.api(&format!("/api/v1/alerts/{id}"));
    assert_eq!(a["source"], "hook", "{a}");
    let outcomes: Vec<String> = a["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{}={}",
                r["user"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    let expected: Vec<String> = users.iter().map(|u| format!("{u}=delivered")).collect();
    assert_eq!(outcomes, expected, "{a}");
    a
}

/// Checks the sink recorded alert `id` once per user with this subject and body.
fn assert_recorded(dir: &Path, id: u64, users: &[&str], subject: &str, body: &str) -> Value {
    let got = records_of(dir, id);
    let (have, want): (BTreeSet<&str>, BTreeSet<&str>) = (
        got.keys().map(String::as_str).collect(),
        users.iter().copied().collect(),
    );
    assert_eq!(have, want, "{got:?}");
    for r in got.values() {
        assert_eq!(
            (r["subject"].as_str(), r["body"].as_str()),
            (Some(subject), Some(body)),
            "{r}"
        );
        assert_eq!(r["source"], "hook");
    }
    got.into_values().next().unwrap_or_default()
}

#[test]
fn json_xml_and_alertmanager_posts_reach_the_sink_and_refusals_come_through_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::new(dir.path());
    let host = s.start();
    let users = s.users;
    let alerts = s.url("/api/v1/alerts");

    let json_body = json!({"subject": "Disk full on db01 — Ölstand", "body": "/var is at 98 % — prüfen ✓ 日本", "severity": "critical", "labels": {"host": "db01", "case": "json"}, "dedup_key": "e2e-json"});
    let a = post_now(
        &alerts,
        Some(TOKEN),
        "application/json",
        json_body.to_string(),
    );
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(
        (a.body["duplicates"].clone(), a.body["ignored"].clone()),
        (json!([]), json!([])),
        "{a:?}"
    );
    let json_id = a.id(0);

    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:alertbridge:alert:1">
  <subject>Queue stuck on mq02 — Größe &amp; Tiefe</subject>
  <body>depth 10 000 ≥ limit</body>
  <severity>high</severity>
  <labels><label name="case">xml</label></labels>
  <dedup-key>e2e-xml</dedup-key>
</alert>"#;
    let a = post_now(&alerts, Some(TOKEN), "application/xml; charset=utf-8", xml);
    assert_eq!(a.status, 202, "{a:?}");
    let xml_id = a.id(0);

    let sample = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/webhook/tests/fixtures/alertmanager-0.25-sample.json"),
    )
    .expect("fixture");
    let a = post_now(
        &s.url("/api/v1/alertmanager"),
        Some(TOKEN),
        "application/json",
        sample,
    );
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(
        (a.body["ids"][1].clone(), a.body["ignored"].clone()),
        (Value::Null, json!([1])),
        "the resolved alert is ignored by default: {a:?}"
    );
    let am_id = a.id(0);

    let r = assert_delivered(&host, json_id, users);
    assert_eq!(
        (
            r["alert"]["dedup_key"].as_str(),
            r["alert"]["severity"].as_str()
        ),
        (Some("e2e-json"), Some("critical")),
        "{r}"
    );
    assert_delivered(&host, xml_id, users);
    assert_delivered(&host, am_id, users);
    let listed: BTreeSet<u64> = host
        .alerts(100)
        .iter()
        .filter_map(|a| a["id"].as_u64())
        .collect();
    assert!(
        [json_id, xml_id, am_id]
            .iter()
            .all(|id| listed.contains(id)),
        "{listed:?}"
    );

    let r = assert_recorded(
        dir.path(),
        json_id,
        users,
        "Disk full on db01 — Ölstand",
        "/var is at 98 % — prüfen ✓ 日本",
    );
    assert_eq!(
        (r["severity"].as_str(), r["labels"]["host"].as_str()),
        (Some("critical"), Some("db01"))
    );
    let r = assert_recorded(
        dir.path(),
        xml_id,
        users,
        "Queue stuck on mq02 — Größe & Tiefe",
        "depth 10 000 ≥ limit",
    );
    assert_eq!(
        (r["severity"].as_str(), r["labels"]["case"].as_str()),
        (Some("high"), Some("xml"))
    );
    let r = assert_recorded(
        dir.path(),
        am_id,
        users,
        "Disk /var/lib/postgresql is 97% full",
        "Only 3% free space left on db-01 — Ölstand prüfen",
    );
    assert_eq!(
        (
            r["severity"].as_str(),
            r["labels"]["alertname"].as_str(),
            r["labels"]["instance"].as_str()
        ),
        (Some("critical"), Some("DiskFull"), Some("db-01:9100"))
    );

    // The same JSON again: the host's dedup answers with the first id and sends nothing.
    let a = post_now(
        &alerts,
        Some(TOKEN),
        "application/json",
        json_body.to_string(),
    );
    assert_eq!(
        (
            a.status,
            a.body["ids"].clone(),
            a.body["duplicates"].clone()
        ),
        (202, json!([json_id]), json!([json_id])),
        "{a:?}"
    );

    // 401: no token, a wrong one.
    for token in [None, Some("not-the-token")] {
        let a = post_now(&alerts, token, "application/json", json_body.to_string());
        assert_eq!(
            (a.status, a.www_authenticate.as_deref()),
            (401, Some("Bearer")),
            "{a:?}"
        );
    }
    // 400 from the parser, with field and position.
    let a = post_now(
        &alerts,
        Some(TOKEN),
        "application/json",
        "{\"subject\": \"x\",\n \"severity\": \"urgent\"}",
    );
    assert_eq!(a.status, 400, "{a:?}");
    let e = a.body["error"].as_str().unwrap_or("");
    assert!(
        e.starts_with("`severity` at line 2 column") && e.contains("unknown severity \"urgent\""),
        "{e}"
    );
    // 400 from the host: a subject over its max_subject_bytes (1024) is a permanent refusal.
    let long = "x".repeat(2000);
    let a = post_now(
        &alerts,
        Some(TOKEN),
        "application/json",
        json!({"subject": long}).to_string(),
    );
    assert_eq!(
        (a.status, a.body["refused"].clone()),
        (400, json!([0])),
        "{a:?}"
    );
    assert_eq!(
        a.body["error"], "alert 0: the host refused it: subject is 2000 bytes, the limit is 1024",
        "{a:?}"
    );

    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        records(dir.path()).len(),
        3 * users.len(),
        "nothing more reached the sink"
    );
}

#[test]
fn a_full_host_queue_answers_503_with_retry_after_and_the_resend_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::new(dir.path());
    (s.host_extra, s.sink_extra, s.users) = (
        "max_queue_depth = 1",
        "delay_ms = 2000",
        &["sip:alice@contoso.com"],
    );
    let host = s.start();
    let alerts = s.url("/api/v1/alerts");

    let first = post_now(
        &alerts,
        Some(TOKEN),
        "application/json",
        r#"{"subject":"first","dedup_key":"q-1"}"#,
    );
    assert_eq!(first.status, 202, "{first:?}");
    let second = r#"{"subject":"second","dedup_key":"q-2"}"#;
    let a = post_now(&alerts, Some(TOKEN), "application/json", second);
    assert_eq!(
        (a.status, a.retry_after.as_deref()),
        (503, Some("1")),
        "{a:?}"
    );
    assert_eq!(
        (a.body["ids"].clone(), a.body["refused"].clone()),
        (json!([null]), json!([0])),
        "{a:?}"
    );
    assert_eq!(
        a.body["error"], "alert 0: the host refused it: queue full (1 alerts waiting)",
        "{a:?}"
    );
    let metrics = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    assert!(
        metrics
            .contains("alertbridge_alerts_rejected_total{source=\"hook\",reason=\"queue_full\"} 1"),
        "{metrics}"
    );

    // Once the first is delivered the queue has room again, and the resend is taken.
    assert_delivered(&host, first.id(0), s.users);
    let a = post_now(&alerts, Some(TOKEN), "application/json", second);
    assert_eq!(
        (a.status, a.body["duplicates"].clone()),
        (202, json!([])),
        "{a:?}"
    );
    assert_delivered(&host, a.id(0), s.users);
    assert_eq!(
        records(dir.path())
            .iter()
            .map(|r| r["subject"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>(),
        ["first", "second"]
    );
}

/// `date -u` as RFC 3339, as Alertmanager's API wants it.
fn rfc3339_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn alerts_posted_to_a_real_alertmanager_reach_the_sink_through_the_host() {
    if servers::alertmanager_program().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::new(dir.path());
    let am = Alertmanager::start(
        &dir.path().join("am"),
        &s.url("/api/v1/alertmanager"),
        "am-e2e-token-91b2",
    );
    (s.tokens_file, s.hook_extra) = (
        dir.path().join("am/webhook.token"),
        "alertmanager = { resolved = \"forward\" }",
    );
    let host = s.start();

    // A name of its own, so that nothing else in the record can match.
    let name = format!("AlertbridgeHostE2E{}", std::process::id());
    let starts = rfc3339_now();
    let labels =
        json!({"alertname": name, "instance": "db-01:9100", "job": "node", "severity": "critical"});
    let annotations =
        json!({"summary": "Disk /var is 97% full", "description": "Only 3% left — Ölstand prüfen"});
    am.post_alerts(&json!([
        {"labels": labels, "annotations": annotations, "startsAt": starts, "generatorURL": "http://127.0.0.1:9090/graph"},
        {"labels": {"alertname": name, "instance": "web-02:9100", "severity": "warning"}, "startsAt": starts},
    ]));
    let arrival = |what: &str, subject: &str| -> u64 {
        let mut id = None;
        wait_until(what, LONG, || {
            id = records(dir.path())
                .iter()
                .find(|r| r["labels"]["alertname"] == name.as_str() && r["subject"] == subject)
                .and_then(|r| r["alert_id"].as_u64());
            id.is_some()
        });
        id.unwrap_or_default()
    };

    let disk = arrival("the first alert in the sink", "Disk /var is 97% full");
    let r = assert_recorded(
        dir.path(),
        disk,
        s.users,
        "Disk /var is 97% full",
        "Only 3% left — Ölstand prüfen",
    );
    assert_eq!(
        (
            r["severity"].as_str(),
            r["labels"]["job"].as_str(),
            r["labels"]["instance"].as_str()
        ),
        (Some("critical"), Some("node"), Some("db-01:9100")),
        "{r}"
    );
    let a = assert_delivered(&host, disk, s.users);
    let key = a["alert"]["dedup_key"].as_str().unwrap_or("");
    assert!(
        key.starts_with("am:") && key.ends_with(&format!(":{starts}:firing")),
        "{a}"
    );
    let web = arrival("the second alert in the sink", &name);
    let r = assert_recorded(dir.path(), web, s.users, &name, "");
    assert_eq!(r["severity"], "normal", "warning maps to normal: {r}");
    assert_delivered(&host, web, s.users);

    // Resolve the first as Prometheus does (same labels, an end): the notice arrives too.
    am.post_alerts(&json!([{"labels": labels, "annotations": annotations, "startsAt": starts, "endsAt": rfc3339_now()}]));
    let resolved = arrival(
        "the resolve notice in the sink",
        "[RESOLVED] Disk /var is 97% full",
    );
    assert_eq!(
        records_of(dir.path(), resolved)
            .values()
            .next()
            .map(|r| r["severity"].clone()),
        Some(json!("info"))
    );
    let a = assert_delivered(&host, resolved, s.users);
    assert_eq!(
        a["alert"]["dedup_key"].as_str(),
        Some(key.replace(":firing", ":resolved").as_str()),
        "{a}"
    );
}

const CRASH_ALERTS: usize = 10_000;
const CRASH_CONNECTIONS: usize = 8;
const KILLS: usize = 6;

/// What the posting clients saw besides 202s.
#[derive(Default)]
struct Trouble {
    connection_errors: AtomicUsize,
    unavailable: AtomicUsize,
    /// 202s naming an alert the host already had: a resend after an answer lost to a kill.
    duplicates: AtomicUsize,
}

/// One client with one keep-alive connection: takes the next unposted sequence number and posts
/// its alert until a 202, resending after connection errors and 503s (its dedup key makes a
/// resend safe). Returns `(dedup key, id)` for every 202.
async fn crash_poster(
    url: String,
    next: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    trouble: Arc<Trouble>,
) -> Vec<(String, u64)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut receipts = Vec::new();
    loop {
        let seq = next.fetch_add(1, Ordering::SeqCst);
        if seq >= CRASH_ALERTS {
            return receipts;
        }
        let key = format!("crash-{seq:05}");
        let body = json!({"subject": format!("crash alert {seq}"), "labels": {"key": key}, "dedup_key": key}).to_string();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            assert!(Instant::now() < deadline, "{key}: no 202 within 180 s");
            match post(&client, &url, Some(TOKEN), "application/json", body.clone()).await {
                Ok(a) if a.status == 202 => {
                    if a.body["duplicates"]
                        .as_array()
                        .is_some_and(|d| !d.is_empty())
                    {
                        trouble.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    receipts.push((key, a.id(0)));
                    accepted.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Ok(a) if a.status == 503 => {
                    trouble.unavailable.fetch_add(1, Ordering::Relaxed);
                    let secs = a
                        .retry_after
                        .as_deref()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(1);
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                }
                Ok(a) => panic!("{key}: unexpected answer {a:?}"),
                Err(_) => {
                    trouble.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[test]
fn sigkill_while_posting_loses_no_accepted_alert_and_delivers_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Setup::new(dir.path());
    (s.host_extra, s.users) = ("history_max_alerts = 20000", &["sip:ops@contoso.com"]);
    let mut host = s.start();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (next, accepted, trouble) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Trouble::default()),
    );
    let posters: Vec<_> = (0..CRASH_CONNECTIONS)
        .map(|_| {
            rt.spawn(crash_poster(
                s.url("/api/v1/alerts"),
                next.clone(),
                accepted.clone(),
                trouble.clone(),
            ))
        })
        .collect();

    // Kill at random points of the run, each after a random number of 202s.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| rand::random_range(CRASH_ALERTS / 20..CRASH_ALERTS * 9 / 10))
        .collect();
    points.sort_unstable();
    let mut kills_while_posting = 0;
    for point in points {
        wait_until(
            &format!("{point} alerts accepted"),
            Duration::from_secs(300),
            || accepted.load(Ordering::SeqCst) >= point || posters.iter().all(|p| p.is_finished()),
        );
        std::thread::sleep(Duration::from_millis(rand::random_range(0..50)));
        if accepted.load(Ordering::SeqCst) < CRASH_ALERTS {
            kills_while_posting += 1;
        }
        host.kill9();
        std::thread::sleep(Duration::from_millis(rand::random_range(0..300)));
        host.restart();
    }
    let mut receipted: BTreeMap<String, u64> = BTreeMap::new();
    for poster in posters {
        for (key, id) in rt.block_on(poster).expect("a poster failed") {
            assert!(
                receipted.insert(key.clone(), id).is_none(),
                "{key} got two 202s"
            );
        }
    }
    assert!(
        kills_while_posting >= 5,
        "only {kills_while_posting} of {KILLS} kills landed while alerts were being posted"
    );
    assert_eq!(receipted.len(), CRASH_ALERTS);
    let distinct_ids: BTreeSet<u64> = receipted.values().copied().collect();
    assert_eq!(
        distinct_ids.len(),
        CRASH_ALERTS,
        "two dedup keys answered with the same id"
    );
    wait_until("an empty queue", Duration::from_secs(300), || {
        host.api("/healthz")["queue_depth"] == 0
    });

    // Every 202'd alert in the record exactly once: by alert id and by its dedup key (label).
    let mut delivered_ids = BTreeSet::new();
    let mut delivered_keys = BTreeMap::new();
    for r in records(dir.path()) {
        let id = r["alert_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no alert_id in {r}"));
        assert!(delivered_ids.insert(id), "alert {id} delivered twice");
        let key = r["labels"]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("no key label in {r}"))
            .to_owned();
        assert!(
            delivered_keys.insert(key.clone(), id).is_none(),
            "{key} delivered twice (second time as alert {id})"
        );
    }
    for (key, id) in &receipted {
        if delivered_keys.get(key) != Some(id) {
            let view = get(&format!("{}/api/v1/alerts/{id}", host.admin)).unwrap_or_default();
            panic!(
                "{key} (alert {id}) got a 202 but was delivered as {:?}; the admin API has: {view}; data dir kept in {}",
                delivered_keys.get(key),
                dir.keep().display()
            );
        }
    }
    assert_eq!(
        delivered_keys.len(),
        receipted.len(),
        "alerts delivered that never got a 202"
    );
    // The host keeps the key with the alert: a sample through the admin API.
    for (key, id) in receipted.iter().step_by(97) {
        let a = host.api(&format!("/api/v1/alerts/{id}"));
        assert_eq!(
            (a["alert"]["dedup_key"].as_str(), a["state"].as_str()),
            (Some(key.as_str()), Some("finished")),
            "{a}"
        );
    }

    let redeliveries = fs::read_to_string(dir.path().join("redeliveries.txt"))
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "webhook crash test: {} alerts got a 202 over {CRASH_CONNECTIONS} connections, each delivered once; {KILLS} SIGKILLs \
         ({kills_while_posting} while posting); clients resent after {} connection errors and {} 503s, \
         {} resends answered with the id of the alert committed before the kill; {redeliveries} redeliveries of in-flight messages suppressed by the sink's idempotency key",
        receipted.len(),
        trouble.connection_errors.load(Ordering::Relaxed),
        trouble.unavailable.load(Ordering::Relaxed),
        trouble.duplicates.load(Ordering::Relaxed),
    );
    assert!(host.stop(), "SIGTERM stops cleanly; log:\n{}", host.log());
}
