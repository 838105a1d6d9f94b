//! Two real hosts on one PostgreSQL, a webhook on each: 10,000 alerts posted across both (as
//! through a load balancer: to the other host when one refuses the connection) while host `b`
//! is SIGKILLed three times and restarted. Every alert with a 202 reaches the test sink, under
//! the id its 202 named, and none arrives twice unmarked: a second copy (the sending host died
//! before recording the outcome, and a host took the alert up again) carries the repeat mark.

use alertbridge_plugin_api::REPEAT_MARK;
use alertbridge_testbed::{
    ha::{self, Load, Node, Options},
    postgres::Database,
    servers,
};

const ALERTS: usize = 10_000;
const CONNECTIONS: usize = 16;
/// Posts per second over all clients: the run lasts about 12 s, long enough for three kills
/// and restarts to land while alerts are being posted.
const RATE: u32 = 800;
const KILLS: usize = 3;
/// Short, so a killed host's deliveries are taken over quickly when it is slow to come back.
const LEASE_MS: u64 = 1000;

#[test]
fn two_hosts_one_killed_three_times_lose_no_accepted_alert_and_send_none_twice_unmarked() {
    let Some(server) = servers::postgres() else {
        return;
    };
    let db = Database::create(&server, "ha_crash");
    let started = ha::started();
    let dir = ha::Scratch::new();
    let o = Options {
        lease_ms: LEASE_MS,
        ..Options::default()
    };
    let a = Node::start(dir.path(), "a", &db.url, &o);
    let mut b = Node::start(dir.path(), "b", &db.url, &o);

    let load = Load::start(
        &[a.hook_url(), b.hook_url()],
        "crash",
        ALERTS,
        CONNECTIONS,
        Some(RATE),
    );
    // Kill b at random points of the run, each after a random number of 202s; it stays down a
    // random while (sometimes past its lease, so a takes its work over), then comes back.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| rand::random_range(ALERTS / 20..ALERTS * 3 / 10))
        .collect();
    points.sort_unstable();
    let mut kills_while_posting = 0;
    for point in points {
        load.wait_accepted(point);
        if load.accepted() < ALERTS {
            kills_while_posting += 1;
        }
        b.kill9();
        let down = rand::random_range(0..LEASE_MS + LEASE_MS / 4);
        std::thread::sleep(std::time::Duration::from_millis(down));
        b.restart();
    }
    let summary = load.summary();
    let receipts = load.finish();
    assert_eq!(
        kills_while_posting, KILLS,
        "every kill lands while alerts are being posted"
    );

    ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    ha::wait_idle(&[&a, &b]);
    let delivered = ha::check_deliveries(&[&a, &b], &receipts, REPEAT_MARK);
    eprintln!(
        "ha crash test ({:.1?}): {} alerts with a 202 across 2 hosts, {KILLS} SIGKILLs of b while posting; \
         clients met {summary}; {} deliveries (a {}, b {}), {} second copies all marked as repeats",
        started.elapsed(),
        receipts.len(),
        delivered.records,
        delivered.by_node.get("a").unwrap_or(&0),
        delivered.by_node.get("b").unwrap_or(&0),
        delivered.marked,
    );
}
