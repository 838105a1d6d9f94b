//! Pipeline benchmark: alerts from the test source to the test sink through both plugin
//! boundaries and the durable queue (fsync on every group commit), in-process.
//!
//! Needs the test plugins built with the same profile: run `scripts/bench`, or
//! `cargo build --release --workspace && cargo bench -p alertbridge --bench pipeline`.
//! Prints a table: sustained alerts/s, and submit → deliver latency at a fixed offered rate.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use alertbridge::{app::Bridge, config::Config, loader};

/// The same allocator as the `alertbridge` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn plugin_dir() -> PathBuf {
    std::env::var_os("ALERTBRIDGE_BENCH_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .to_owned()
        })
}

fn config(dir: &Path, count: u64, rate: Option<u64>) -> Config {
    let d = dir.display();
    let rate = rate.map_or(String::new(), |r| format!("emit_rate_per_sec = {r}"));
    let text = format!(
        r#"
[host]
data_dir = "{d}/data"
plugin_dir = "{plugins}"
max_queue_depth = 1000000
history_max_alerts = 1000000

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 60000
sink_concurrency = 1024

[[source]]
name = "src"
plugin = "test-source"
[source.config]
emit_count = {count}
emit_concurrency = 4096
{rate}

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        plugins = plugin_dir().display()
    );
    Config::parse(&dir.join("bench.toml"), &text).expect("bench config")
}

/// Runs `count` alerts through a fresh bridge; returns the wall time until the last delivery
/// and the submit → deliver latencies in microseconds.
fn run(count: u64, rate: Option<u64>) -> (Duration, Vec<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = loader::load_dir(&plugin_dir()).expect("plugin dir");
    assert!(
        plugins
            .find("test-source", alertbridge_plugin_api::Role::SOURCE)
            .is_some(),
        "build the test plugins first (scripts/bench)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let (bridge, _reloads) = Bridge::start(config(dir.path(), count, rate), &plugins)
            .await
            .expect("start");
        let delivered = || {
            bridge.metrics.counter(
                "alertbridge_deliveries_total",
                &[("sink", "sink"), ("outcome", "delivered")],
            )
        };
        while delivered() < count {
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "stuck at {} of {count}",
                delivered()
            );
        }
        let elapsed = start.elapsed();
        bridge.stop().await;
        elapsed
    });
    let text = std::fs::read_to_string(dir.path().join("delivered.jsonl")).expect("record file");
    let mut lat: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let sent: u64 = v["labels"]["submitted_us"].as_str()?.parse().ok()?;
            Some(v["delivered_us"].as_u64()?.saturating_sub(sent))
        })
        .collect();
    lat.sort_unstable();
    (elapsed, lat)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let throughput_n: u64 = std::env::var("BENCH_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);

    println!("| scenario | alerts | wall time | alerts/s | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|---|");
    let (t, lat) = run(throughput_n, None);
    println!(
        "| as fast as possible (4096 in flight) | {throughput_n} | {:.2} s | {:.0} | {:.2} | {:.2} | {:.2} |",
        t.as_secs_f64(),
        throughput_n as f64 / t.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    let n = rate * secs;
    let (t, lat) = run(n, Some(rate));
    println!(
        "| fixed offered rate {rate}/s | {n} | {:.2} s | {:.0} | {:.2} | {:.2} | {:.2} |",
        t.as_secs_f64(),
        n as f64 / t.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
}
