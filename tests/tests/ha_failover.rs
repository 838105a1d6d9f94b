//! Failover: two real hosts on one PostgreSQL; host `a` holds a round of deliveries (its sink
//! hangs mid-send) and is SIGKILLed → host `b` takes them over within the lease of `a`'s last
//! renewal of each and delivers them, marked as repeats (`a` had begun sending them); while `a`
//! lived and renewed its lease, `b` took nothing; `a`, restarted, does not send them again.
//!
//! The take-over is timed by the database, not by the test: a trigger notes each row's change
//! of owner with its `lease_until` before and after. Both are written as "now + lease" (the
//! old one by `a`'s last renewal, the new one by `b`'s claim), so their difference is how long
//! after `a`'s last renewal `b` took the row, whatever the load on the test's machine.

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
const LEASE_MS: u64 = 3000;
/// What the survivor may take beyond the lease on a loaded 2-core machine, from the kill to its
/// last delivery: its claim, the start of its round, the sink calls.
const SLACK_MS: u64 = 3000;

/// Notes every change of an alert's owner (test-only: the trigger lives in the test's
/// database).
const NOTE_TAKEOVERS: &str = "
CREATE TABLE takeovers (id int8, from_owner text, to_owner text,
                        old_until timestamptz, new_until timestamptz);
CREATE FUNCTION note_takeover() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO takeovers VALUES (NEW.id, OLD.owner, NEW.owner, OLD.lease_until, NEW.lease_until);
  RETURN NEW;
END $$;
CREATE TRIGGER note_takeover AFTER UPDATE ON ab_alerts FOR EACH ROW
  WHEN (OLD.owner IS DISTINCT FROM NEW.owner) EXECUTE FUNCTION note_takeover();";

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
    // The hosts have created the schema.
    db.sql(NOTE_TAKEOVERS);

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
    assert_eq!(
        db.sql("SELECT count(*) FROM takeovers"),
        "0",
        "b took rows over while a was alive and renewing"
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
    // Each row taken over within the lease of a's last renewal of it (the old lease task took
    // a row only once its lease had run out, then up to a quarter lease later).
    let taken = db.sql(
        "SELECT count(*), max((extract(epoch FROM new_until - old_until) * 1000)::int8)
         FROM takeovers WHERE from_owner = 'a' AND to_owner = 'b'",
    );
    let (count, after_renewal_ms) = taken
        .split_once('|')
        .map(|(c, g)| (c.parse::<usize>(), g.parse::<u64>()))
        .unwrap_or_else(|| panic!("takeovers: {taken}"));
    assert_eq!(count, Ok(ROUND), "each row taken over once: {taken}");
    let after_renewal_ms = after_renewal_ms.unwrap_or(u64::MAX);
    assert!(
        after_renewal_ms < LEASE_MS,
        "b took a row over {after_renewal_ms} ms after a's last renewal of it (lease {LEASE_MS} ms)"
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
        "ha failover ({:.1?}): lease {LEASE_MS} ms; a killed holding {ROUND} sends; b took them over at most \
         {after_renewal_ms} ms after a's last renewal; b's first delivery {first_ms} ms and last {last_ms} ms \
         after the kill, all {} marked as repeats; a restarted sent none of them again",
        started.elapsed(),
        delivered.marked
    );
}
