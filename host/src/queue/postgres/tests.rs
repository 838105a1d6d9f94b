//! The PostgreSQL queue against a real server (`ALERTBRIDGE_TEST_POSTGRES_URL`, as
//! `scripts/postgres.sh env` prints it): the backend contract ([`contract_tests`]) and what
//! only the shared queue does. Each test makes a database of its own and drops it
//! after. Without the variable a test skips with one line, unless
//! `ALERTBRIDGE_REQUIRE_SERVERS` is set: then it fails.

use std::{
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{Alert, kit::Secret};

use super::{transfer as transfer_pg, *};
use crate::queue::{Enqueued, Queue, QueueError, QueueOptions, contract_tests};

const URL_VAR: &str = "ALERTBRIDGE_TEST_POSTGRES_URL";

/// A scratch database, dropped with the value.
pub(crate) struct TestDb {
    admin: String,
    pub name: String,
    pub url: Secret,
}

impl TestDb {
    /// A fresh database, or `None` (after the skip line) without a test server.
    pub(crate) fn new() -> Option<Self> {
        let admin = match std::env::var(URL_VAR) {
            Ok(u) if !u.trim().is_empty() => u,
            _ => {
                let required = std::env::var("ALERTBRIDGE_REQUIRE_SERVERS")
                    .is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
                let line = format!(
                    "skipped {}: no PostgreSQL ({URL_VAR} unset) — run scripts/test, or `scripts/postgres.sh start DIR` and eval \"$(scripts/postgres.sh env DIR)\"",
                    std::thread::current().name().unwrap_or("test")
                );
                assert!(!required, "{line}");
                eprintln!("{line}");
                return None;
            }
        };
        let name = format!("ab_p1_{:016x}", rand::random::<u64>());
        sql(&admin, &format!("CREATE DATABASE {name}"));
        let (head, tail) = admin
            .split_once('?')
            .map_or((admin.as_str(), ""), |(h, t)| (h, t));
        let base = head.rsplit_once('/').map_or(head, |(b, _)| b);
        let url = if tail.is_empty() {
            format!("{base}/{name}")
        } else {
            format!("{base}/{name}?{tail}")
        };
        Some(Self {
            admin,
            name,
            url: Secret::new(url),
        })
    }

    /// Runs `statements` on the admin database (from its own runtime and thread).
    pub(crate) fn admin_sql(&self, statements: &str) {
        sql(&self.admin, statements);
    }

    /// Runs `statements` in this database.
    pub(crate) fn sql(&self, statements: &str) {
        sql(self.url.expose(), statements);
    }

    /// The first column of the first row of `query` in this database, as text.
    pub(crate) fn one(&self, query: &str) -> String {
        let url = Secret::new(self.url.expose());
        let query = query.to_owned();
        on_own_runtime(async move {
            let c = connect(&url).await.expect("connect");
            let row = c
                .query_one(&format!("SELECT ({query})::text"), &[])
                .await
                .expect("query");
            row.get::<_, Option<String>>(0).unwrap_or_default()
        })
    }

    /// The database refuses new connections and cuts the open ones: down, for this test alone.
    pub(crate) fn go_down(&self) {
        self.admin_sql(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';
             DO $$ BEGIN
                 -- A terminated session ends a moment later: down once none is left (5 s).
                 FOR i IN 1..500 LOOP
                     EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = '{0}');
                     PERFORM pg_sleep(0.01);
                 END LOOP;
             END $$;",
            self.name
        ));
    }

    pub(crate) fn come_back(&self) {
        self.admin_sql(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            self.name
        ));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            sql(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        });
    }
}

fn on_own_runtime<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .expect("the helper thread")
}

fn sql(url: &str, statements: &str) {
    let url = Secret::new(url);
    let statements = statements.to_owned();
    on_own_runtime(async move {
        let c = connect(&url).await.expect("connect to the test PostgreSQL");
        c.batch_execute(&statements).await.expect("statements run");
    });
}

pub(super) fn settings(db: &TestDb, node: &str, lease_ms: u64) -> PgSettings {
    PgSettings {
        url: Secret::new(db.url.expose()),
        node: node.into(),
        lease: Duration::from_millis(lease_ms),
    }
}

/// Opening a queue on `db` as `node` is refused at start: why.
fn refused(db: &TestDb, node: &str) -> QueueError {
    PgQueue::open(
        settings(db, node, 10_000),
        &QueueOptions::default(),
        Arc::new(Metrics::default()),
        Box::new(drop),
    )
    .err()
    .expect("refused")
}

pub(super) fn open(db: &TestDb, node: &str, lease_ms: u64, on_commit: OnCommit) -> PgQueue {
    open_counted(db, node, lease_ms, &Arc::new(Metrics::default()), on_commit)
}

/// [`open`], counting in `metrics`.
fn open_counted(
    db: &TestDb,
    node: &str,
    lease_ms: u64,
    metrics: &Arc<Metrics>,
    on_commit: OnCommit,
) -> PgQueue {
    PgQueue::open(
        settings(db, node, lease_ms),
        &QueueOptions::default(),
        Arc::clone(metrics),
        on_commit,
    )
    .expect("the queue opens")
}

/// Enqueues until the queue takes alerts again (it reconnects by itself), within 15 s.
pub(super) async fn enqueue_once_back(q: &PgQueue) -> Taken {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match q.enqueue("s", Alert::new("after")).await {
            Ok(t) => return t,
            Err(QueueError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the queue did not come back: {e}"),
        }
    }
}

/// An [`OnCommit`] that tells a channel (id, subject, duplicate).
pub(super) fn told() -> (OnCommit, mpsc::Receiver<(u64, String, bool)>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    (
        Box::new(move |e: Enqueued| {
            let _ = tx
                .lock()
                .unwrap()
                .send((e.alert.id, e.alert.alert.subject, e.duplicate));
        }),
        rx,
    )
}

/// Each contract test opens its queue as node "a" in a database of its own.
impl contract_tests::Store for TestDb {
    fn open(
        &self,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Box<dyn Queue>, QueueError> {
        PgQueue::open(settings(self, "a", 60_000), options, metrics, on_commit)
            .map(|q| Box::new(q) as _)
    }
}

contract_tests::contract_tests!(store: || TestDb::new().map(|db| Box::new(db) as _));

fn keyed(subject: &str, key: &str) -> Alert {
    let mut a = Alert::new(subject);
    a.dedup_key = Some(key.into());
    a
}

#[tokio::test]
async fn schema_is_created_on_an_empty_database_and_migrating_again_changes_nothing() {
    let Some(db) = TestDb::new() else { return };
    let before = schema_state(&db.url).await.unwrap();
    assert_eq!(before.current, 0);
    assert!(before.to_string().starts_with("empty"), "{before}");
    let q = open(&db, "a", 10_000, Box::new(drop));
    let after = schema_state(&db.url).await.unwrap();
    assert_eq!(
        (after.current, after.latest),
        (schema::latest(), schema::latest())
    );
    assert_eq!(
        after.to_string(),
        format!("current (version {})", schema::latest())
    );
    // Two more hosts starting at once: the advisory lock lets one migrate; nothing changes.
    let (u1, u2) = (Secret::new(db.url.expose()), Secret::new(db.url.expose()));
    let (a, b) = tokio::join!(
        async move { schema::migrate(&mut connect(&u1).await.unwrap()).await },
        async move { schema::migrate(&mut connect(&u2).await.unwrap()).await }
    );
    assert_eq!(a.unwrap(), after);
    assert_eq!(b.unwrap(), after);
    assert_eq!(
        db.one("SELECT count(*) FROM ab_schema_history"),
        schema::latest().to_string()
    );
    drop(q);
    // A database a newer build migrated is refused with one clear line.
    db.sql(
        "INSERT INTO ab_schema_history (version, name, applied_on, checksum) \
         VALUES (999, 'from_the_future', '', '0')",
    );
    let err = refused(&db, "a");
    assert!(
        err.to_string()
            .contains("version 999, newer than this alertbridge knows"),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_whose_applied_migration_differs_from_this_builds_is_refused() {
    let Some(db) = TestDb::new() else { return };
    drop(open(&db, "a", 10_000, Box::new(drop)));
    // Migration 1 as applied is not this build's migration 1 (edited after release).
    db.sql("UPDATE ab_schema_history SET checksum = '1' WHERE version = 1");
    let err = refused(&db, "a");
    let text = crate::error_chain(&err);
    assert!(
        text.contains("migrations differ from this alertbridge's"),
        "{text}"
    );
    assert!(text.contains("alerts_dedup_keys_and_leases"), "{text}");
}

#[tokio::test]
async fn an_enqueue_resolves_only_once_its_alert_is_committed() {
    let Some(db) = TestDb::new() else { return };
    let (on_commit, rx) = told();
    let q = open(&db, "a", 10_000, on_commit);
    let t = q.enqueue("mail", Alert::new("disk full")).await.unwrap();
    // Another connection sees it the moment the enqueue resolved: it was committed.
    assert_eq!(
        db.one(&format!(
            "SELECT owner || ' ' || source FROM ab_alerts WHERE id = {}",
            t.id
        )),
        "a mail"
    );
    assert_eq!(rx.try_recv().unwrap(), (t.id, "disk full".into(), false));
    // Concurrent enqueues share transactions; each is handed on. (Distinct ids, saves and what
    // a restart resumes: the contract tests.)
    let pending: Vec<_> = (0..300)
        .map(|i| q.enqueue("s", Alert::new(format!("a{i}"))))
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    assert_eq!(db.one("SELECT count(*) FROM ab_alerts"), "301");
    assert_eq!(
        rx.try_iter().count(),
        300,
        "every committed enqueue was handed on"
    );
    // A save sets the row's `finished` column with its document.
    let mut a = q.get(t.id).unwrap().unwrap();
    a.finished_ms = Some(1);
    q.save(&a).await.unwrap();
    assert_eq!(
        db.one("SELECT count(*) FROM ab_alerts WHERE NOT finished"),
        "300"
    );
    // What this process handed on is never handed on again.
    assert!(q.unfinished().unwrap().is_empty());
    assert_eq!(q.get(999_999).unwrap(), None);
}

#[tokio::test]
async fn a_dedup_key_posted_to_two_hosts_at_once_is_one_alert() {
    let Some(db) = TestDb::new() else { return };
    let (c1, rx1) = told();
    let (c2, rx2) = told();
    let a = open(&db, "a", 10_000, c1);
    let b = open(&db, "b", 10_000, c2);
    for round in 0..20 {
        let key = format!("k{round}");
        let (x, y) = tokio::join!(
            a.enqueue("hook", keyed("from a", &key)),
            b.enqueue("hook", keyed("from b", &key))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.id, y.id, "one alert for both");
        assert!(
            x.duplicate != y.duplicate,
            "exactly one of them is new: {x:?} {y:?}"
        );
    }
    assert_eq!(db.one("SELECT count(*) FROM ab_alerts"), "20");
    let new = rx1
        .try_iter()
        .chain(rx2.try_iter())
        .filter(|t| !t.2)
        .count();
    assert_eq!(new, 20, "each alert is handed to one host's dispatch");
    // Keys are scoped to their source; the same key twice in one batch is one alert.
    assert!(
        !a.enqueue("mail", keyed("other source", "k0"))
            .await
            .unwrap()
            .duplicate
    );
    let (p, q) = tokio::join!(
        a.enqueue("s", keyed("x", "same")),
        a.enqueue("s", keyed("y", "same"))
    );
    assert_eq!(p.as_ref().unwrap().id, q.as_ref().unwrap().id);
    assert!(!p.unwrap().duplicate && q.unwrap().duplicate);
}

#[tokio::test]
async fn an_expired_dedup_key_is_taken_again() {
    let Some(db) = TestDb::new() else { return };
    let options = QueueOptions {
        dedup_window: Duration::from_millis(150),
        ..QueueOptions::default()
    };
    let q = PgQueue::open(
        settings(&db, "a", 10_000),
        &options,
        Arc::new(Metrics::default()),
        Box::new(drop),
    )
    .unwrap();
    let first = q.enqueue("s", keyed("a", "k")).await.unwrap();
    assert!(q.enqueue("s", keyed("a", "k")).await.unwrap().duplicate);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = q.enqueue("s", keyed("a", "k")).await.unwrap();
    assert!(!again.duplicate);
    assert_ne!(again.id, first.id);
}

#[tokio::test]
async fn a_host_that_stops_renewing_has_its_work_taken_over_within_the_lease() {
    let Some(db) = TestDb::new() else { return };
    const LEASE_MS: u64 = 400;
    let a = open(&db, "a", LEASE_MS, Box::new(drop));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            a.enqueue("s", Alert::new(format!("m{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let done = a.enqueue("s", Alert::new("done")).await.unwrap().id;
    let mut finished = a.get(done).unwrap().unwrap();
    finished.finished_ms = Some(1);
    a.save(&finished).await.unwrap();
    let (on_commit, rx) = told();
    let b = open(&db, "b", LEASE_MS, on_commit);
    assert!(
        b.unfinished().unwrap().is_empty(),
        "a's leases are live: b takes nothing"
    );
    // Host a keeps renewing: b takes nothing for two leases.
    assert!(
        rx.recv_timeout(Duration::from_millis(2 * LEASE_MS))
            .is_err()
    );
    // Host a stops renewing (as if it died; its writer stays to show the fence below).
    a.core.stop.cancel();
    let stopped = Instant::now();
    let mut taken = Vec::new();
    while taken.len() < 3 {
        let (id, _, dup) = rx
            .recv_timeout(Duration::from_millis(3 * LEASE_MS))
            .expect("b takes over a's alerts");
        assert!(!dup);
        taken.push(id);
    }
    let took = stopped.elapsed();
    taken.sort_unstable();
    assert_eq!(
        taken, ids,
        "every unfinished alert, and not the finished one"
    );
    // At most 1.25 leases after the last renewal, plus slack for a loaded machine.
    assert!(
        took <= Duration::from_millis(LEASE_MS * 2 + 1000),
        "{took:?}"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM ab_alerts WHERE owner = 'b'"),
        "3"
    );
    // Taken once: nothing more comes while b renews.
    assert!(
        rx.recv_timeout(Duration::from_millis(2 * LEASE_MS))
            .is_err()
    );
    // Host a can no longer record outcomes (nor so begin a send) for them.
    let mut stale = a.get(ids[0]).unwrap().unwrap();
    stale.finished_ms = Some(2);
    // Its save is refused as NotOwner (not "try later": the dispatcher lets go of the alert
    // instead of retrying it), while a save of an alert it still owns, in the same batch,
    // is written.
    let (fenced, kept) = futures::join!(a.save(&stale), a.save(&finished));
    kept.unwrap();
    let fenced = fenced.unwrap_err();
    assert!(
        matches!(fenced, QueueError::NotOwner { id } if id == ids[0]),
        "{fenced:?}"
    );
    assert_eq!(fenced.retry_after_ms(), None);
    assert!(
        fenced.to_string().contains("delivered by another host"),
        "{fenced}"
    );
    // The outcome after a send is fenced the same way: taken (it rides in the next
    // transaction, nobody waits for it) but not written over b's alert.
    a.save_outcome(&stale).await.unwrap();
    a.save(&finished).await.unwrap();
    assert!(!b.get(ids[0]).unwrap().unwrap().is_finished());
    // b closing cleanly releases its leases: a host starting as "c" takes them at once.
    drop(b);
    let c = open(&db, "c", 60_000, Box::new(drop));
    let resumed: Vec<u64> = c.unfinished().unwrap().iter().map(|a| a.id).collect();
    assert_eq!(resumed, ids);
}

#[tokio::test]
async fn the_database_down_means_try_later_and_the_queue_comes_back_by_itself() {
    let Some(db) = TestDb::new() else { return };
    let metrics = Arc::new(Metrics::default());
    let (on_commit, rx) = told();
    let q = open_counted(&db, "a", 10_000, &metrics, on_commit);
    let kept = q.enqueue("s", Alert::new("before")).await.unwrap();
    let mut alert = q.get(kept.id).unwrap().unwrap();
    db.go_down();
    // The first enqueue meets the cut connection, the next ones the fault: all "try later".
    for _ in 0..3 {
        match q.enqueue("s", Alert::new("during")).await {
            Err(QueueError::Unavailable { retry_after_ms, .. }) => assert!(retry_after_ms >= 1000),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }
    assert!(
        metrics.queue_fault().is_some(),
        "health says the queue is down"
    );
    assert!(
        metrics.render().contains("alertbridge_queue_up 0"),
        "{}",
        metrics.render()
    );
    // An outcome recorded meanwhile is kept and written after the reconnect.
    alert.finished_ms = Some(7);
    assert!(q.save(&alert).await.is_err());
    db.come_back();
    let back = enqueue_once_back(&q).await;
    assert!(metrics.queue_fault().is_none());
    assert!(
        q.get(kept.id).unwrap().unwrap().is_finished(),
        "the kept save was written"
    );
    let subjects: Vec<String> = rx.try_iter().map(|t| t.1).collect();
    assert_eq!(subjects, ["before", "after"], "nothing refused was queued");
    assert_eq!(db.one("SELECT count(*) FROM ab_alerts"), "2");
    assert!(back.id > kept.id);
}

#[tokio::test]
async fn a_redb_queue_moves_into_postgres_and_back_with_every_alert_and_outcome() {
    use crate::{
        model::RecipientRecord,
        queue::{RedbQueue, transfer},
    };
    let Some(db) = TestDb::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let window_ms = 3_600_000;
    {
        let q =
            RedbQueue::open(dir.path(), Duration::from_secs(3600), 1000, Box::new(drop)).unwrap();
        for i in 0..40u64 {
            let t = q
                .enqueue("hook", keyed(&format!("alert {i}"), &format!("k{i}")))
                .await
                .unwrap();
            let mut a = q.get(t.id).unwrap().unwrap();
            a.routed = true;
            // Built from JSON, as stored: fields added later keep their defaults.
            let r: RecipientRecord = serde_json::from_value(serde_json::json!({
                "route": "ops",
                "sink": "lync",
                "user": format!("sip:u{i}@contoso.com"),
                "outcome": if i % 3 == 0 { "delivered" } else { "held" },
                "reason": format!("reason {i}"),
                "attempts": i % 4,
                "held_since_ms": (i % 3 != 0).then_some(5),
                "updated_ms": 9,
                "sending": i % 5 == 1,
            }))
            .unwrap();
            a.recipients.push(r);
            if i % 3 == 0 {
                a.finished_ms = Some(10);
            }
            q.save(&a).await.unwrap();
        }
    }
    let original = transfer::export_redb(dir.path()).unwrap();
    assert_eq!(original.len(), 40);
    let mut bytes = Vec::new();
    transfer::write_export("redb", &original, &mut bytes).unwrap();
    let read = transfer::read_export(&bytes).unwrap();
    assert_eq!(read, original);

    let pg = settings(&db, "x", 10_000);
    let keys = transfer_pg::import(&pg, &read, window_ms).await.unwrap();
    assert_eq!(keys, 40);
    assert_eq!(
        transfer_pg::export(&pg).await.unwrap(),
        original,
        "every alert and outcome"
    );
    // A second import into the now full database is refused, nothing changed.
    let again = transfer_pg::import(&pg, &read, window_ms)
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("already holds 40 alerts"),
        "{again}"
    );
    {
        let (on_commit, rx) = told();
        let q = open(&db, "x", 10_000, on_commit);
        // Unfinished imported alerts are taken up; dedup keys and ids carry on.
        assert_eq!(
            q.unfinished().unwrap().len(),
            original.iter().filter(|a| !a.is_finished()).count()
        );
        let dup = q.enqueue("hook", keyed("again", "k7")).await.unwrap();
        assert_eq!((dup.id, dup.duplicate), (original[7].id, true));
        let new = q.enqueue("hook", Alert::new("new")).await.unwrap();
        assert!(new.id > original.last().unwrap().id);
        assert_eq!(rx.try_iter().filter(|t| !t.2).count(), 1);
        // Back: the new one goes along.
        let mut back = transfer_pg::export(&pg).await.unwrap();
        assert_eq!(back.len(), 41);
        let added = back.pop().unwrap();
        assert_eq!(back, original);
        back.push(added);
        let dir2 = tempfile::tempdir().unwrap();
        assert_eq!(
            transfer::import_redb(dir2.path(), &back, window_ms).unwrap(),
            40
        );
        assert_eq!(transfer::export_redb(dir2.path()).unwrap(), back);
        let r =
            RedbQueue::open(dir2.path(), Duration::from_secs(3600), 1000, Box::new(drop)).unwrap();
        let dup = r.enqueue("hook", keyed("again", "k3")).await.unwrap();
        assert_eq!((dup.id, dup.duplicate), (original[3].id, true));
        assert!(r.enqueue("hook", Alert::new("n")).await.unwrap().id > new.id);
        drop(r);
        let full = transfer::import_redb(dir2.path(), &back, window_ms).unwrap_err();
        assert!(
            full.to_string().contains("already holds 42 alerts"),
            "{full}"
        );
    }
}

#[tokio::test]
async fn a_host_started_while_the_database_is_down_comes_up_and_takes_up_its_work() {
    let Some(db) = TestDb::new() else { return };
    let mine = {
        let q = open(&db, "a", 60_000, Box::new(drop));
        let t = q.enqueue("s", Alert::new("left unfinished")).await.unwrap();
        // A crash: the lease is not released (the writer is not asked to stop cleanly).
        q.core.stop.cancel();
        std::mem::forget(q);
        t.id
    };
    db.go_down();
    let metrics = Arc::new(Metrics::default());
    let (on_commit, rx) = told();
    let q = open_counted(&db, "a", 60_000, &metrics, on_commit);
    assert!(q.unfinished().unwrap().is_empty(), "nothing to resume yet");
    assert!(matches!(
        q.enqueue("s", Alert::new("refused")).await,
        Err(QueueError::Unavailable { .. })
    ));
    assert!(metrics.queue_fault().is_some());
    db.come_back();
    // Once connected, its own unfinished alert from before is handed on, once.
    let (id, subject, dup) = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("its work is taken up once the database is back");
    assert_eq!(
        (id, subject.as_str(), dup),
        (mine, "left unfinished", false)
    );
    assert!(metrics.queue_fault().is_none());
    let t = q.enqueue("s", Alert::new("accepted")).await.unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(1)).unwrap().0, t.id);
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "handed on once"
    );
}

#[tokio::test]
async fn a_second_host_with_the_same_node_name_is_refused() {
    let Some(db) = TestDb::new() else { return };
    let first = open(&db, "ab1", 10_000, Box::new(drop));
    let again = refused(&db, "ab1");
    assert!(
        again
            .to_string()
            .contains("another running alertbridge already uses [queue] node = \"ab1\""),
        "{again}"
    );
    let other = open(&db, "ab2", 10_000, Box::new(drop));
    drop(first);
    // The name is free once its holder stopped.
    drop(open(&db, "ab1", 10_000, Box::new(drop)));
    drop(other);
}

/// Issue 15: alerts taken over from a host whose lease ran out were counted in
/// `alertbridge_alerts_accepted_total` again by the host that took them. They count once,
/// where accepted; the take-over counts in `alertbridge_alerts_taken_over_total`. A host
/// restarted takes up its own alerts without counting them either.
#[tokio::test]
async fn alerts_taken_over_are_counted_once_where_accepted_and_apart_as_taken_over() {
    use crate::{dispatch::Depth, ingest::Ingest};
    let Some(db) = TestDb::new() else { return };
    const LEASE_MS: u64 = 400;
    let wired = || {
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let on_commit = Ingest::on_commit(Arc::clone(&metrics), Arc::new(Depth::new(1000, [])), tx);
        (metrics, on_commit, rx)
    };
    let accepted = |m: &Metrics| m.counter("alertbridge_alerts_accepted_total", &[("source", "s")]);
    let taken_over = |m: &Metrics| m.counter("alertbridge_alerts_taken_over_total", &[]);
    let (ma, on_commit, _dispatch_a) = wired();
    let a = open_counted(&db, "a", LEASE_MS, &ma, on_commit);
    for i in 0..3 {
        a.enqueue("s", Alert::new(format!("m{i}"))).await.unwrap();
    }
    assert_eq!(accepted(&ma), 3);
    let (mb, on_commit, mut dispatch_b) = wired();
    let b = open_counted(&db, "b", LEASE_MS, &mb, on_commit);
    assert!(b.unfinished().unwrap().is_empty());
    b.enqueue("s", Alert::new("b's own")).await.unwrap();
    // Host a stops renewing (as if it died): b takes its three over and dispatches them.
    a.core.stop.cancel();
    let mut handed = 0;
    while handed < 4 {
        tokio::time::timeout(Duration::from_millis(10 * LEASE_MS), dispatch_b.recv())
            .await
            .expect("b takes over a's alerts")
            .expect("b's dispatch channel open");
        handed += 1;
    }
    assert_eq!(accepted(&mb), 1, "b accepted one; a's three are not b's");
    assert_eq!(taken_over(&mb), 3);
    assert_eq!(accepted(&ma) + accepted(&mb), 4, "each alert counted once");
    assert_eq!(taken_over(&ma), 0);
    drop(a);
    // b restarted (killed: its leases stay) takes its own four up again, counted as neither.
    b.core.stop.cancel();
    drop(b);
    let (mb2, on_commit, mut dispatch_b2) = wired();
    let b2 = open_counted(&db, "b", LEASE_MS, &mb2, on_commit);
    // Taken up once: by the start's `unfinished`, or by the lease task if it came first (then
    // handed on to dispatch).
    let mut resumed = b2.unfinished().unwrap().len();
    while resumed < 4 {
        tokio::time::timeout(Duration::from_millis(10 * LEASE_MS), dispatch_b2.recv())
            .await
            .expect("b takes its own alerts up again")
            .expect("b's dispatch channel open");
        resumed += 1;
    }
    assert_eq!((accepted(&mb2), taken_over(&mb2)), (0, 0));
}
