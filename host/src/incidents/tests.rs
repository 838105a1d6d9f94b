//! Engine tests on tokio's paused clock: levels on time, repeat, ack stops, ack timeout, join
//! by dedup key, resolve from the source, passing an unreachable level, escalate now, and a
//! restart with a due step (memory and redb stores) that fires once; delivery feedback (an alert
//! taken once, repeats joining, a level nobody got passed at once); pages of incidents, all, open
//! or resolved (memory and redb, the engine's copies and the store's own read). [`Asked`] notes what a shared store
//! is asked (the reply and metrics tests use it too).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use alertbridge_plugin_api::Alert;
use tokio_util::sync::CancellationToken;

use super::{store::Query, *};

const T0: i64 = 1_800_000_000_000;

/// (engine ms, page key, users, text)
type Sent = (i64, String, Vec<String>, String);

/// A pager like the host's queue: de-duplicates on the page key, records what it delivered and
/// when (engine clock ms), can refuse the next N pages and answer 0 reachable for some users.
#[derive(Default)]
struct TestPager {
    sent: Mutex<Vec<Sent>>,
    keys: Mutex<BTreeSet<String>>,
    refuse: Mutex<u32>,
    offline: Mutex<BTreeSet<String>>,
    clock: Mutex<Option<Clock>>,
}

impl TestPager {
    fn users_paged(&self) -> Vec<(i64, String)> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .map(|(t, _, u, _)| (t - T0, u.join(",")))
            .collect()
    }
}

struct Shared(Arc<TestPager>);

impl Pager for Shared {
    fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>> {
        let p = &self.0;
        let r = (|| {
            let mut refuse = p.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err(PagerError {
                    reason: "queue unavailable".into(),
                });
            }
            let now = p.clock.lock().unwrap().expect("clock").now_ms();
            if p.keys.lock().unwrap().insert(req.key.clone()) {
                p.sent.lock().unwrap().push((
                    now,
                    req.key.clone(),
                    req.users.clone(),
                    req.text.clone(),
                ));
            }
            let offline = p.offline.lock().unwrap();
            Ok(req.users.iter().filter(|u| !offline.contains(*u)).count())
        })();
        Box::pin(async move { r })
    }
}

fn level(user: &str, after_secs: u64) -> Level {
    Level {
        groups: vec![],
        users: vec![format!("sip:{user}@contoso.com")],
        after_secs,
    }
}

fn policy(repeat: u32, ack_timeout_secs: u64, levels: Vec<Level>) -> EscalationPolicy {
    EscalationPolicy {
        name: "ops".into(),
        repeat,
        ack_timeout_secs,
        levels,
    }
}

fn three_levels() -> EscalationPolicy {
    policy(
        0,
        0,
        vec![level("alice", 0), level("bob", 300), level("carol", 900)],
    )
}

struct Run {
    engine: Engine,
    pager: Arc<TestPager>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_on(
    store: Arc<dyn IncidentStore>,
    pager: Arc<TestPager>,
    pol: EscalationPolicy,
    wall: i64,
) -> Run {
    let clock = Clock::starting_at(wall);
    *pager.clock.lock().unwrap() = Some(clock);
    let engine = Engine::open(
        store,
        Arc::new(Shared(Arc::clone(&pager))),
        vec![pol],
        clock,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(engine.clone().run(stop.clone()));
    Run {
        engine,
        pager,
        stop,
        task,
    }
}

fn start(pol: EscalationPolicy) -> Run {
    start_on(
        Arc::new(MemoryIncidents::default()),
        Arc::default(),
        pol,
        T0,
    )
}

fn alert(subject: &str, key: Option<&str>) -> Alert {
    let mut a = Alert::new(subject);
    a.dedup_key = key.map(str::to_owned);
    a
}

async fn open(run: &Run, id: u64, key: Option<&str>) -> Opened {
    run.engine
        .open_or_join(
            id,
            "am",
            &alert("Disk full on db1", key),
            "critical",
            "ops",
            true,
        )
        .await
        .unwrap()
}

async fn wait(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

mod resolve_race;

fn at(secs: i64, who: &str) -> (i64, String) {
    (secs * 1000, format!("sip:{who}@contoso.com"))
}

#[tokio::test(start_paused = true)]
async fn levels_are_paged_on_time_and_stop_after_the_last() {
    let run = start(three_levels());
    let o = open(&run, 1, Some("k")).await;
    assert_eq!((o.id, o.joined), (IncidentId(1), false));
    assert_eq!(run.pager.users_paged(), vec![at(0, "alice")]);
    wait(299).await;
    assert_eq!(run.pager.users_paged().len(), 1, "level 2 before its wait");
    wait(2).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(300, "bob")]
    );
    wait(3600).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(300, "bob"), at(900, "carol")]
    );
    let inc = run.engine.get(o.id).await.unwrap();
    assert_eq!(
        (inc.state, inc.level(), inc.next),
        (IncidentState::Open, 3, None)
    );
    let text = run.pager.sent.lock().unwrap()[0].3.clone();
    assert_eq!(
        text,
        "[#1] Disk full on db1 — reply `ack 1`, `resolve 1` or `esc 1`"
    );
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn repeat_runs_the_levels_again_then_stays_open() {
    let run = start(policy(1, 0, vec![level("alice", 0), level("bob", 120)]));
    open(&run, 1, None).await;
    wait(10_000).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![
            at(0, "alice"),
            at(120, "bob"),
            at(240, "alice"),
            at(360, "bob")
        ]
    );
    let inc = run.engine.get(IncidentId(1)).await.unwrap();
    assert_eq!(
        (inc.state, inc.pages.len(), inc.pages[3].round),
        (IncidentState::Open, 4, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn ack_stops_the_levels_and_resolve_ends_it() {
    let run = start(three_levels());
    let o = open(&run, 1, None).await;
    let mut events = run.engine.subscribe();
    wait(100).await;
    let (inc, changed) = run.engine.ack(o.id, "sip:alice@contoso.com").await.unwrap();
    assert!(changed);
    assert_eq!(inc.acked.as_ref().unwrap().at_ms, T0 + 100_000);
    assert!(
        !run.engine.ack(o.id, "sip:bob@contoso.com").await.unwrap().1,
        "second ack changes nothing"
    );
    wait(5000).await;
    assert_eq!(run.pager.users_paged(), vec![at(0, "alice")]);
    run.engine
        .resolve(o.id, "sip:alice@contoso.com")
        .await
        .unwrap();
    assert!(matches!(
        run.engine.resolve(o.id, "x").await,
        Err(IncidentError::AlreadyResolved(_))
    ));
    assert!(matches!(
        run.engine.ack(IncidentId(9), "x").await,
        Err(IncidentError::Unknown(_))
    ));
    assert_eq!(
        events.recv().await.unwrap(),
        IncidentEvent::Acknowledged {
            id: o.id,
            by: "sip:alice@contoso.com".into()
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        IncidentEvent::Resolved {
            id: o.id,
            by: "sip:alice@contoso.com".into()
        }
    );
    assert!(
        run.engine
            .open_for_user("sip:alice@contoso.com")
            .await
            .is_empty()
    );
}

#[tokio::test(start_paused = true)]
async fn an_ack_that_runs_out_pages_again_and_the_levels_go_on() {
    let run = start(policy(0, 600, vec![level("alice", 0), level("bob", 300)]));
    let o = open(&run, 1, None).await;
    wait(10).await;
    run.engine.ack(o.id, "sip:alice@contoso.com").await.unwrap();
    wait(599).await;
    assert_eq!(run.pager.users_paged().len(), 1);
    wait(2).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(610, "alice")]
    );
    let inc = run.engine.get(o.id).await.unwrap();
    assert_eq!((inc.state, inc.acked.clone()), (IncidentState::Open, None));
    wait(300).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(610, "alice"), at(910, "bob")]
    );
}

#[tokio::test(start_paused = true)]
async fn alerts_with_the_same_key_join_the_open_incident() {
    let run = start(three_levels());
    let a = open(&run, 1, Some("fp1")).await;
    let b = open(&run, 2, Some("fp1")).await;
    let c = open(&run, 3, Some("fp1")).await;
    let again = open(&run, 3, Some("fp1")).await;
    let other = open(&run, 4, Some("fp2")).await;
    assert_eq!((b.id, b.joined, c.seen, again.seen), (a.id, true, 3, 3));
    assert_ne!(other.id, a.id);
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(0, "alice")],
        "one page per incident"
    );
    let inc = run.engine.get(a.id).await.unwrap();
    assert_eq!((inc.seen, inc.alert_ids.clone()), (3, vec![1, 2, 3]));
    // after it is resolved, the key opens a new incident
    run.engine.resolve(a.id, "x").await.unwrap();
    let d = open(&run, 5, Some("fp1")).await;
    assert!(!d.joined);
    assert_ne!(d.id, a.id);
}

#[tokio::test(start_paused = true)]
async fn a_resolved_alert_resolves_the_incident_with_its_key() {
    let run = start(three_levels());
    let o = open(&run, 1, Some("fp1")).await;
    wait(60).await;
    let inc = run
        .engine
        .resolve_by_key("fp1", "Alertmanager")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((inc.id, inc.state), (o.id, IncidentState::Resolved));
    assert_eq!(inc.resolved.unwrap().by, "Alertmanager");
    assert!(
        run.engine
            .resolve_by_key("fp1", "Alertmanager")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        run.engine
            .resolve_by_key("nope", "Alertmanager")
            .await
            .unwrap()
            .is_none()
    );
    wait(5000).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice")],
        "no level after the resolve"
    );
}

#[tokio::test(start_paused = true)]
async fn a_level_with_nobody_reachable_is_passed_at_once() {
    let pager = Arc::new(TestPager::default());
    pager
        .offline
        .lock()
        .unwrap()
        .insert("sip:alice@contoso.com".into());
    let run = start_on(
        Arc::new(MemoryIncidents::default()),
        pager,
        three_levels(),
        T0,
    );
    let o = open(&run, 1, None).await;
    assert_eq!(run.pager.users_paged(), vec![at(0, "alice"), at(0, "bob")]);
    let inc = run.engine.get(o.id).await.unwrap();
    assert_eq!(
        inc.next.unwrap().due_ms,
        T0 + 600_000,
        "level 3 after its wait from level 2"
    );
    // without the skip policy the level waits
    let o2 = run
        .engine
        .open_or_join(2, "am", &alert("x", None), "r", "ops", false)
        .await
        .unwrap();
    assert_eq!(run.engine.get(o2.id).await.unwrap().pages.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn escalate_now_pages_the_next_level_and_shifts_the_rest() {
    let run = start(three_levels());
    let o = open(&run, 1, None).await;
    wait(10).await;
    run.engine.ack(o.id, "sip:alice@contoso.com").await.unwrap();
    let (_, changed) = run
        .engine
        .escalate_now(o.id, "sip:alice@contoso.com")
        .await
        .unwrap();
    assert!(changed);
    wait(599).await;
    assert_eq!(run.pager.users_paged().len(), 2);
    wait(2).await;
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(10, "bob"), at(610, "carol")]
    );
    assert!(
        !run.engine.escalate_now(o.id, "x").await.unwrap().1,
        "no level left"
    );
}

/// Down from 100 s to 1000 s; level 2 was due at 300 s: it fires once at start, level 3 600 s
/// later, and a third start fires nothing again.
async fn restart_fires_a_due_step_once(store: Arc<dyn IncidentStore>) {
    let pager = Arc::new(TestPager::default());
    let run = start_on(Arc::clone(&store), Arc::clone(&pager), three_levels(), T0);
    let o = open(&run, 1, None).await;
    wait(100).await;
    run.stop.cancel();
    run.task.await.unwrap();
    drop(run.engine);

    let run = start_on(
        Arc::clone(&store),
        Arc::clone(&pager),
        three_levels(),
        T0 + 1_000_000,
    );
    wait(1).await;
    assert_eq!(pager.users_paged(), vec![at(0, "alice"), at(1000, "bob")]);
    wait(598).await;
    assert_eq!(pager.users_paged().len(), 2);
    wait(2).await;
    assert_eq!(
        pager.users_paged(),
        vec![at(0, "alice"), at(1000, "bob"), at(1600, "carol")]
    );
    run.stop.cancel();
    run.task.await.unwrap();
    drop(run.engine);

    let run = start_on(store, Arc::clone(&pager), three_levels(), T0 + 5_000_000);
    wait(10_000).await;
    assert_eq!(pager.users_paged().len(), 3, "nothing fires twice");
    assert_eq!(run.engine.get(o.id).await.unwrap().pages.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn restart_with_a_due_step_fires_it_once_memory() {
    restart_fires_a_due_step_once(Arc::new(MemoryIncidents::default())).await;
}

#[tokio::test(start_paused = true)]
async fn restart_with_a_due_step_fires_it_once_redb() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbIncidents::open(dir.path()).unwrap());
    restart_fires_a_due_step_once(store).await;
}

#[tokio::test(start_paused = true)]
async fn a_page_recorded_but_not_handed_is_handed_once_after_a_restart() {
    let store: Arc<dyn IncidentStore> = Arc::new(MemoryIncidents::default());
    let pager = Arc::new(TestPager::default());
    *pager.refuse.lock().unwrap() = u32::MAX;
    let run = start_on(Arc::clone(&store), Arc::clone(&pager), three_levels(), T0);
    let o = open(&run, 1, None).await;
    assert!(pager.users_paged().is_empty());
    let inc = run.engine.get(o.id).await.unwrap();
    assert!(!inc.pages[0].handed, "recorded, not handed");
    wait(5).await;
    assert!(
        pager.users_paged().is_empty(),
        "offered again while refused"
    );
    run.stop.cancel();
    run.task.await.unwrap();
    drop(run.engine);
    *pager.refuse.lock().unwrap() = 0;

    let run = start_on(store, Arc::clone(&pager), three_levels(), T0 + 50_000);
    wait(1).await;
    assert_eq!(pager.users_paged(), vec![at(50, "alice")]);
    assert!(run.engine.get(o.id).await.unwrap().pages[0].handed);
    wait(100).await;
    assert_eq!(pager.users_paged().len(), 1);
}

#[test]
fn policies_are_checked() {
    let known = |g: &str| g == "ops";
    assert!(three_levels().check(known).is_ok());
    let bad = |levels| policy(0, 0, levels).check(known).unwrap_err().to_string();
    assert_eq!(bad(vec![]), "escalation `ops` has no levels");
    assert!(bad(vec![level("a", 5)]).contains("must have after_secs = 0"));
    assert!(bad(vec![level("a", 0), level("b", 0)]).contains("waits must increase"));
    let mut empty = level("a", 0);
    empty.users.clear();
    assert!(bad(vec![empty]).contains("pages nobody"));
    let mut g = level("a", 0);
    g.groups = vec!["nope".into()];
    assert!(bad(vec![g]).contains("unknown group `nope`"));
    let u = Level {
        groups: vec![],
        users: vec!["alice".into()],
        after_secs: 0,
    };
    assert!(bad(vec![u]).contains("user `alice`"));
}

/// Real clock, redb store: from level 2's due time to the pager's call (printed; bounded).
#[tokio::test]
async fn level_two_is_handed_soon_after_its_due_time_on_the_real_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbIncidents::open(dir.path()).unwrap());
    let pol = policy(0, 0, vec![level("alice", 0), level("bob", 1)]);
    let run = start_on(store, Arc::default(), pol, crate::model::now_ms());
    let o = open(&run, 1, None).await;
    let due = run.engine.get(o.id).await.unwrap().next.unwrap().due_ms;
    let mut events = run.engine.subscribe();
    loop {
        if let IncidentEvent::Paged { level: 2, .. } = events.recv().await.unwrap() {
            break;
        }
    }
    let sent = run.pager.sent.lock().unwrap()[1].0;
    let late = sent - due;
    eprintln!("level 2 handed {late} ms after its due time");
    assert!((0..1000).contains(&late), "{late} ms");
}

#[tokio::test(start_paused = true)]
async fn delivery_feedback_takes_an_alert_once_joins_repeats_and_passes_a_level_nobody_got() {
    let run = start(three_levels());
    // An alert taken again (after a crash, before its record was saved): the same incident.
    let a = alert("Disk full on db1", None);
    let take = || {
        run.engine
            .take_alert(7, T0 - 5, "am", &a, "critical", "ops", true)
    };
    let first = take().await.unwrap();
    let again = take().await.unwrap();
    assert_eq!((first.id, again.id), (IncidentId(1), IncidentId(1)));
    assert_eq!(run.engine.page(PageState::All, None, 10).await.len(), 1);

    // A repeat of an open incident's key joins it ("seen 2"); an unknown key finds nothing.
    let k = open(&run, 8, Some("k")).await;
    let joined = run.engine.join_by_key("k").await.unwrap();
    assert_eq!(joined.map(|i| (i.id, i.seen)), Some((k.id, 2)));
    assert!(run.engine.join_by_key("other").await.unwrap().is_none());

    // Delivery: level 1 of #1 reached someone (nothing happens); level 1 of #2 reached nobody
    // (its route skips the offline): level 2 is paged at once, and told again (a page
    // finished twice across a restart) nothing more happens.
    run.engine.page_reached(first.id, 1, 1).await.unwrap();
    run.engine.page_reached(k.id, 1, 0).await.unwrap();
    run.engine.page_reached(k.id, 1, 0).await.unwrap();
    assert_eq!(
        run.pager.users_paged(),
        vec![at(0, "alice"), at(0, "alice"), at(0, "bob")]
    );
    let two = run.engine.get(k.id).await.unwrap();
    assert_eq!(two.pages[0].reachable, Some(0));
    assert_eq!(two.pages[1].reason, "nobody reachable at level 1");
    let one = run.engine.get(first.id).await.unwrap();
    assert_eq!((one.pages.len(), one.pages[0].reachable), (1, Some(1)));
    run.stop.cancel();
    run.task.await.unwrap();
}

/// The system clock the engine stamps a remembered resolve with never reads earlier than the
/// queue's `accepted_ms` taken before it: an early resolve must apply to the alert accepted
/// just before it. (It was a wall clock read once plus tokio's elapsed time, each cut to the
/// millisecond, so it ran up to 2 ms behind: a firing and a resolved alert of one
/// Alertmanager notification, handed over within a millisecond, paged for the resolved one.)
#[test]
fn the_system_clock_never_reads_behind_the_queues() {
    let clock = Clock::system();
    std::thread::sleep(Duration::from_micros(700));
    for _ in 0..20_000 {
        let accepted = crate::model::now_ms();
        assert!(clock.now_ms() >= accepted);
    }
}

/// A memory store that says it is shared, so the engine asks it for every read (as it asks
/// PostgreSQL), noting each query.
#[derive(Clone, Default)]
pub(crate) struct Asked {
    store: MemoryIncidents,
    queries: Arc<Mutex<Vec<Query>>>,
}

impl Asked {
    /// Whether every incident was asked for at once (an unbounded read).
    pub(crate) fn asked_for_all(&self) -> bool {
        self.asked(&Query::All)
    }

    pub(crate) fn asked(&self, query: &Query) -> bool {
        self.queries.lock().unwrap().contains(query)
    }
}

impl IncidentStore for Asked {
    fn load(&self) -> Result<Vec<Incident>, IncidentError> {
        self.store.load()
    }

    fn shared(&self) -> bool {
        true
    }

    fn query(
        &self,
        query: Query,
    ) -> BoxFuture<'static, Result<Vec<store::Versioned>, IncidentError>> {
        self.queries.lock().unwrap().push(query.clone());
        self.store.query(query)
    }

    fn save(&self, incident: &Incident) -> BoxFuture<'static, Result<(), IncidentError>> {
        self.store.save(incident)
    }
}

fn ids(incidents: &[Incident]) -> Vec<u64> {
    incidents.iter().map(|i| i.id.0).collect()
}

/// The ids of the page `query` names, as the store itself reads it.
async fn read_page(store: &dyn IncidentStore, query: Query) -> Vec<u64> {
    let read = store.query(query).await.unwrap();
    read.iter().map(|v| v.incident.id.0).collect()
}

/// Five incidents, #4 resolved: pages go newest first by id, resolved or not, from the engine
/// and from the store itself, and again after a restart; then #2, #3 and #5 resolved too: the
/// open ones are filtered before the page is cut, so #1, older than the newest page, is the
/// first open one.
async fn pages_go_newest_first(store: Arc<dyn IncidentStore>) {
    use PageState::{All, Open, Resolved};
    let run = start_on(Arc::clone(&store), Arc::default(), three_levels(), T0);
    for n in 1..=5 {
        open(&run, n, Some(&format!("k{n}"))).await;
    }
    run.engine.resolve(IncidentId(4), "alice").await.unwrap();
    let page =
        |state, before: Option<u64>, limit| run.engine.page(state, before.map(IncidentId), limit);
    assert_eq!(ids(&page(All, None, 2).await), [5, 4]);
    assert_eq!(ids(&page(All, Some(4), 2).await), [3, 2]);
    assert_eq!(ids(&page(All, Some(2), 2).await), [1]);
    assert!(page(All, Some(1), 2).await.is_empty());
    assert_eq!(ids(&page(All, None, 50).await), [5, 4, 3, 2, 1]);
    assert_eq!(ids(&page(Open, None, 2).await), [5, 3]);
    assert_eq!(ids(&page(Open, Some(3), 2).await), [2, 1]);
    assert_eq!(ids(&page(Resolved, None, 50).await), [4]);
    assert_eq!(ids(&run.engine.open_incidents().await), [5, 3, 2, 1]);
    let below_five = |state| Query::Page {
        state,
        before: Some(IncidentId(5)),
        limit: 3,
    };
    assert_eq!(read_page(&*store, below_five(All)).await, [4, 3, 2]);
    assert_eq!(read_page(&*store, below_five(Open)).await, [3, 2, 1]);
    assert_eq!(read_page(&*store, below_five(Resolved)).await, [4]);

    for n in [2, 3, 5] {
        run.engine.resolve(IncidentId(n), "alice").await.unwrap();
    }
    assert_eq!(ids(&page(All, None, 2).await), [5, 4]);
    assert_eq!(ids(&page(Open, None, 2).await), [1]);
    assert_eq!(ids(&page(Resolved, None, 2).await), [5, 4]);
    assert_eq!(ids(&page(Resolved, Some(4), 5).await), [3, 2]);
    run.stop.cancel();
    run.task.await.unwrap();
    let again = start_on(Arc::clone(&store), Arc::default(), three_levels(), T0);
    assert_eq!(
        ids(&again.engine.page(All, Some(IncidentId(5)), 3).await),
        [4, 3, 2]
    );
    assert_eq!(ids(&again.engine.page(Open, None, 2).await), [1]);
    assert_eq!(read_page(&*store, below_five(Open)).await, [1]);
    again.stop.cancel();
    again.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn pages_go_newest_first_memory() {
    pages_go_newest_first(Arc::new(MemoryIncidents::default())).await;
}

#[tokio::test(start_paused = true)]
async fn pages_go_newest_first_redb() {
    let dir = tempfile::tempdir().unwrap();
    pages_go_newest_first(Arc::new(RedbIncidents::open(dir.path()).unwrap())).await;
}

/// A shared store is asked for one page of the state asked, not for every incident.
#[tokio::test(start_paused = true)]
async fn a_shared_store_is_asked_for_a_page() {
    let asked = Asked::default();
    let run = start_on(Arc::new(asked.clone()), Arc::default(), three_levels(), T0);
    for n in 1..=3 {
        open(&run, n, Some(&format!("k{n}"))).await;
    }
    run.engine.resolve(IncidentId(2), "alice").await.unwrap();
    let open_page = run.engine.page(PageState::Open, Some(IncidentId(3)), 1);
    assert_eq!(ids(&open_page.await), [1]);
    let page = Query::Page {
        state: PageState::Open,
        before: Some(IncidentId(3)),
        limit: 1,
    };
    assert!(asked.asked(&page));
    assert!(!asked.asked_for_all());
    run.stop.cancel();
    run.task.await.unwrap();
}
