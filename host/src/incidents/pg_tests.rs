//! Two engines on one real PostgreSQL database (`ALERTBRIDGE_TEST_POSTGRES_URL`; skipped with
//! one line without it), as two hosts sharing it: a due step pages once, an ack on one host
//! stops the other's timer, the same ack at both is taken once, a step due on a dead host fires
//! once on the survivor (a page it recorded but never handed too), one incident per dedup key,
//! a remembered resolve seen by the other host and used once when both use it at once, and
//! the database away: clear errors, the timer catches up after; pages of incidents read with
//! `LIMIT`, newest first, all, open or resolved.
//!
//! The engines' clocks are set apart instead of waiting: an engine started "later" sees the
//! step due, and its timer pass ([`Engine::tick`]) is called directly.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::Alert;

use super::{engine::HANDOVER, *};
use crate::queue::postgres::tests::TestDb;

const MIN: i64 = 60_000;

/// Every page handed, by any engine: (page key, users). No dedup: a page handed twice shows.
#[derive(Default)]
struct Handed {
    pages: Mutex<Vec<(String, Vec<String>)>>,
    /// Refuse every page while set (a host that dies before it hands).
    refuse: Mutex<bool>,
}

impl Handed {
    fn keys(&self) -> Vec<String> {
        let pages = self.pages.lock().unwrap();
        pages.iter().map(|(k, _)| k.clone()).collect()
    }

    fn users(&self) -> Vec<String> {
        let pages = self.pages.lock().unwrap();
        pages.iter().map(|(_, u)| u.join(",")).collect()
    }
}

struct HandedPager(Arc<Handed>);

impl Pager for HandedPager {
    fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>> {
        let r = if *self.0.refuse.lock().unwrap() {
            Err(PagerError {
                reason: "the host is going down".into(),
            })
        } else {
            let n = req.users.len();
            self.0.pages.lock().unwrap().push((req.key, req.users));
            Ok(n)
        };
        Box::pin(async move { r })
    }
}

fn policy() -> EscalationPolicy {
    let level = |u: &str, after_secs| Level {
        groups: vec![],
        users: vec![u.to_owned()],
        after_secs,
    };
    EscalationPolicy {
        name: "ops".into(),
        repeat: 0,
        ack_timeout_secs: 0,
        levels: vec![level("alice", 0), level("bob", 60), level("carol", 600)],
    }
}

/// A host's engine on the database, its clock `ahead_ms` past now.
async fn host(db: &TestDb, handed: &Arc<Handed>, ahead_ms: i64) -> Engine {
    let store = PgIncidents::open(&db.url).await.expect("store opens");
    Engine::open(
        Arc::new(store),
        Arc::new(HandedPager(Arc::clone(handed))),
        vec![policy()],
        Clock::starting_at(crate::model::now_ms() + ahead_ms),
    )
    .expect("engine opens")
}

fn alert(key: &str) -> Alert {
    let mut a = Alert::new("Disk full on db1");
    a.dedup_key = Some(key.to_owned());
    a
}

async fn open(engine: &Engine, alert_id: u64, key: &str) -> Opened {
    engine
        .open_or_join(alert_id, "am", &alert(key), "critical", "ops", true)
        .await
        .expect("incident opens")
}

#[tokio::test]
async fn a_due_step_is_paged_once_by_two_hosts() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let first = host(&db, &handed, 0).await;
    let o = open(&first, 1, "disk").await;
    assert_eq!(handed.users(), ["alice"]);
    // Two hosts, both past level 2's wait, run their timers at once.
    let (a, b) = (
        host(&db, &handed, 2 * MIN).await,
        host(&db, &handed, 2 * MIN).await,
    );
    tokio::join!(a.tick(), b.tick());
    tokio::join!(a.tick(), b.tick());
    assert_eq!(handed.users(), ["alice", "bob"], "bob paged once");
    let inc = b.get(o.id).await.expect("incident");
    assert_eq!((inc.pages.len(), inc.level()), (2, 2));
    assert!(inc.pages.iter().all(|p| p.handed));
}

#[tokio::test]
async fn an_ack_on_one_host_stops_the_other_hosts_timer() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let a = host(&db, &handed, 0).await;
    let o = open(&a, 1, "disk").await;
    let b = host(&db, &handed, 2 * MIN).await;
    let (_, fresh) = a.ack(o.id, "alice").await.expect("ack");
    assert!(fresh);
    // Host B shows host A's ack at once (it reads the database).
    let seen = b.get(o.id).await.expect("incident");
    assert_eq!(seen.state, IncidentState::Acknowledged);
    assert_eq!(
        b.page(PageState::All, None, 1).await[0]
            .acked
            .as_ref()
            .map(|m| m.by.as_str()),
        Some("alice")
    );
    b.tick().await;
    assert_eq!(handed.users(), ["alice"], "bob not paged after alice's ack");
}

#[tokio::test]
async fn the_same_ack_at_both_hosts_is_taken_once() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let a = host(&db, &handed, 0).await;
    let o = open(&a, 1, "disk").await;
    let b = host(&db, &handed, 0).await;
    let (ra, rb) = tokio::join!(a.ack(o.id, "alice"), b.ack(o.id, "alice"));
    let (ra, rb) = (ra.expect("ack at A").1, rb.expect("ack at B").1);
    assert!(ra ^ rb, "exactly one ack is new: A {ra}, B {rb}");
    // Again later, at either: "already acknowledged".
    assert!(!a.ack(o.id, "alice").await.expect("ack").1);
    assert!(!b.ack(o.id, "alice").await.expect("ack").1);
    b.resolve(o.id, "alice").await.expect("resolve");
    assert!(matches!(
        a.resolve(o.id, "alice").await,
        Err(IncidentError::AlreadyResolved(_))
    ));
}

#[tokio::test]
async fn a_step_due_on_a_dead_host_fires_once_on_the_survivor() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    // Both hosts run; A opens the incident, then dies.
    let survivor = host(&db, &handed, 2 * MIN).await;
    let dead = host(&db, &handed, 0).await;
    let o = open(&dead, 1, "disk").await;
    drop(dead);
    survivor.tick().await;
    survivor.tick().await;
    assert_eq!(
        handed.users(),
        ["alice", "bob"],
        "bob paged once by the survivor"
    );
    let inc = survivor.get(o.id).await.expect("incident");
    assert_eq!(inc.level(), 2);
}

#[tokio::test]
async fn a_page_recorded_by_a_dead_host_is_handed_once_by_the_survivor() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let survivor_at = i64::try_from(HANDOVER.as_millis()).unwrap() + 1000;
    let survivor = host(&db, &handed, survivor_at).await;
    let dead = host(&db, &handed, 0).await;
    *handed.refuse.lock().unwrap() = true;
    let o = open(&dead, 1, "disk").await;
    drop(dead);
    *handed.refuse.lock().unwrap() = false;
    assert!(handed.keys().is_empty());
    survivor.tick().await;
    survivor.tick().await;
    assert_eq!(handed.keys(), [format!("incident/{}/page/1", o.id.0)]);
    let inc = survivor.get(o.id).await.expect("incident");
    assert!(inc.pages[0].handed);
}

#[tokio::test]
async fn one_open_incident_per_dedup_key_across_hosts() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let (a, b) = (host(&db, &handed, 0).await, host(&db, &handed, 0).await);
    let (oa, ob) = tokio::join!(open(&a, 1, "disk"), open(&b, 2, "disk"));
    assert_eq!(oa.id, ob.id, "one incident");
    assert!(oa.joined ^ ob.joined, "one opened it, the other joined");
    let inc = a.get(oa.id).await.expect("incident");
    assert_eq!((inc.seen, inc.alert_ids.len()), (2, 2));
    assert_eq!(handed.users(), ["alice"], "paged once");
    // Taken again after a crash, at the other host: the same incident.
    let again = b
        .take_alert(1, 0, "am", &alert("disk"), "critical", "ops", true)
        .await
        .expect("taken");
    assert_eq!(again.id, oa.id);
    assert_eq!(a.page(PageState::All, None, 10).await.len(), 1);
}

#[tokio::test]
async fn a_resolve_remembered_on_one_host_resolves_the_alert_opening_on_the_other() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let (a, b) = (host(&db, &handed, 0).await, host(&db, &handed, 0).await);
    let accepted = crate::model::now_ms() - 1000;
    assert!(
        b.resolve_by_key("disk", "am")
            .await
            .expect("resolve")
            .is_none()
    );
    let o = a
        .take_alert(7, accepted, "am", &alert("disk"), "critical", "ops", true)
        .await
        .expect("taken");
    let inc = a.get(o.id).await.expect("incident");
    assert_eq!(inc.state, IncidentState::Resolved);
    assert!(handed.keys().is_empty(), "nobody paged");
}

/// Issue 15: the remembered resolve was read by both hosts and consumed after each stored its
/// incident, so two alerts opening at once on two hosts both opened resolved by it. It
/// resolves one; the other alert opens its incident as if nothing was remembered (as on one
/// host) and pages.
#[tokio::test]
async fn a_remembered_resolve_used_by_two_hosts_at_once_resolves_one_incident() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let (a, b) = (host(&db, &handed, 0).await, host(&db, &handed, 0).await);
    let accepted = crate::model::now_ms() - 1000;
    // Several keys, so that the hosts meet on the remembered resolve at least once.
    const KEYS: u64 = 5;
    for k in 0..KEYS {
        let key = format!("disk{k}");
        assert!(
            b.resolve_by_key(&key, "am")
                .await
                .expect("resolve")
                .is_none()
        );
        let firing = alert(&key);
        let (oa, ob) = tokio::join!(
            a.take_alert(10 + 2 * k, accepted, "am", &firing, "critical", "ops", true),
            b.take_alert(11 + 2 * k, accepted, "am", &firing, "critical", "ops", true),
        );
        let (oa, ob) = (
            oa.expect("a takes its alert"),
            ob.expect("b takes its alert"),
        );
        assert_ne!(oa.id, ob.id, "{key}: two alerts, two incidents");
        let states: Vec<IncidentState> = [oa.id, ob.id]
            .into_iter()
            .map(|id| db_state(&db, id))
            .collect();
        assert_eq!(
            states
                .iter()
                .filter(|s| **s == IncidentState::Resolved)
                .count(),
            1,
            "{key}: one incident resolved by the one remembered resolve: {states:?}"
        );
    }
    assert_eq!(
        handed.users(),
        vec!["alice"; KEYS as usize],
        "each key's other incident paged"
    );
    assert_eq!(db.one("SELECT count(*) FROM ab_early_resolves"), "0");
}

/// The incident's state as the database has it.
fn db_state(db: &TestDb, id: IncidentId) -> IncidentState {
    let doc = db.one(&format!("SELECT doc FROM ab_incidents WHERE id = {}", id.0));
    serde_json::from_str::<Incident>(&doc)
        .expect("incident decodes")
        .state
}

#[tokio::test]
async fn the_database_away_fails_changes_clearly_and_the_timer_catches_up() {
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let a = host(&db, &handed, 0).await;
    let o = open(&a, 1, "disk").await;
    let b = host(&db, &handed, 2 * MIN).await;
    db.go_down();
    let e = a.ack(o.id, "alice").await.expect_err("no database");
    let text = crate::error_chain(&e);
    assert!(text.starts_with("incident storage failed"), "{text}");
    b.tick().await;
    assert_eq!(handed.users(), ["alice"]);
    db.come_back();
    let deadline = Instant::now() + Duration::from_secs(20);
    while handed.users().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "bob never paged after the database came back"
        );
        b.tick().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.tick().await;
    assert_eq!(handed.users(), ["alice", "bob"], "bob paged once");
    let (_, fresh) = a
        .ack(o.id, "alice")
        .await
        .expect("ack after the database is back");
    assert!(fresh);
}

/// Pages come from the database newest first, one `LIMIT` read each, resolved or not or of one
/// state: host B pages through what host A opened and resolved; once every incident but the
/// oldest is resolved, that one is still the first open one.
#[tokio::test]
async fn pages_of_incidents_come_newest_first_from_the_database() {
    use PageState::{All, Open, Resolved};
    let Some(db) = TestDb::new() else { return };
    let handed = Arc::new(Handed::default());
    let (a, b) = (host(&db, &handed, 0).await, host(&db, &handed, 0).await);
    for n in 1..=5 {
        open(&a, n, &format!("disk{n}")).await;
    }
    a.resolve(IncidentId(4), "alice").await.expect("resolve");
    let ids = |page: Vec<Incident>| page.iter().map(|i| i.id.0).collect::<Vec<_>>();
    assert_eq!(ids(b.page(All, None, 2).await), [5, 4]);
    assert_eq!(ids(b.page(All, Some(IncidentId(4)), 2).await), [3, 2]);
    assert_eq!(ids(b.page(All, Some(IncidentId(2)), 2).await), [1]);
    assert!(b.page(All, Some(IncidentId(1)), 2).await.is_empty());
    assert_eq!(ids(b.page(All, None, 50).await), [5, 4, 3, 2, 1]);
    assert_eq!(ids(b.page(All, Some(IncidentId(u64::MAX)), 1).await), [5]);
    assert_eq!(ids(b.page(Open, None, 2).await), [5, 3]);
    assert_eq!(ids(b.page(Open, Some(IncidentId(3)), 2).await), [2, 1]);
    assert_eq!(ids(b.page(Resolved, None, 50).await), [4]);
    assert_eq!(ids(b.open_incidents().await), [5, 3, 2, 1]);

    for n in [2, 3, 5] {
        a.resolve(IncidentId(n), "alice").await.expect("resolve");
    }
    assert_eq!(ids(b.page(Open, None, 2).await), [1]);
    assert_eq!(ids(b.page(Resolved, None, 2).await), [5, 4]);
    assert_eq!(ids(b.page(Resolved, Some(IncidentId(4)), 5).await), [3, 2]);
}
