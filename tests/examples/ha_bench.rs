//! The queue backends benchmark (`scripts/bench-ha`): real `alertbridge` hosts (the release
//! build `scripts/testbed --release` assembles) with the test source and the test sink, on the
//! embedded redb queue, on PostgreSQL with one host and with two hosts sharing it. Prints a
//! table:
//!
//! - **burst**: `BENCH_ALERTS` alerts (default 20,000) submitted as fast as the hosts take them
//!   (4,096 in flight, split over the hosts): durable ingest rate (every receipt, i.e. every
//!   commit, back), end-to-end rate (the last delivery), CPU µs per alert of the hosts and of
//!   PostgreSQL (all its processes);
//! - **fixed rate**: `BENCH_RATE` alerts/s (default 1,000) for `BENCH_SECS` s (default 10):
//!   accept → deliver latency (p50, p99, max; the source stamps each alert before submitting it,
//!   the sink when it takes the message), CPU µs per alert;
//! - **failover**: two hosts, `lease_ms` = `BENCH_LEASE_MS` (default 10,000, the default);
//!   host `a` holds 100 deliveries in flight (its sink hangs) and is SIGKILLed; the time from
//!   the kill to the first and the last delivery by `b`.
//!
//! `BENCH_PARTS` (default `table,failover`) picks what runs.
//!
//! Alerts go to 100 users (by the last two digits of their number): one user's messages from
//! one source go one at a time, in accept order, so one user would measure that chain alone.
//! The PostgreSQL server is the bench's own (`scripts/postgres.sh` in a scratch folder, fsync
//! on: as durable as redb's fsync per group commit), a fresh database per row.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use alertbridge_testbed::{
    harness::{Host, emit, free_port, wait_until},
    postgres::{Database, Server},
};

/// Users the alerts are spread over.
const USERS: usize = 100;
const LONG: Duration = Duration::from_secs(600);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// User + system CPU of process `pid` (and, with `children`, of its children it has waited
/// for), from `/proc/<pid>/stat`, in clock ticks of 10 ms.
fn ticks(pid: u32, children: bool) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
        return 0;
    };
    let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap_or(0)).collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let own = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    if children {
        own + f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0)
    } else {
        own
    }
}

/// CPU of a PostgreSQL server: the postmaster with the backends that ended, and those alive.
fn pg_ticks(pg: &Server) -> u64 {
    let Some(master) = pg.postmaster_pid() else {
        return 0;
    };
    let mut total = ticks(master, true);
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(master) {
            total += ticks(pid, false);
        }
    }
    total
}

/// Which queue, and how many hosts on it.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Redb,
    Postgres { hosts: usize },
}

impl Backend {
    fn name(self) -> String {
        match self {
            Self::Redb => "redb, 1 host".into(),
            Self::Postgres { hosts: 1 } => "PostgreSQL, 1 host".into(),
            Self::Postgres { hosts } => format!("PostgreSQL, {hosts} hosts"),
        }
    }

    fn hosts(self) -> usize {
        match self {
            Self::Redb => 1,
            Self::Postgres { hosts } => hosts,
        }
    }
}

/// One host of a row.
struct Node {
    host: Host,
    control: u16,
    record: PathBuf,
}

/// What a host's config says besides the common part.
#[derive(Default, Clone)]
struct Extra {
    /// `[queue]` lines (none: redb).
    queue: String,
    /// Lines for the test source (`emit_count`, `emit_rate_per_sec`, ...).
    source: String,
    /// Lines for the test sink (`delay_ms`).
    sink: String,
}

fn config(dir: &Path, admin: u16, control: u16, e: &Extra) -> String {
    let d = dir.display();
    let mut text = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
max_queue_depth = 1000000
history_max_alerts = 1000000

{queue}

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 600000
sink_concurrency = 1024

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"
emit_concurrency = 4096
{source}

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
{sink}

[groups]
"#,
        queue = e.queue,
        source = e.source,
        sink = e.sink,
    );
    for u in 0..USERS {
        let _ = writeln!(text, "u{u:02} = [\"sip:u{u:02}@contoso.com\"]");
    }
    // User n % 100 (label seq = "<prefix>:<n>"): its last two digits, or the one digit of
    // n < 10. Each alert matches one route.
    for u in 0..USERS {
        let _ = write!(
            text,
            "\n[[route]]\nname = \"u{u:02}\"\nmatch = {{ labels_regex = {{ seq = '{u:02}$|:{u}$' }} }}\ngroups = [\"u{u:02}\"]\nsinks = [\"sink\"]\n"
        );
    }
    text
}

/// The `[queue]` section of node `node` on `db`.
fn queue_section(db: Option<&str>, node: &str, lease_ms: u64) -> String {
    db.map_or(String::new(), |url| {
        format!(
            "[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\nnode = \"{node}\"\nlease_ms = {lease_ms}\n"
        )
    })
}

fn start_node(root: &Path, name: &str, e: &Extra) -> Node {
    let dir = root.join(name);
    fs::create_dir_all(dir.join("data")).expect("node folder");
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(&dir, admin, &config(&dir, admin, control, e));
    Node {
        host,
        control,
        record: dir.join("delivered.jsonl"),
    }
}

/// Deliveries recorded so far by `nodes`: (submitted µs, delivered µs) each.
fn records(nodes: &[Node]) -> Vec<(u64, u64)> {
    nodes
        .iter()
        .flat_map(|n| {
            fs::read_to_string(&n.record)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| {
                    let sent = v["labels"]["submitted_us"].as_str()?.parse().ok()?;
                    Some((sent, v["delivered_us"].as_u64()?))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn count_lines(nodes: &[Node]) -> usize {
    nodes
        .iter()
        .map(|n| {
            fs::read(&n.record)
                .map(|b| b.iter().filter(|&&c| c == b'\n').count())
                .unwrap_or(0)
        })
        .sum()
}

fn host_ticks(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .filter_map(|n| n.host.pid())
        .map(|p| ticks(p, false))
        .sum()
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// The database of a row, if it uses PostgreSQL.
fn database(pg: Option<&Server>, backend: Backend, tag: &str) -> Option<Database> {
    match backend {
        Backend::Redb => None,
        Backend::Postgres { .. } => pg.map(|s| Database::create(&s.url, tag)),
    }
}

struct Burst {
    ingest: f64,
    end_to_end: f64,
    host_us: f64,
    pg_us: f64,
}

fn burst(pg: Option<&Server>, backend: Backend, n: u64) -> Burst {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(pg, backend, "burst");
    let hosts = backend.hosts();
    let nodes: Vec<Node> = (0..hosts)
        .map(|i| {
            let name = format!("n{i}");
            let e = Extra {
                queue: queue_section(db.as_ref().map(|d| d.url.as_str()), &name, 10_000),
                ..Extra::default()
            };
            start_node(dir.path(), &name, &e)
        })
        .collect();
    let per = n / hosts as u64;
    let total = per * hosts as u64;
    let (cpu0, pg0) = (host_ticks(&nodes), pg.map_or(0, pg_ticks));
    let start = Instant::now();
    let start_us = now_us();
    std::thread::scope(|s| {
        for (i, node) in nodes.iter().enumerate() {
            let control = node.control;
            s.spawn(move || {
                let answer = emit(
                    control,
                    &format!("count={per}&prefix=h{i}&concurrency={}", 4096 / hosts),
                );
                assert_eq!(answer["refused"], 0, "refused: {answer}");
            });
        }
    });
    let ingest = start.elapsed();
    wait_until("every delivery", LONG, || {
        count_lines(&nodes) as u64 >= total
    });
    let (cpu1, pg1) = (host_ticks(&nodes), pg.map_or(0, pg_ticks));
    let last_us = records(&nodes)
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or(start_us);
    let e2e = Duration::from_micros(last_us.saturating_sub(start_us));
    drop(nodes);
    drop(db);
    Burst {
        ingest: total as f64 / ingest.as_secs_f64(),
        end_to_end: total as f64 / e2e.as_secs_f64(),
        host_us: (cpu1 - cpu0) as f64 * 10_000.0 / total as f64,
        pg_us: pg1.saturating_sub(pg0) as f64 * 10_000.0 / total as f64,
    }
}

struct Paced {
    p50: f64,
    p99: f64,
    max: f64,
    host_us: f64,
    pg_us: f64,
}

fn paced(pg: Option<&Server>, backend: Backend, rate: u64, secs: u64) -> Paced {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(pg, backend, "paced");
    let hosts = backend.hosts() as u64;
    let per = rate * secs / hosts;
    let nodes: Vec<Node> = (0..hosts)
        .map(|i| {
            let name = format!("n{i}");
            let e = Extra {
                queue: queue_section(db.as_ref().map(|d| d.url.as_str()), &name, 10_000),
                source: format!(
                    "emit_count = {per}\nemit_rate_per_sec = {}\nemit_prefix = \"h{i}\"",
                    rate / hosts
                ),
                ..Extra::default()
            };
            start_node(dir.path(), &name, &e)
        })
        .collect();
    // The sources begin at their start; the CPU from here on is the run's.
    let (cpu0, pg0) = (host_ticks(&nodes), pg.map_or(0, pg_ticks));
    wait_until("every delivery", LONG, || {
        count_lines(&nodes) as u64 >= per * hosts
    });
    let (cpu1, pg1) = (host_ticks(&nodes), pg.map_or(0, pg_ticks));
    let mut latency: Vec<u64> = records(&nodes)
        .iter()
        .map(|(s, d)| d.saturating_sub(*s))
        .collect();
    latency.sort_unstable();
    let total = (per * hosts) as f64;
    drop(nodes);
    drop(db);
    Paced {
        p50: pct(&latency, 0.5),
        p99: pct(&latency, 0.99),
        max: pct(&latency, 1.0),
        host_us: (cpu1 - cpu0) as f64 * 10_000.0 / total,
        pg_us: pg1.saturating_sub(pg0) as f64 * 10_000.0 / total,
    }
}

/// Kill → first and last delivery by the survivor, in ms.
fn failover(pg: &Server, lease_ms: u64) -> (u64, u64) {
    const HELD: u64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::create(&pg.url, "failover");
    let e = |node: &str, sink: &str| Extra {
        queue: queue_section(Some(&db.url), node, lease_ms),
        sink: sink.to_owned(),
        ..Extra::default()
    };
    let mut a = start_node(dir.path(), "a", &e("a", "delay_ms = 3600000"));
    let b = start_node(dir.path(), "b", &e("b", ""));
    let answer = emit(
        a.control,
        &format!("count={HELD}&prefix=held&concurrency={HELD}"),
    );
    let ids: Vec<u64> = answer["ids"]
        .as_array()
        .map(|v| v.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    assert_eq!(ids.len() as u64, HELD, "{answer}");
    wait_until("a to begin every send", LONG, || {
        ids.iter().all(|id| {
            b.host.api(&format!("/api/v1/alerts/{id}"))["recipients"][0]["sending"] == true
        })
    });
    let killed = now_us();
    a.host.kill9();
    let nodes = [b];
    wait_until("b to deliver a's round", LONG, || {
        count_lines(&nodes) as u64 >= HELD
    });
    let done: Vec<u64> = records(&nodes).iter().map(|r| r.1).collect();
    let first = done.iter().min().copied().unwrap_or(killed);
    let last = done.iter().max().copied().unwrap_or(killed);
    (
        first.saturating_sub(killed) / 1000,
        last.saturating_sub(killed) / 1000,
    )
}

fn main() {
    let n = env_or("BENCH_ALERTS", 20_000);
    let rate = env_or("BENCH_RATE", 1_000);
    let secs = env_or("BENCH_SECS", 10);
    let lease_ms = env_or("BENCH_LEASE_MS", 10_000);
    let scratch = tempfile::tempdir().expect("tempdir");
    let pg = Server::start(&scratch.path().join("postgres"), true);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "table,failover".into());
    if parts.split(',').any(|p| p == "table") {
        table(&pg, n, rate, secs);
    }
    if parts.split(',').any(|p| p == "failover") {
        let (first, last) = failover(&pg, lease_ms);
        println!();
        println!(
            "failover (2 hosts, lease_ms = {lease_ms}): host a SIGKILLed holding 100 sends in flight; \
             b's first delivery {first} ms after the kill, its last {last} ms"
        );
    }
    println!(
        "({n} alerts per burst, {rate}/s for {secs} s, {USERS} users; release build; PostgreSQL with fsync on)"
    );
}

fn table(pg: &Server, n: u64, rate: u64, secs: u64) {
    println!(
        "| queue | burst: ingest alerts/s | burst: end-to-end alerts/s | burst: CPU µs/alert (host + PostgreSQL) | {rate}/s: p50 ms | {rate}/s: p99 ms | {rate}/s: max ms | {rate}/s: CPU µs/alert (host + PostgreSQL) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for backend in [
        Backend::Redb,
        Backend::Postgres { hosts: 1 },
        Backend::Postgres { hosts: 2 },
    ] {
        let b = burst(Some(pg), backend, n);
        let p = paced(Some(pg), backend, rate, secs);
        let cpu = |host: f64, pg: f64| {
            if backend == Backend::Redb {
                format!("{host:.0}")
            } else {
                format!("{host:.0} + {pg:.0}")
            }
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} |",
            backend.name(),
            b.ingest,
            b.end_to_end,
            cpu(b.host_us, b.pg_us),
            p.p50,
            p.p99,
            p.max,
            cpu(p.host_us, p.pg_us)
        );
    }
}
