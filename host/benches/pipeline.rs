//! Pipeline benchmark: alerts from the test source to the test sink through both plugin
//! boundaries and the durable queue (fsync on every group commit), in-process.
//!
//! Needs the test plugins built with the same profile, which `scripts/testbed --release` puts
//! into `target/testbed-release` (they are never built beside the real plugins): run
//! `scripts/bench`, or set `ALERTBRIDGE_BENCH_PLUGINS` to that folder.
//! Prints a table: sustained alerts/s, and submit → deliver latency at a fixed offered rate;
//! each row is the median by CPU time of `BENCH_REPEAT` (3) runs.
//!
//! A second table runs the durable queue alone (no plugins, no routing) the way the dispatcher
//! uses it — enqueue; once committed, a durable `sending` save; then the outcome save
//! (`Queue::save_outcome`, riding in the next commit) — engine by engine: the real backends
//! (redb, the segment log) and candidate engines driven by a model of the same write pattern
//! (`engines`: redb, fjall, SQLite WAL; built with `--features bench-engines`, as
//! `scripts/bench` does). `BENCH_ENGINES` picks some (comma-separated:
//! `redb,log,redb-model,fjall,sqlite`; default all that are built). `BENCH_QUEUE_ONLY=1` runs only the second
//! table, `BENCH_PIPELINE_ONLY=1` only the first; `BENCH_BACKEND=log` runs the pipeline on the
//! log backend; `BENCH_REPEAT` (3) runs of each engine alternate, and the table shows their
//! medians.

#[cfg(feature = "bench-engines")]
mod engines;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use alertbridge::{
    app::Bridge,
    config::Config,
    model::StoredAlert,
    plugins::loader,
    queue::{LogQueue, OnCommit, Queue, QueueOptions, RedbQueue},
};

/// The same allocator as the `alertbridge` binary.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn plugin_dir() -> PathBuf {
    std::env::var_os("ALERTBRIDGE_BENCH_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/<profile>/deps/<bench> → target/testbed-<profile> (scripts/testbed)
            let exe = std::env::current_exe().expect("current_exe");
            let profile = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps");
            let name = profile
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("release");
            profile.with_file_name(format!("testbed-{name}"))
        })
}

fn config(dir: &Path, count: u64, rate: Option<u64>) -> Config {
    let d = dir.display();
    let rate = rate.map_or(String::new(), |r| format!("emit_rate_per_sec = {r}"));
    let backend = std::env::var("BENCH_BACKEND").unwrap_or_else(|_| "redb".into());
    let text = format!(
        r#"
[queue]
backend = "{backend}"

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

/// What one run measured.
struct Run {
    /// From starting the bridge to the last delivery.
    wall: Duration,
    /// Deliveries per second between the 10th and the 90th percentile of delivery times:
    /// the sustained rate, without start-up and the tail.
    sustained: f64,
    /// Submit → deliver latencies in microseconds, sorted.
    latency: Vec<u64>,
    /// CPU time of the whole process (host, plugins, queue writer) over the run.
    cpu: Duration,
    /// The queue file's size at the end.
    file_bytes: u64,
}

/// User + system CPU time this process has used so far (all threads), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which ends with the last ')'): utime and stime are
    // the 12th and 13th, in clock ticks of 1/100 s.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `count` alerts through a fresh bridge.
fn run(count: u64, rate: Option<u64>) -> Run {
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
    let cpu_before = cpu_time();
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
    let cpu = cpu_time().saturating_sub(cpu_before);
    let file_bytes = file_size(&dir.path().join("data"));
    let text = std::fs::read_to_string(dir.path().join("delivered.jsonl")).expect("record file");
    let records: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let sent: u64 = v["labels"]["submitted_us"].as_str()?.parse().ok()?;
            Some((sent, v["delivered_us"].as_u64()?))
        })
        .collect();
    let mut latency: Vec<u64> = records.iter().map(|(s, d)| d.saturating_sub(*s)).collect();
    latency.sort_unstable();
    let mut delivered: Vec<u64> = records.iter().map(|(_, d)| *d).collect();
    delivered.sort_unstable();
    let (lo, hi) = (delivered.len() / 10, delivered.len() * 9 / 10);
    let span_us = delivered
        .get(hi)
        .zip(delivered.get(lo))
        .map_or(0, |(h, l)| h.saturating_sub(*l));
    let sustained = if span_us == 0 {
        f64::NAN
    } else {
        (hi - lo) as f64 / (span_us as f64 / 1e6)
    };
    Run {
        wall: elapsed,
        sustained,
        latency,
        cpu,
        file_bytes,
    }
}

/// The size of the queue's files in `data_dir` (every file under it).
fn file_size(data_dir: &Path) -> u64 {
    std::fs::read_dir(data_dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => file_size(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

/// The queue engines of the queue-only table.
#[derive(Clone, Copy)]
enum Engine {
    Redb,
    Log,
    #[cfg(feature = "bench-engines")]
    RedbModel,
    #[cfg(feature = "bench-engines")]
    Fjall,
    #[cfg(feature = "bench-engines")]
    Sqlite,
}

impl Engine {
    const ALL: &[(&'static str, Engine)] = &[
        ("redb", Engine::Redb),
        ("log", Engine::Log),
        #[cfg(feature = "bench-engines")]
        ("redb-model", Engine::RedbModel),
        #[cfg(feature = "bench-engines")]
        ("fjall", Engine::Fjall),
        #[cfg(feature = "bench-engines")]
        ("sqlite", Engine::Sqlite),
    ];

    fn label(self) -> &'static str {
        match self {
            Engine::Redb => "redb (RedbQueue)",
            Engine::Log => "segment log (LogQueue)",
            #[cfg(feature = "bench-engines")]
            Engine::RedbModel => "redb (model)",
            #[cfg(feature = "bench-engines")]
            Engine::Fjall => "fjall 3, SyncData (model)",
            #[cfg(feature = "bench-engines")]
            Engine::Sqlite => "SQLite WAL, synchronous=FULL (model)",
        }
    }

    fn open(self, dir: &Path, on_commit: OnCommit) -> Box<dyn Queue> {
        let options = QueueOptions {
            history_max_alerts: 1_000_000,
            ..QueueOptions::default()
        };
        match self {
            Engine::Redb => Box::new(
                RedbQueue::open_with(dir, &options, Default::default(), on_commit).expect("redb"),
            ),
            Engine::Log => Box::new(
                LogQueue::open_with(dir, &options, Default::default(), on_commit).expect("log"),
            ),
            #[cfg(feature = "bench-engines")]
            Engine::RedbModel => Box::new(engines::KvQueue::new(
                engines::RedbModel::open(dir),
                on_commit,
            )),
            #[cfg(feature = "bench-engines")]
            Engine::Fjall => Box::new(engines::KvQueue::new(
                engines::FjallModel::open(dir),
                on_commit,
            )),
            #[cfg(feature = "bench-engines")]
            Engine::Sqlite => Box::new(engines::KvQueue::new(
                engines::SqliteModel::open(dir),
                on_commit,
            )),
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One recipient, as the router makes it, marked as a send begins.
fn sending_record() -> serde_json::Value {
    serde_json::json!({
        "route": "all", "sink": "sink", "user": "sip:ops@contoso.com",
        "outcome": "pending", "attempts": 0, "updated_ms": 0, "sending": true,
    })
}

/// Runs `count` alerts through the queue alone on `engine`, `rate` per second or as fast as
/// possible (4096 in flight). Latency: submit → the `sending` mark committed (when the send
/// would begin).
fn queue_alone(count: u64, rate: Option<u64>, engine: Engine) -> Run {
    use std::sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu_before = cpu_time();
    let (elapsed, latency) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StoredAlert>();
        let queue: Arc<dyn Queue> = Arc::from(engine.open(
            &dir.path().join("data"),
            Box::new(move |e| drop(tx.send(e.alert))),
        ));
        let done = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(count as usize)));
        let dispatcher = {
            let (queue, done, latencies) = (
                Arc::clone(&queue),
                Arc::clone(&done),
                Arc::clone(&latencies),
            );
            tokio::spawn(async move {
                while let Some(mut alert) = rx.recv().await {
                    let (queue, done, latencies) = (
                        Arc::clone(&queue),
                        Arc::clone(&done),
                        Arc::clone(&latencies),
                    );
                    tokio::spawn(async move {
                        alert.routed = true;
                        alert.recipients =
                            vec![serde_json::from_value(sending_record()).expect("record")];
                        queue.save(&alert).await.expect("sending mark");
                        let submitted: u64 =
                            alert.alert.labels["submitted_us"].parse().expect("label");
                        latencies
                            .lock()
                            .expect("latencies")
                            .push(now_us().saturating_sub(submitted));
                        let r = &mut alert.recipients[0];
                        r.sending = false;
                        r.outcome = alertbridge::model::Outcome::Delivered;
                        alert.finished_ms = Some(alertbridge::model::now_ms());
                        queue.save_outcome(&alert).await.expect("outcome");
                        done.fetch_add(1, Ordering::Relaxed);
                    });
                }
            })
        };
        let start = Instant::now();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
        let mut tick = rate.map(|r| {
            let mut t = tokio::time::interval(Duration::from_nanos(1_000_000_000 / r.max(1)));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        for i in 0..count {
            if let Some(t) = tick.as_mut() {
                t.tick().await;
            }
            let permit = Arc::clone(&in_flight)
                .acquire_owned()
                .await
                .expect("permit");
            let mut alert = alertbridge_plugin_api::Alert::new(format!("bench alert {i}"));
            alert.body = "Disk /var is at 98% on db01; the nightly backup will fail.".into();
            alert.labels.insert("seq".into(), i.to_string());
            alert
                .labels
                .insert("submitted_us".into(), now_us().to_string());
            let enqueued = queue.enqueue("src", alert);
            tokio::spawn(async move {
                enqueued.await.expect("enqueue");
                drop(permit);
            });
        }
        while done.load(Ordering::Relaxed) < count {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = start.elapsed();
        queue.close();
        dispatcher.abort();
        let latency = std::mem::take(&mut *latencies.lock().expect("latencies"));
        (elapsed, latency)
    });
    let cpu = cpu_time().saturating_sub(cpu_before);
    let mut latency = latency;
    latency.sort_unstable();
    Run {
        wall: elapsed,
        sustained: count as f64 / elapsed.as_secs_f64(),
        latency,
        cpu,
        file_bytes: file_size(&dir.path().join("data")),
    }
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

    println!(
        "| scenario | alerts | wall time | alerts/s (wall) | alerts/s (sustained, p10-p90) | CPU µs/alert | p50 ms | p99 ms | max ms | queue file MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let row = |name: String, n: u64, r: &Run| {
        println!(
            "| {name} | {n} | {:.2} s | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.wall.as_secs_f64(),
            n as f64 / r.wall.as_secs_f64(),
            r.sustained,
            r.cpu.as_secs_f64() * 1e6 / n as f64,
            pct(&r.latency, 0.5),
            pct(&r.latency, 0.99),
            pct(&r.latency, 1.0),
            r.file_bytes as f64 / 1e6
        );
    };
    // The machine is shared: a row is the median by CPU time of `repeat` runs (in the second
    // table, the variants' runs alternate).
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let median = |mut runs: Vec<Run>| {
        runs.sort_by_key(|r| r.cpu);
        runs.swap_remove(runs.len() / 2)
    };
    if std::env::var_os("BENCH_QUEUE_ONLY").is_none() {
        let n = rate * secs;
        let (mut flat, mut fixed) = (Vec::new(), Vec::new());
        for _ in 0..repeat {
            flat.push(run(throughput_n, None));
            fixed.push(run(n, Some(rate)));
        }
        row(
            "as fast as possible (4096 in flight)".into(),
            throughput_n,
            &median(flat),
        );
        row(format!("fixed offered rate {rate}/s"), n, &median(fixed));
    }
    if std::env::var_os("BENCH_PIPELINE_ONLY").is_some() {
        return;
    }
    println!();
    println!(
        "The queue alone (enqueue, `sending` save, outcome riding the next commit; latency: submit → `sending` committed; median of {repeat} alternating runs by CPU):"
    );
    println!();
    println!(
        "| engine | rate | alerts | wall time | alerts/s | CPU µs/alert | p50 ms | p99 ms | max ms | queue file MB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let n = rate * secs;
    let picked = std::env::var("BENCH_ENGINES").unwrap_or_default();
    let variants: Vec<Engine> = Engine::ALL
        .iter()
        .filter(|(name, _)| picked.is_empty() || picked.split(',').any(|p| p.trim() == *name))
        .map(|&(_, e)| e)
        .collect();
    for (label, n, r) in [
        (format!("{rate}/s"), n, Some(rate)),
        ("as fast as possible".to_owned(), throughput_n, None),
    ] {
        let mut runs: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
        for _ in 0..repeat {
            for (runs, &engine) in runs.iter_mut().zip(&variants) {
                runs.push(queue_alone(n, r, engine));
            }
        }
        for (runs, engine) in runs.into_iter().zip(&variants) {
            let name = engine.label();
            let run = &median(runs);
            println!(
                "| {name} | {label} | {n} | {:.2} s | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} |",
                run.wall.as_secs_f64(),
                run.sustained,
                run.cpu.as_secs_f64() * 1e6 / n as f64,
                pct(&run.latency, 0.5),
                pct(&run.latency, 0.99),
                pct(&run.latency, 1.0),
                run.file_bytes as f64 / 1e6
            );
        }
    }
}
