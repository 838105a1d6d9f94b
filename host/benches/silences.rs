//! Silences benchmark: what checking an alert against the silences in force costs (the
//! dispatcher does it at the start of every round of every alert), for 0 to 1000 active
//! silences, when none matches (every silence is looked at) and when the last one made does;
//! what creating one costs with the embedded redb store (one durable commit each); and the
//! memory silences at the pattern bounds take (9 patterns with Unicode classes each, as many
//! as `MAX_LIVE_PATTERNS` lets in).
//!
//! `cargo bench -p alertbridge --bench silences` (no plugins needed). Prints tables.

use std::{sync::Arc, time::Instant};

use alertbridge::{
    model::StoredAlert,
    silences::{
        MAX_LIVE_PATTERNS, MAX_SILENCES, MemorySilences, NewSilence, RedbSilences, SilenceError,
        Silences,
    },
};
use alertbridge_plugin_api::{Alert, Severity};
use serde_json::json;

/// The same allocator as the `alertbridge` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: i64 = 1_800_000_000_000;

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// A silence on one host and alert name, a severity and one label pattern.
fn typical(i: usize) -> NewSilence {
    serde_json::from_value(json!({
        "matchers": {
            "labels": {"host": format!("db{i:04}"), "alertname": "DiskFull"},
            "labels_regex": {"cluster": "^eu-[0-9]+$"},
            "severity": ">=high",
        },
        "duration": "2h", "author": "bench", "comment": "maintenance window",
    }))
    .expect("a request")
}

/// A silence at the pattern bounds: 8 label patterns, each with Unicode classes.
fn heavy(i: usize) -> NewSilence {
    let patterns: serde_json::Map<String, serde_json::Value> = (0..8)
        .map(|k| {
            (
                format!("l{k}"),
                json!(format!("^(?i)[a-z]\\w+-{i}-[[:alnum:]]+\\d{{2,8}}$")),
            )
        })
        .collect();
    serde_json::from_value(json!({
        "matchers": {"labels_regex": patterns, "subject": "(?i)\\b(disk|cpu|memory)\\w*\\s+full\\b"},
        "duration": "2h", "author": "bench", "comment": "maintenance window",
    }))
    .expect("a request")
}

fn alert(host: &str) -> StoredAlert {
    let mut a = Alert::new("Disk full on the data volume");
    a.severity = Severity::CRITICAL;
    for (k, v) in [
        ("host", host),
        ("alertname", "DiskFull"),
        ("cluster", "eu-1"),
    ] {
        a.labels.insert(k.into(), v.into());
    }
    StoredAlert::new(1, "monitoring", a, NOW)
}

/// The median of `runs` timings of `iters` calls of `f`, in µs per call.
fn per_call(runs: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / iters as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    println!("active silences   µs/alert, none matches   µs/alert, the last matches");
    for n in [0usize, 10, 100, 1000] {
        let silences = Silences::open(Arc::new(MemorySilences::default())).expect("open");
        rt.block_on(async {
            for i in 0..n {
                silences.create(&typical(i), NOW).await.expect("create");
            }
        });
        let miss = alert("web01");
        let hit = alert(&format!("db{:04}", n.saturating_sub(1)));
        let none = per_call(5, 2000, || {
            assert!(silences.silencing(&miss, NOW + 1).is_none());
        });
        let last = per_call(5, 2000, || {
            assert_eq!(silences.silencing(&hit, NOW + 1).is_some(), n > 0);
        });
        println!("{n:>15} {none:>24.2} {last:>29.2}");
    }

    println!();
    let dir = tempfile::tempdir().expect("temp dir");
    let silences =
        Silences::open(Arc::new(RedbSilences::open(dir.path()).expect("redb"))).expect("open");
    let made = 200;
    let start = Instant::now();
    rt.block_on(async {
        for i in 0..made {
            silences.create(&typical(i), NOW).await.expect("create");
        }
    });
    let each = start.elapsed().as_secs_f64() * 1e3 / made as f64;
    println!("create with the redb store: {made} silences, {each:.2} ms each (one durable commit)");

    let before = rss_mib();
    let heavy_silences = Silences::open(Arc::new(MemorySilences::default())).expect("open");
    let kept = rt.block_on(async {
        let mut kept = 0;
        for i in 0..MAX_SILENCES {
            match heavy_silences.create(&heavy(i), NOW).await {
                Ok(_) => kept += 1,
                Err(SilenceError::TooManyPatterns { .. }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        kept
    });
    let miss = alert("web01");
    let scan = per_call(3, 200, || {
        assert!(heavy_silences.silencing(&miss, NOW + 1).is_none());
    });
    println!(
        "{kept} silences with 9 Unicode-class patterns each (the {MAX_LIVE_PATTERNS}-pattern budget): RSS +{:.1} MiB, {scan:.1} µs/alert when none matches",
        rss_mib() - before
    );
}
