//! `GET /api/v1/alerts` pages with a hard cap and streams (issue 12 §3): 400 alerts of ~96 KB
//! posted through the webhook, then `limit=1000` asked for, alone and four at once, while the
//! host's resident memory is sampled. Before, one such request answered everything at once and
//! took about ten times its answer in memory; now a page is capped and written one alert at a
//! time, and following `next_before` still yields every alert exactly once, newest first.

use std::{
    collections::HashSet,
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use alertbridge_testbed::harness::{Host, free_port, request, wait_until};
use serde_json::json;

/// Alerts posted; `ALERTBRIDGE_TEST_PAGING_ALERTS` (a multiple of 8) changes it, e.g. to 1000
/// to compare with the figures of issue 12.
fn alert_count() -> usize {
    std::env::var("ALERTBRIDGE_TEST_PAGING_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}
const BODY_BYTES: usize = 96 * 1024;

fn config(dir: &Path, admin: u16, webhook: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
max_body_bytes = 131072

[delivery]
per_recipient_per_minute = 0

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

[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["lync"]
"#
    )
}

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the peak resident memory of `pid` while `f` runs.
fn peak_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (out, peak.load(Ordering::Relaxed))
}

#[test]
fn big_alerts_are_listed_in_capped_streamed_pages() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "hook-token\n").unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &config(dir.path(), admin, webhook));
    let pid = host.pid().expect("running");
    let count = alert_count();

    // 400 alerts of ~96 KB, eight per post.
    let filler: String = "0123456789abcdef".repeat(BODY_BYTES / 16);
    for batch in 0..count / 8 {
        let alerts: Vec<_> = (0..8)
            .map(|i| {
                let n = batch * 8 + i;
                json!({"subject": format!("big alert {n}"), "body": format!("{n}:{filler}")})
            })
            .collect();
        let (status, body) = request(
            "POST",
            &format!("http://127.0.0.1:{webhook}/api/v1/alerts"),
            &[
                ("authorization", "Bearer hook-token"),
                ("content-type", "application/json"),
            ],
            &serde_json::Value::from(alerts).to_string(),
        )
        .expect("the webhook answers");
        assert_eq!(status, 202, "{body}");
    }
    wait_until("every alert delivered", Duration::from_secs(300), || {
        fs::read_to_string(dir.path().join("delivered.jsonl")).map_or(0, |s| s.lines().count())
            >= count
    });
    std::thread::sleep(Duration::from_secs(1));

    let url = format!("{}/api/v1/alerts?limit=1000", host.admin);
    let before = rss_kib(pid);
    let (answer, peak) = peak_during(pid, || request("GET", &url, &[], ""));
    let (status, body) = answer.expect("the API answers");
    eprintln!(
        "limit=1000: {} bytes answered; RSS {} MiB before, peak {} MiB (+{} MiB)",
        body.len(),
        before / 1024,
        peak / 1024,
        (peak - before) / 1024
    );
    let before4 = rss_kib(pid);
    let (answers, peak4) = peak_during(pid, || {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || request("GET", &url, &[], "").map(|(_, b)| b.len()))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap().unwrap_or(0))
            .sum::<usize>()
    });
    eprintln!(
        "4 × limit=1000 at once: {answers} bytes answered; RSS {} MiB before, peak {} MiB (+{} MiB)",
        before4 / 1024,
        peak4 / 1024,
        (peak4 - before4) / 1024
    );

    assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let alerts = page["alerts"].as_array().expect("alerts");
    assert!(
        !alerts.is_empty() && alerts.len() < count,
        "one page held {} alerts",
        alerts.len()
    );
    assert!(
        body.len() < 5 * 1024 * 1024,
        "one page is {} bytes",
        body.len()
    );
    assert!(page["next_before"].as_u64().is_some(), "no cursor");
    let growth_mib = (peak - before) / 1024;
    assert!(
        growth_mib < 24,
        "one request took {growth_mib} MiB for a {} byte answer",
        body.len()
    );
    assert!(
        (peak4 - before4) / 1024 < 48,
        "four requests took {} MiB",
        (peak4 - before4) / 1024
    );

    // Following the cursor yields every alert once, newest first, bodies whole.
    let all = host.all_alerts(&[]);
    let ids: Vec<u64> = all.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), count);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), count);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first");
    for a in &all {
        let subject = a["alert"]["subject"].as_str().unwrap();
        let n = subject.strip_prefix("big alert ").unwrap();
        let body = a["alert"]["body"].as_str().unwrap();
        assert!(body.starts_with(&format!("{n}:")) && body.len() > BODY_BYTES);
    }
    // A page far in the past is empty and ends the listing; `before` past the newest is fine.
    let v = host.api("/api/v1/alerts?before=1");
    assert_eq!(v["alerts"].as_array().map(Vec::len), Some(0));
    assert!(v["next_before"].is_null());
    let v = host.api(&format!(
        "/api/v1/alerts?limit=2&before={}",
        ids[0] + 1_000_000
    ));
    let page: Vec<u64> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(page, ids[..2]);
    assert_eq!(v["next_before"].as_u64(), Some(ids[1]));
}
