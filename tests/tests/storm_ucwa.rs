//! Alert storms become digests (issue 16 §1), end to end: 1,500 alerts posted to the real
//! `webhook` source within 5 s, for one Lync user behind the real `ucwa` sink and the UCWA
//! simulator, through the real host with the default per-recipient limit (30 a minute). The
//! user gets them all, summarized in at most 3 IMs, within a minute, and every alert's record
//! in the admin API says delivered and which digest carried it.
//!
//! Needs `scripts/testbed` first (the host binary and the plugin files).

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use alertbridge_testbed::{
    harness::{Host, free_port, get, request},
    ucwa_sim::{SimConfig, SimHandle, Simulator, UserSpec},
};
use serde_json::{Value, json};

const TOKEN: &str = "storm-token-5d1e";
const ALICE: &str = "sip:alice@contoso.com";
const ALERTS: usize = 1_500;
const PER_POST: usize = 100;
const POST_SPACING: Duration = Duration::from_millis(200);

fn config(dir: &Path, admin: u16, hook: u16, discover: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{d}/webhook.tokens"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
request_timeout_secs = 10

[[route]]
name = "storm"
users = ["{ALICE}"]
sinks = ["lync"]
offline = {{ policy = "skip" }}
group_by = ["alertname", "cluster"]
group_wait_ms = 2000
group_interval_ms = 10000
"#
    )
}

/// The UCWA simulator (on its own runtime) and the host.
struct Bed {
    host: Host,
    sim: SimHandle,
    hook: u16,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sim = rt
            .block_on(Simulator::start(SimConfig {
                users: vec![
                    UserSpec::new("alerts@contoso.com", "alert-pw", "Online"),
                    UserSpec::new(ALICE, "a", "Online"),
                ],
                ..SimConfig::default()
            }))
            .expect("start the UCWA simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("webhook.tokens"), format!("{TOKEN}\n")).expect("tokens");
        let (admin, hook) = (free_port(), free_port());
        let host = Host::start(
            dir.path(),
            admin,
            &config(dir.path(), admin, hook, &sim.discover_url()),
        );
        let health = format!("http://127.0.0.1:{hook}/healthz");
        let start = Instant::now();
        while get(&health).is_none_or(|b| b.trim() != "ok") {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the webhook did not come up; log:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            host,
            sim,
            hook,
            _rt: rt,
            _dir: dir,
        }
    }

    /// Posts alerts `from..to` as one JSON array; their ids.
    fn post(&self, from: usize, to: usize) -> Vec<u64> {
        let alerts: Vec<Value> = (from..to)
            .map(|n| {
                json!({
                    "subject": format!("CPU above 90% on web{n:04}"),
                    "severity": "high",
                    "labels": {"alertname": "HighCPU", "cluster": "eu-1", "instance": format!("web{n:04}")},
                })
            })
            .collect();
        let (status, body) = request(
            "POST",
            &format!("http://127.0.0.1:{}/api/v1/alerts", self.hook),
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", "application/json"),
            ],
            &Value::Array(alerts).to_string(),
        )
        .expect("the webhook answers");
        assert_eq!(status, 202, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        v["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|i| i.as_u64().expect("an id"))
            .collect()
    }
}

/// The count in a digest subject: "[FIRING ×N] …".
fn count(subject: &str) -> usize {
    subject
        .strip_prefix("[FIRING ×")
        .and_then(|s| s.split(']').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a digest subject: {subject}"))
}

#[test]
fn fifteen_hundred_alerts_reach_one_user_as_at_most_three_digests_within_a_minute() {
    let bed = Bed::start();
    let t0 = Instant::now();
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let mut ids = Vec::new();
    // Spread over about 3 s, so the storm outlasts group_wait: the first digest goes with what
    // came by then, an update an interval later with the rest.
    for (i, from) in (0..ALERTS).step_by(PER_POST).enumerate() {
        if i > 0 {
            std::thread::sleep(POST_SPACING);
        }
        ids.extend(bed.post(from, from + PER_POST));
    }
    let posted = t0.elapsed();
    assert_eq!(ids.len(), ALERTS);
    assert!(posted < Duration::from_secs(5), "posting took {posted:?}");

    // Every alert finished (polled through the API), within the minute.
    let alerts = loop {
        let alerts = bed.host.all_alerts(&[]);
        if alerts.len() == ALERTS && alerts.iter().all(|a| a["state"] == "finished") {
            break alerts;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} of {ALERTS} finished after a minute; IMs so far: {:?}\nlog:\n{}",
            alerts.iter().filter(|a| a["state"] == "finished").count(),
            bed.sim
                .received(ALICE)
                .iter()
                .map(|m| &m.subject)
                .collect::<Vec<_>>(),
            bed.host.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let finished = t0.elapsed();

    let ims = bed.sim.received(ALICE);
    let subjects: Vec<&str> = ims.iter().map(|m| m.subject.as_str()).collect();
    assert!((1..=3).contains(&ims.len()), "at most 3 IMs: {subjects:#?}");
    assert_eq!(
        subjects.iter().map(|s| count(s)).sum::<usize>(),
        ALERTS,
        "the digests together carry every alert: {subjects:#?}"
    );
    for m in &ims {
        assert!(m.subject.contains("HighCPU on eu-1: web"), "{}", m.subject);
        assert!(m.text.contains("Full list: /?digest="), "{}", m.text);
    }
    let last_im_ms = ims.iter().map(|m| m.at_unix_ms).max().unwrap_or(0) - t0_unix_ms;
    assert!(
        last_im_ms < 60_000,
        "the last IM came {last_im_ms} ms after the first post"
    );

    // Every alert's record says delivered and names its digest; each digest's list in the API
    // holds exactly the alerts it carried.
    let mut digests: std::collections::BTreeMap<u64, usize> = Default::default();
    for a in &alerts {
        let r = &a["recipients"][0];
        assert_eq!(
            (r["user"].as_str(), r["outcome"].as_str()),
            (Some(ALICE), Some("delivered")),
            "{a:#}"
        );
        let d = r["digest"]
            .as_u64()
            .unwrap_or_else(|| panic!("no digest: {a:#}"));
        *digests.entry(d).or_default() += 1;
    }
    assert_eq!(digests.len(), ims.len(), "{digests:?}");

    for (&d, &n) in &digests {
        let mut listed = 0;
        let mut path = format!("/api/v1/alerts?digest={d}&limit=500");
        loop {
            let page = bed.host.api(&path);
            listed += page["alerts"].as_array().map_or(0, Vec::len);
            match page["next_before"].as_u64() {
                Some(b) => path = format!("/api/v1/alerts?digest={d}&limit=500&before={b}"),
                None => break,
            }
        }
        assert_eq!(listed, n, "digest {d}'s list");
        assert!(
            subjects.iter().any(|s| count(s) == n),
            "an IM says ×{n}: {subjects:?}"
        );
    }
    println!(
        "storm figures: alerts in {ALERTS} (posted in {:.2} s), IMs out {}, last IM {:.1} s after the first post, every record final after {:.1} s; digests {:?}",
        posted.as_secs_f64(),
        ims.len(),
        last_im_ms as f64 / 1000.0,
        finished.as_secs_f64(),
        digests
    );
}
