//! Benchmark (ignored by default; it prints figures, it asserts only that the run completed):
//! memory and disk of the host as 96,000 alerts with distinct dedup keys go through it, then
//! after the dedup index and the history are pruned. Run it with
//!
//! ```text
//! cargo build -p alertbridge -p alertbridge-webhook -p alertbridge-test-sink
//! cargo nextest run -p alertbridge-testbed --test queue_memory --run-ignored only --no-capture
//! ```
//!
//! `QUEUE_BENCH_BIN=/path/to/alertbridge` measures another build (e.g. an older one) with the
//! same plugins; `QUEUE_BENCH_HOST_EXTRA` adds `[host]` lines (e.g. `dedup_max_keys = 10000`).

mod queue_support;

use std::{
    fs,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{bin_dir, free_port, get, wait_until};
use queue_support::*;

const ALERTS: usize = 96_000;
const PER_POST: usize = 500;

fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn metric(admin: &str, name: &str) -> f64 {
    get(&format!("{admin}/metrics"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[test]
#[ignore = "benchmark: prints memory and disk figures"]
fn memory_and_disk_follow_the_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (admin_port, hook) = (free_port(), free_port());
    let extra = std::env::var("QUEUE_BENCH_HOST_EXTRA").unwrap_or_default();
    let config = webhook_config(
        dir.path(),
        &data,
        admin_port,
        hook,
        &format!("max_queue_depth = 200000\n{extra}"),
    );
    let bin = std::env::var("QUEUE_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|_| bin_dir().join("alertbridge"));
    let log = fs::File::create(dir.path().join("host.log")).unwrap();
    let mut child = Command::new(&bin)
        .args(["run", "--config", &config.display().to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_until("the admin API", LONG, || {
        get(&format!("{admin}/healthz")).is_some()
    });
    // Warm up: a first batch through every path, then the baseline.
    let batch = |from: usize| {
        let alerts: Vec<serde_json::Value> = (from..from + PER_POST)
            .map(|i| alert(&format!("m{i}"), 64))
            .collect();
        let body = serde_json::Value::Array(alerts);
        let (status, _, answer) = http(
            &format!("http://127.0.0.1:{hook}/api/v1/alerts"),
            "POST",
            &[
                ("authorization", &format!("Bearer {TOKEN}")),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        )
        .unwrap_or_default();
        assert_eq!(status, 202, "{answer}");
    };
    wait_until("the webhook", LONG, || {
        std::net::TcpStream::connect(("127.0.0.1", hook)).is_ok()
    });
    batch(ALERTS);
    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    let base = rss_kib(pid);
    let started = Instant::now();
    for from in (0..ALERTS).step_by(PER_POST) {
        batch(from);
    }
    let post_secs = started.elapsed().as_secs_f64();
    wait_until("every alert delivered", Duration::from_secs(600), || {
        metric(&admin, "alertbridge_queue_depth") == 0.0
    });
    std::thread::sleep(Duration::from_secs(1));
    let loaded = rss_kib(pid);
    let file = |()| fs::metadata(data.join("queue.redb")).map_or(0, |m| m.len());
    let file_loaded = file(());
    let keys_loaded = metric(&admin, "alertbridge_dedup_keys");
    // One prune round (every 30 s): history beyond history_max_alerts goes, and the file is
    // compacted if it is then mostly free space.
    std::thread::sleep(Duration::from_secs(65));
    let pruned = rss_kib(pid);
    let file_pruned = file(());
    println!(
        "queue memory bench ({}; {ALERTS} alerts with distinct dedup keys, {post_secs:.1} s to post; extra: {extra:?})",
        bin.display()
    );
    println!("  RSS baseline        {:>8} KiB", base);
    println!(
        "  RSS after 96k keys  {:>8} KiB  (+{} KiB)",
        loaded,
        loaded.saturating_sub(base)
    );
    println!(
        "  RSS after pruning   {:>8} KiB  (+{} KiB)",
        pruned,
        pruned.saturating_sub(base)
    );
    println!("  dedup keys held     {keys_loaded}");
    println!(
        "  dedup evictions     {}",
        metric(&admin, "alertbridge_dedup_evictions_total")
    );
    println!("  queue file loaded   {:>10} bytes", file_loaded);
    println!("  queue file pruned   {:>10} bytes", file_pruned);
    println!(
        "  compactions         {}",
        metric(&admin, "alertbridge_queue_compactions_total")
    );
    let _ = child.kill();
    let _ = child.wait();
}
