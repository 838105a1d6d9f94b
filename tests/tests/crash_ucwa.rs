//! Crash honesty through the real `ucwa` sink and the UCWA simulator (issue 12 §4): the real
//! `alertbridge` binary is SIGKILLed while IMs to one Lync user are going out. Nothing may be
//! lost, every IM the user sees twice must be marked "(repeat after restart)", and the IMs must
//! arrive in the order the alerts were accepted. A second test makes a send uncertain on
//! purpose (the recipient does not answer; the host is killed mid-send) and checks both
//! `on_uncertain` policies.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    time::{Duration, Instant},
};

use alertbridge_testbed::{
    harness::{Host, emit, free_port, get, wait_until},
    ucwa_sim::{Behaviour, SimConfig, SimHandle, Simulator, UserSpec},
};
use serde_json::Value;

const ALICE: &str = "sip:alice@contoso.com";
const MARK: &str = "(repeat after restart) ";

fn sim_config() -> SimConfig {
    SimConfig {
        users: vec![
            UserSpec::new("alerts@contoso.com", "alert-pw", "Online"),
            UserSpec::new(ALICE, "a", "Online"),
        ],
        invitation_timeout: Duration::from_secs(60),
        ..SimConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A host config: source `src` (test-source; `source` is its extra config), sink `lync`
/// (ucwa, at the simulator), one route to Alice.
fn config(dir: &Path, admin: u16, discover: &str, source: &str, delivery: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
max_attempts = 40
presence_cache_ms = 60000
{delivery}

[[source]]
name = "src"
plugin = "test-source"
[source.config]
{source}

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
request_timeout_secs = 5

[groups]
ops = ["{ALICE}"]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["lync"]
offline = {{ policy = "skip" }}
"#
    )
}

/// `seq → alert id` from the test source's receipts (a SIGKILL can cut the last line short).
fn receipts(path: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in fs::read_to_string(path).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [seq, id, _dup] = parts[..] else { continue };
        let Ok(id) = id.parse::<u64>() else { continue };
        if let Some(prev) = out.insert(seq.to_owned(), id) {
            assert_eq!(prev, id, "{seq} got two different alert ids");
        }
    }
    out
}

const ALERTS: usize = 1_500;
const KILLS: usize = 5;

#[test]
fn sigkill_while_delivering_loses_nothing_marks_every_repeat_and_keeps_order() {
    let started = Instant::now();
    let rt = runtime();
    let sim = rt
        .block_on(Simulator::start(sim_config()))
        .expect("start the UCWA simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let receipts_file = dir.path().join("receipts.txt");
    let source = format!(
        "receipts_file = \"{}\"\nemit_count = {ALERTS}\nemit_prefix = \"crash\"\nemit_concurrency = 32",
        receipts_file.display()
    );
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &sim.discover_url(), &source, ""),
    );

    // SIGKILL while IMs are going out: each kill waits for a few more IMs first, so every
    // kill lands mid-delivery.
    let mut kills = 0;
    while kills < KILLS {
        let seen = sim.received(ALICE).len();
        let more = rand::random_range(40..160);
        wait_until("more IMs", Duration::from_secs(60), || {
            sim.received(ALICE).len() >= seen + more
        });
        std::thread::sleep(Duration::from_millis(rand::random_range(0..30)));
        host.kill9();
        kills += 1;
        assert!(
            sim.received(ALICE).len() < ALERTS,
            "delivery ended before kill {kills}: make the run longer"
        );
        host.restart();
    }
    wait_until("every receipt", Duration::from_secs(120), || {
        receipts(&receipts_file).len() >= ALERTS
    });
    wait_until("an empty queue", Duration::from_secs(120), || {
        host.api("/healthz")["queue_depth"] == 0
    });
    // An outcome may ride the next commit (at most 10 ms later): the API shows it once it is
    // on disk.
    wait_until("every outcome on disk", Duration::from_secs(10), || {
        host.all_alerts(&[])
            .iter()
            .all(|a| a["state"] == "finished")
    });
    let metrics = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    let alerts = host.all_alerts(&[]);
    assert!(host.stop());
    let elapsed = started.elapsed();

    let receipted = receipts(&receipts_file);
    assert_eq!(receipted.len(), ALERTS);
    let by_id: BTreeMap<u64, &str> = receipted.iter().map(|(s, id)| (*id, s.as_str())).collect();
    let repeat_flagged: BTreeSet<u64> = alerts
        .iter()
        .filter(|a| a["recipients"][0]["repeat"] == true)
        .filter_map(|a| a["id"].as_u64())
        .collect();
    for a in &alerts {
        let r = &a["recipients"][0];
        assert_eq!(r["outcome"], "delivered", "{a:#}");
        assert!(r.get("sending").is_none(), "still marked sending: {a:#}");
    }

    // What Alice saw, in order: (alert id, marked).
    let received = sim.received(ALICE);
    let mut seen: Vec<(u64, bool)> = Vec::new();
    for im in &received {
        let (marked, text) = match im.text.strip_prefix(MARK) {
            Some(rest) => (true, rest),
            None => (false, im.text.as_str()),
        };
        assert_eq!(
            im.subject.starts_with(MARK),
            marked,
            "the subject is marked with the text: {im:?}"
        );
        let seq = text
            .strip_prefix("test alert ")
            .unwrap_or_else(|| panic!("unexpected IM text {:?}", im.text));
        let id = receipted
            .get(seq)
            .copied()
            .unwrap_or_else(|| panic!("IM for {seq}, which has no receipt"));
        seen.push((id, marked));
    }

    // 0 lost.
    let got: BTreeSet<u64> = seen.iter().map(|(id, _)| *id).collect();
    let lost: Vec<&str> = by_id
        .iter()
        .filter(|(id, _)| !got.contains(id))
        .map(|(_, s)| *s)
        .collect();
    assert!(lost.is_empty(), "receipted but never received: {lost:?}");

    // Every repeat marked: an alert arrives unmarked at most once, and whatever arrives after
    // its first copy is marked; a marked copy is of an alert the host flagged as uncertain.
    let mut first_seen = BTreeSet::new();
    let mut unmarked = BTreeSet::new();
    let (mut marked, mut duplicates) = (0, 0);
    for &(id, is_marked) in &seen {
        if !first_seen.insert(id) {
            duplicates += 1;
            assert!(
                is_marked,
                "alert {id} ({}) arrived again unmarked",
                by_id[&id]
            );
        }
        if is_marked {
            marked += 1;
            assert!(
                repeat_flagged.contains(&id),
                "alert {id} arrived marked but is not flagged as a repeat"
            );
        } else {
            assert!(unmarked.insert(id), "alert {id} arrived unmarked twice");
        }
    }

    // Order per recipient: each alert's first copy comes in accept (id) order, and so do the
    // unmarked ones.
    let firsts: Vec<u64> = {
        let mut once = BTreeSet::new();
        seen.iter()
            .filter(|(id, _)| once.insert(*id))
            .map(|(id, _)| *id)
            .collect()
    };
    let out_of_order = firsts.windows(2).filter(|w| w[0] > w[1]).count();
    assert_eq!(
        out_of_order,
        0,
        "IMs out of accept order; first 20 of the sequence: {:?}",
        &firsts[..20.min(firsts.len())]
    );
    let unmarked_seq: Vec<u64> = seen.iter().filter(|(_, m)| !m).map(|(id, _)| *id).collect();
    assert!(
        unmarked_seq.windows(2).all(|w| w[0] < w[1]),
        "unmarked IMs out of accept order"
    );
    let uncertain_logged = host
        .log()
        .matches("Uncertain send after a restart.")
        .count();
    assert!(
        uncertain_logged >= repeat_flagged.len(),
        "{uncertain_logged} uncertain sends logged, {} alerts flagged",
        repeat_flagged.len()
    );
    eprintln!(
        "crash_ucwa: {ALERTS} alerts, {KILLS} SIGKILLs, {} IMs received: 0 lost, {duplicates} \
         duplicates (all marked), {marked} marked IMs, {} alerts flagged uncertain, order kept; \
         {:.1} s; last run's metrics: {}",
        received.len(),
        repeat_flagged.len(),
        elapsed.as_secs_f64(),
        metrics
            .lines()
            .filter(|l| l.starts_with("alertbridge_uncertain_sends_total"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(sim);
}

/// The alert once `f` holds for it (polled every 20 ms, up to 30 s).
fn alert_when(host: &Host, id: u64, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let a = host.api(&format!("/api/v1/alerts/{id}"));
        if f(&a) {
            return a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "alert {id}: timed out waiting for {what}: {a:#}\nhost log:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Alice does not answer, so the send stays in flight; the host is SIGKILLed mid-send and
/// restarted with `on_uncertain` = `policy` while Alice answers again.
fn uncertain_send(policy: &str) -> (Value, Vec<String>, String) {
    let rt = runtime();
    let sim: SimHandle = rt
        .block_on(Simulator::start(sim_config()))
        .expect("start the UCWA simulator");
    sim.set_behaviour(ALICE, Behaviour::Ignore);
    let dir = tempfile::tempdir().expect("temp dir");
    let (admin, control) = (free_port(), free_port());
    let source = format!("control_listen = \"127.0.0.1:{control}\"");
    let delivery = format!("on_uncertain = \"{policy}\"");
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &sim.discover_url(), &source, &delivery),
    );
    let id = emit(control, "count=1&prefix=u&subject=Disk%20full")["ids"][0]
        .as_u64()
        .expect("an alert id");
    alert_when(&host, id, "the send to be recorded as begun", |a| {
        a["recipients"][0]["sending"] == true
    });
    host.kill9();
    sim.set_behaviour(ALICE, Behaviour::Accept);
    host.restart();
    let a = alert_when(&host, id, "the alert to finish", |a| {
        a["state"] == "finished"
    });
    let metrics = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    assert!(host.stop());
    let texts = sim
        .received(ALICE)
        .into_iter()
        .map(|im| format!("{} | {}", im.subject, im.text))
        .collect();
    (a, texts, metrics)
}

#[test]
fn an_uncertain_send_is_resent_marked_or_skipped_as_configured() {
    let (a, texts, metrics) = uncertain_send("resend");
    let r = &a["recipients"][0];
    assert_eq!(r["outcome"], "delivered", "{a:#}");
    assert_eq!(r["repeat"], true, "{a:#}");
    assert_eq!(
        texts,
        ["(repeat after restart) Disk full 0 | (repeat after restart) test alert u:0"],
        "the resend is marked in the subject and the text"
    );
    assert!(
        metrics.contains(r#"alertbridge_uncertain_sends_total{sink="lync",action="resent"} 1"#),
        "{metrics}"
    );

    let (a, texts, metrics) = uncertain_send("skip");
    let r = &a["recipients"][0];
    assert_eq!(r["outcome"], "skipped", "{a:#}");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|s| s.starts_with("uncertain:") && s.contains("on_uncertain = skip")),
        "{a:#}"
    );
    assert!(texts.is_empty(), "nothing sent again: {texts:?}");
    assert!(
        metrics.contains(r#"alertbridge_uncertain_sends_total{sink="lync",action="skipped"} 1"#),
        "{metrics}"
    );
}
