//! The database goes away under load: two real hosts on a PostgreSQL of the test's own, alerts
//! posted across both webhooks at a steady rate, and the server is stopped (fast shutdown,
//! sessions cut) and later killed outright (SIGKILL, WAL replay at the next start), each time
//! for a while. Meanwhile the webhooks answer 503 with `Retry-After` ("try later") and the hosts
//! stay up; once the server is back, every alert with a 202 is delivered — none lost, none twice
//! unmarked — without restarting a host. Run with a lease longer than the outages and with one
//! shorter (every lease lapses while the database is away).

use std::{sync::atomic::Ordering, time::Duration};

use alertbridge_plugin_api::REPEAT_MARK;
use alertbridge_testbed::{
    ha::{self, LONG, Load, Node, Options},
    harness::wait_until,
    postgres::Server,
    servers,
};

const ALERTS: usize = 3000;
const RATE: u32 = 400;
/// How long the database stays away each time.
const DOWN: Duration = Duration::from_millis(1500);

/// Away for less than the hosts' lease: each keeps its own alerts.
#[test]
fn the_database_restarted_within_the_lease_means_try_later_then_everything_delivered() {
    restart_under_load(10_000);
}

/// Away for longer than the lease: the leases run out while nobody can renew them, and once
/// the database is back each host may take over the other's alerts — which are then delivered
/// once, by their new owner, and the old owner lets them go.
#[test]
fn the_database_away_past_the_lease_means_try_later_then_everything_delivered() {
    restart_under_load(1000);
}

fn restart_under_load(lease_ms: u64) {
    // The shared test server says PostgreSQL is installed; this test runs its own, so that
    // stopping it disturbs no other test.
    if servers::postgres().is_none() {
        return;
    }
    let started = ha::started();
    let dir = ha::Scratch::new();
    let pg = Server::start(&dir.path().join("postgres"), false);
    let o = Options {
        lease_ms,
        ..Options::default()
    };
    let a = Node::start(dir.path(), "a", &pg.url, &o);
    let b = Node::start(dir.path(), "b", &pg.url, &o);

    let load = Load::start(&[a.hook_url(), b.hook_url()], "dbr", ALERTS, 8, Some(RATE));
    load.wait_accepted(ALERTS / 5);
    pg.stop();
    let refused_before = load.trouble.unavailable.load(Ordering::SeqCst);
    // While it is away the hosts say "try later", with a Retry-After, and stay up.
    wait_until("a 503 while the database is down", LONG, || {
        load.trouble.retry_after.load(Ordering::SeqCst) > refused_before
    });
    std::thread::sleep(DOWN);
    for node in [&a, &b] {
        let health = node.host.api("/healthz");
        assert_eq!(
            health["queue"]["up"], false,
            "{}: /healthz says the queue is down: {health}",
            node.name
        );
    }
    let during_first = load.accepted();
    pg.start_again();

    load.wait_accepted(ALERTS * 3 / 5);
    assert!(
        load.accepted() > during_first,
        "posting resumed after the restart"
    );
    pg.kill();
    std::thread::sleep(DOWN);
    pg.start_again();

    let summary = load.summary();
    let trouble = (
        load.trouble.connection_errors.load(Ordering::SeqCst),
        load.trouble.unavailable.load(Ordering::SeqCst),
        load.trouble.retry_after.load(Ordering::SeqCst),
    );
    let receipts = load.finish();
    assert_eq!(trouble.0, 0, "no host went away: {summary}");
    assert_eq!(
        trouble.1, trouble.2,
        "every 503 carried a Retry-After: {summary}"
    );

    ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    ha::wait_idle(&[&a, &b]);
    let delivered = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    for node in [&a, &b] {
        let health = node.host.api("/healthz");
        assert_eq!(health["queue"]["up"], true, "{}: {health}", node.name);
    }
    eprintln!(
        "ha database restart ({:.1?}, lease {lease_ms} ms): {} alerts with a 202 across 2 hosts at {RATE}/s while PostgreSQL was stopped once \
         and killed once ({DOWN:?} away each time); clients met {summary}; all delivered ({} IMs, {} marked repeats), \
         no host restarted",
        started.elapsed(),
        receipts.len(),
        delivered.records,
        delivered.marked,
    );
}
