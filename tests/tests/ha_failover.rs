//! Failover: two real hosts on one PostgreSQL; host `a` holds a round of deliveries (its sink
//! hangs mid-send) and is SIGKILLed → host `b` delivers them within the lease time, marked as
//! repeats (`a` had begun sending them); while `a` lived and renewed its lease, `b` left them
//! alone; `a`, restarted, does not send them again.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use alertbridge_plugin_api::REPEAT_MARK;
use alertbridge_testbed::{
    ha::{self, LONG, Node, Options},
    harness::wait_until,
    postgres::Database,
    servers,
};

/// Alerts in the round `a` holds.
const ROUND: usize = 20;
const LEASE_MS: u64 = 1500;
/// What the survivor may take beyond the lease on a loaded 2-core machine: its lease task's
/// poll, the start of its round, the sink call.
const SLACK_MS: u64 = 3000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[test]
fn killing_the_host_that_holds_a_round_has_the_other_deliver_it_within_the_lease() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_failover");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let lease = Options {
        lease_ms: LEASE_MS,
        ..Options::default()
    };
    // a's sink takes each message and never answers: its round stays in flight.
    let hanging = Options {
        sink_extra: "delay_ms = 3600000".into(),
        ..lease.clone()
    };
    let mut a = Node::start(dir.path(), "a", &db.url, &hanging);
    let b = Node::start(dir.path(), "b", &db.url, &lease);

    let mut receipts = BTreeMap::new();
    for i in 0..ROUND {
        let key = format!("round-{i:03}");
        // One user each: a user's messages from one source go one at a time, and the whole
        // round is to be in flight at once.
        let id = ha::post_now(&a.hook_url(), &key, &ha::user_of(i));
        receipts.insert(key, id);
    }
    // a has begun every send (the mark is in the shared queue, b's admin API shows it).
    wait_until("a to begin sending the round", LONG, || {
        receipts.values().all(|id| {
            b.host.api(&format!("/api/v1/alerts/{id}"))["recipients"][0]["sending"] == true
        })
    });
    // Two leases long, a renews its claim: b must not take the round over.
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    assert!(
        b.records().is_empty(),
        "b delivered while a was alive and holding the round: {:?}",
        b.records()
    );

    let killed_us = now_us();
    let killed = Instant::now();
    a.kill9();
    let delivered = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    let took = killed.elapsed();
    let records = b.records();
    let first_ms = records
        .iter()
        .map(|r| r.delivered_us.saturating_sub(killed_us) / 1000)
        .min()
        .unwrap_or(u64::MAX);
    let last_ms = records
        .iter()
        .map(|r| r.delivered_us.saturating_sub(killed_us) / 1000)
        .max()
        .unwrap_or(u64::MAX);
    assert_eq!(
        delivered.by_node.get("b"),
        Some(&ROUND),
        "b delivered the whole round: {delivered:?}"
    );
    assert!(
        last_ms <= LEASE_MS + SLACK_MS,
        "the round took {last_ms} ms after the kill (lease {LEASE_MS} ms; checked after {took:?})"
    );
    // a had begun each send and never recorded an outcome: b cannot know whether the user got
    // it, so every copy says it may be a repeat.
    assert_eq!(
        delivered.marked, ROUND,
        "every taken-over send is marked {REPEAT_MARK:?}: {records:?}"
    );
    ha::wait_idle(&[&b]);
    for id in receipts.values() {
        let alert = b.host.api(&format!("/api/v1/alerts/{id}"));
        assert_eq!(alert["state"], "finished", "{alert}");
        assert_eq!(alert["recipients"][0]["outcome"], "delivered", "{alert}");
    }

    // a comes back (its sink working now): the round is b's and finished, a sends none of it,
    // and a takes and delivers new alerts.
    a.reconfigure(&lease);
    a.restart();
    let key = "after-restart".to_owned();
    let id = ha::post_now(&a.hook_url(), &key, ha::OPS);
    wait_until("a to deliver a new alert", LONG, || {
        a.records().iter().any(|r| r.key == key)
    });
    receipts.insert(key, id);
    let after = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    assert_eq!(
        after.by_node.get("a"),
        Some(&1),
        "a sent only the new alert: {:?}",
        a.records()
    );
    eprintln!(
        "ha failover ({:.1?}): lease {LEASE_MS} ms; a killed holding {ROUND} sends; b's first delivery {first_ms} ms \
         and last {last_ms} ms after the kill, all {} marked as repeats; a restarted sent none of them again",
        started.elapsed(),
        delivered.marked
    );
}
