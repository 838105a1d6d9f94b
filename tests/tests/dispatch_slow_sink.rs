//! A slow sink does not hold up another sink's messages to the same recipient: the real host
//! with two test sinks, one answering each message after 4 s (a bridge near its time-out). Each
//! sink's outcomes are recorded as its call ends, so the fast sink's next message to the same
//! person goes at once instead of after the slow sink's call.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{Host, emit, free_port, wait_until};

const SLOW_MS: u64 = 4_000;

fn config(dir: &Path, admin: u16, control: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 0

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "fast"
plugin = "test-sink"
[sink.config]
record_file = "{d}/fast.jsonl"

[[sink]]
name = "slow"
plugin = "test-sink"
[sink.config]
record_file = "{d}/slow.jsonl"
delay_ms = {SLOW_MS}

[groups]
oncall = ["sip:carol@x"]

[[route]]
name = "both"
groups = ["oncall"]
sinks = ["fast", "slow"]
"#
    )
}

/// The subjects `file` recorded, in order.
fn subjects(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["subject"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_slow_sink_does_not_hold_up_another_sinks_next_message_to_the_same_person() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &config(dir.path(), admin, control));
    let (fast, slow) = (dir.path().join("fast.jsonl"), dir.path().join("slow.jsonl"));
    let submitted = Instant::now();
    emit(control, "count=2&prefix=s&subject=alert&concurrency=1");
    wait_until(
        "both messages through the fast sink",
        Duration::from_secs(30),
        || subjects(&fast).len() == 2,
    );
    let took = submitted.elapsed();
    eprintln!("the fast sink had both messages {took:?} after the submit");
    assert!(
        took < Duration::from_millis(SLOW_MS / 2),
        "the fast sink's second message came {took:?} after the submit: it waited for the slow \
         sink's first call ({SLOW_MS} ms)"
    );
    assert!(
        subjects(&slow).is_empty(),
        "the slow sink is still on its first call"
    );
    wait_until(
        "both messages through the slow sink",
        Duration::from_secs(30),
        || subjects(&slow).len() == 2,
    );
    assert_eq!(subjects(&fast), ["alert 0", "alert 1"]);
    assert_eq!(
        subjects(&slow),
        ["alert 0", "alert 1"],
        "each sink in order"
    );
    drop(host);
}
