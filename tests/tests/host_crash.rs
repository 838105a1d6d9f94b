//! The crash test: a source submits 10,000 alerts while the host is killed with SIGKILL at
//! random points and restarted. Every alert whose receipt resolved must reach the sink, and
//! none twice — checked by alert id, not only by count.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    time::Duration,
};

use alertbridge_testbed::harness::{Host, free_port, wait_until};

const ALERTS: u64 = 10_000;
/// SIGKILLs that must land while alerts are still being submitted.
const KILLS: usize = 6;

#[test]
fn sigkill_while_submitting_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let admin = free_port();
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 60000

[[source]]
name = "src"
plugin = "test-source"
[source.config]
receipts_file = "{d}/receipts.txt"
emit_count = {ALERTS}
emit_prefix = "crash"
emit_concurrency = 64

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
redeliveries_file = "{d}/redeliveries.txt"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#
    );
    let mut host = Host::start(dir.path(), admin, &config);
    let receipts = || fs::read_to_string(dir.path().join("receipts.txt")).unwrap_or_default();
    // Kill at random points until enough kills have landed mid-submission (a fast machine may
    // need short pauses; each restart resumes where the receipts stop).
    let mut kills_during_submit = 0;
    let mut kills = 0;
    while kills_during_submit < KILLS && kills < 4 * KILLS {
        std::thread::sleep(Duration::from_millis(rand::random_range(20..250)));
        let submitting = receipts().lines().count() < ALERTS as usize;
        host.kill9();
        host.restart();
        kills += 1;
        if !submitting {
            break;
        }
        kills_during_submit += 1;
    }
    assert!(
        kills_during_submit >= 5,
        "only {kills_during_submit} of {kills} kills landed while alerts were still being submitted"
    );

    wait_until("every receipt", Duration::from_secs(120), || {
        receipts()
            .lines()
            .filter(|l| l.split(' ').count() == 3)
            .count()
            >= ALERTS as usize
    });
    wait_until("an empty queue", Duration::from_secs(120), || {
        host.api("/healthz")["queue_depth"] == 0
    });

    // seq → alert id, from the source's receipts (a SIGKILL can cut the last line short).
    let mut receipted: BTreeMap<String, u64> = BTreeMap::new();
    for line in receipts().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [seq, id, _dup] = parts[..] else { continue };
        let Ok(id) = id.parse::<u64>() else { continue };
        if let Some(prev) = receipted.insert(seq.to_owned(), id) {
            assert_eq!(prev, id, "{seq} got two different alert ids");
        }
    }
    assert_eq!(receipted.len(), ALERTS as usize);

    let text = fs::read_to_string(dir.path().join("delivered.jsonl")).unwrap();
    let mut delivered_ids = BTreeSet::new();
    let mut delivered_seqs = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("bad record line {line:?}: {e}"));
        let id = v["alert_id"].as_u64().unwrap();
        assert!(delivered_ids.insert(id), "alert {id} delivered twice");
        let seq = v["labels"]["seq"].as_str().unwrap().to_owned();
        assert!(
            delivered_seqs.insert(seq.clone(), id).is_none(),
            "{seq} delivered twice (second time as alert {id})"
        );
    }
    for (seq, id) in &receipted {
        assert_eq!(
            delivered_seqs.get(seq),
            Some(id),
            "{seq} (alert {id}) was receipted but not delivered"
        );
    }
    let redeliveries = fs::read_to_string(dir.path().join("redeliveries.txt"))
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "crash test: {} alerts receipted, {} delivered once each, {kills} SIGKILLs ({kills_during_submit} while submitting), \
         {redeliveries} redeliveries of in-flight messages suppressed by the sink's idempotency key",
        receipted.len(),
        delivered_ids.len()
    );
    assert!(host.stop());
}
