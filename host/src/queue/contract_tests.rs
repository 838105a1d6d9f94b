//! What every queue backend must do, as tests run against each (redb, the segment log and
//! PostgreSQL): each backend's test module instantiates them with [`contract_tests!`] and its
//! opener (an embedded backend) or the maker of its [`Store`] (PostgreSQL).

use std::{
    path::Path,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::Alert;

use super::{OnCommit, Queue, QueueError, QueueOptions, shared::HOLD_OUTCOMES};
use crate::{
    metrics::Metrics,
    model::{StoredAlert, now_ms},
};

/// Opens a backend's queue in a folder.
pub(crate) type Opener =
    fn(&Path, &QueueOptions, Arc<Metrics>, OnCommit) -> Result<Box<dyn Queue>, QueueError>;

/// Where one test keeps its queue: each open there finds what the last one left.
pub(crate) trait Store {
    fn open(
        &self,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Box<dyn Queue>, QueueError>;
}

/// A test's [`Store`], or `None` when the backend cannot run here (the test skips).
pub(crate) type MakeStore = fn() -> Option<Box<dyn Store>>;

/// An embedded backend's store: a scratch folder of its own.
pub(crate) struct Folder {
    dir: tempfile::TempDir,
    open: Opener,
}

impl Folder {
    pub(crate) fn new(open: Opener) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            open,
        }
    }
}

impl Store for Folder {
    fn open(
        &self,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Box<dyn Queue>, QueueError> {
        (self.open)(self.dir.path(), options, metrics, on_commit)
    }
}

/// Instantiates the contract tests: `contract_tests!(opener)` every one for an embedded
/// backend, each test in a scratch folder of its own; `contract_tests!(store: make)` those
/// every backend holds, each test in the store `make` gives (none: the test skips). Only the
/// embedded backends evict the oldest key past `dedup_max_keys` at once and count it: the
/// shared queue prunes keys past the bound now and then, with the history, for every host.
macro_rules! contract_tests {
    ($open:expr) => {
        $crate::queue::contract_tests::contract_tests!(store: || {
            Some(Box::new($crate::queue::contract_tests::Folder::new($open)) as _)
        });

        #[tokio::test]
        async fn dedup_max_keys_evicts_the_oldest_key_and_counts_it() {
            let store = STORE().expect("an embedded backend runs everywhere");
            $crate::queue::contract_tests::dedup_max_keys_evicts_the_oldest_key_and_counts_it(&*store).await;
        }
    };
    (store: $make:expr) => {
        const STORE: $crate::queue::contract_tests::MakeStore = $make;

        #[tokio::test]
        async fn enqueued_alerts_survive_reopen_and_dedup_holds() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::enqueued_alerts_survive_reopen_and_dedup_holds(&*store).await;
        }
        #[tokio::test]
        async fn concurrent_enqueues_get_distinct_ids_and_saves_finish_alerts() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::concurrent_enqueues_get_distinct_ids_and_saves_finish_alerts(&*store).await;
        }
        #[test]
        fn a_committed_alert_reaches_on_commit_even_if_nobody_awaits_its_enqueue() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::a_committed_alert_reaches_on_commit_even_if_nobody_awaits_its_enqueue(&*store);
        }
        #[tokio::test]
        async fn expired_dedup_keys_are_taken_again() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::expired_dedup_keys_are_taken_again(&*store).await;
        }
        #[tokio::test]
        async fn an_outcome_rides_in_the_next_commit_or_is_committed_within_the_hold_time() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::an_outcome_rides_in_the_next_commit_or_is_committed_within_the_hold_time(&*store).await;
        }
        #[tokio::test]
        async fn saves_keep_their_order_and_close_commits_what_is_held() {
            let Some(store) = STORE() else { return };
            $crate::queue::contract_tests::saves_keep_their_order_and_close_commits_what_is_held(&*store).await;
        }
    };
}
pub(crate) use contract_tests;

fn queue(store: &dyn Store) -> Box<dyn Queue> {
    open_simple(store, Duration::from_secs(3600), 100, Box::new(drop))
}

/// Opens with the given dedup window and history size, other options default.
fn open_simple(
    store: &dyn Store,
    dedup_window: Duration,
    history_max_alerts: usize,
    on_commit: OnCommit,
) -> Box<dyn Queue> {
    let options = QueueOptions {
        dedup_window,
        history_max_alerts,
        ..QueueOptions::default()
    };
    store
        .open(&options, Arc::new(Metrics::default()), on_commit)
        .unwrap()
}

fn keyed(subject: &str, key: &str) -> Alert {
    let mut a = Alert::new(subject);
    a.dedup_key = Some(key.into());
    a
}

pub(crate) async fn enqueued_alerts_survive_reopen_and_dedup_holds(store: &dyn Store) {
    let taken = {
        let q = queue(store);
        let a = q.enqueue("mail", keyed("one", "k1")).await.unwrap();
        let b = q.enqueue("mail", keyed("two", "k2")).await.unwrap();
        let dup = q.enqueue("mail", keyed("one again", "k1")).await.unwrap();
        assert!(dup.duplicate);
        assert_eq!(dup.id, a.id);
        assert_eq!(q.get(a.id).unwrap().unwrap().alert.subject, "one");
        let other_source = q
            .enqueue("hook", keyed("same key elsewhere", "k1"))
            .await
            .unwrap();
        assert!(
            !other_source.duplicate,
            "dedup keys are scoped to their source"
        );
        // Ids ascend; a shared queue may skip some (an id drawn and not used).
        [a.id, b.id, other_source.id]
    };
    let q = queue(store);
    let ids: Vec<u64> = q.unfinished().unwrap().iter().map(|a| a.id).collect();
    assert_eq!(ids, taken);
    assert!(
        q.enqueue("mail", keyed("after restart", "k2"))
            .await
            .unwrap()
            .duplicate
    );
}

pub(crate) async fn concurrent_enqueues_get_distinct_ids_and_saves_finish_alerts(
    store: &dyn Store,
) {
    let q = queue(store);
    let handles: Vec<_> = (0..500)
        .map(|i| q.enqueue("s", Alert::new(format!("a{i}"))))
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap().id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 500);
    let mut a = q.get(ids[0]).unwrap().unwrap();
    a.finished_ms = Some(1);
    q.save(&a).await.unwrap();
    assert_eq!(
        q.recent(3)
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        [500, 499, 498]
    );
    // What a restart resumes (a running shared queue hands on only what it has not itself).
    drop(q);
    assert_eq!(queue(store).unfinished().unwrap().len(), 499);
}

pub(crate) fn a_committed_alert_reaches_on_commit_even_if_nobody_awaits_its_enqueue(
    store: &dyn Store,
) {
    let (tx, rx) = mpsc::channel();
    let q = open_simple(
        store,
        Duration::from_secs(60),
        100,
        Box::new(move |e| drop(tx.send((e.alert.id, e.alert.alert.subject, e.duplicate)))),
    );
    drop(q.enqueue("s", keyed("first", "k")));
    drop(q.enqueue("s", keyed("again", "k")));
    drop(q);
    let told: Vec<_> = rx.iter().collect();
    assert_eq!(
        told,
        [
            (1, "first".to_owned(), false),
            (1, "again".to_owned(), true)
        ]
    );
}

pub(crate) async fn dedup_max_keys_evicts_the_oldest_key_and_counts_it(store: &dyn Store) {
    let metrics = Arc::new(Metrics::default());
    let options = QueueOptions {
        dedup_max_keys: 2,
        ..QueueOptions::default()
    };
    {
        let q = store
            .open(&options, Arc::clone(&metrics), Box::new(drop))
            .unwrap();
        for k in ["k1", "k2", "k3"] {
            assert!(!q.enqueue("s", keyed(k, k)).await.unwrap().duplicate);
        }
        assert!(q.enqueue("s", keyed("k3", "k3")).await.unwrap().duplicate);
        assert!(
            !q.enqueue("s", keyed("k1", "k1")).await.unwrap().duplicate,
            "the oldest key was evicted, so it is taken again"
        );
        let text = metrics.render();
        assert!(
            text.contains("\nalertbridge_dedup_evictions_total 2\n"),
            "{text}"
        );
        assert!(text.contains("\nalertbridge_dedup_keys 2\n"), "{text}");
    }
    // The bound holds when the index is rebuilt from the log, newest kept.
    let metrics = Arc::new(Metrics::default());
    let q = store
        .open(&options, Arc::clone(&metrics), Box::new(drop))
        .unwrap();
    assert!(metrics.render().contains("\nalertbridge_dedup_keys 2\n"));
    assert!(q.enqueue("s", keyed("k1", "k1")).await.unwrap().duplicate);
    assert!(!q.enqueue("s", keyed("k2", "k2")).await.unwrap().duplicate);
}

pub(crate) async fn expired_dedup_keys_are_taken_again(store: &dyn Store) {
    let q = open_simple(store, Duration::ZERO, 100, Box::new(drop));
    q.enqueue("s", keyed("a", "k")).await.unwrap();
    assert!(!q.enqueue("s", keyed("a", "k")).await.unwrap().duplicate);
}

/// `alert` as the dispatcher leaves it after its send: delivered, finished.
pub(crate) fn finished(mut alert: StoredAlert) -> StoredAlert {
    alert.routed = true;
    alert.finished_ms = Some(now_ms());
    alert
}

pub(crate) async fn an_outcome_rides_in_the_next_commit_or_is_committed_within_the_hold_time(
    store: &dyn Store,
) {
    let q = queue(store);
    let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
    let before = Instant::now();
    q.save_outcome(&finished(q.get(a).unwrap().unwrap()))
        .await
        .unwrap();
    if before.elapsed() < HOLD_OUTCOMES / 2 {
        assert!(
            !q.get(a).unwrap().unwrap().is_finished(),
            "an outcome does not get a commit of its own at once"
        );
    }
    // The next enqueue's commit carries it.
    q.enqueue("s", Alert::new("b")).await.unwrap();
    assert!(q.get(a).unwrap().unwrap().is_finished());

    // With nothing after it, it is committed within the hold time.
    let c = q.enqueue("s", Alert::new("c")).await.unwrap().id;
    q.save_outcome(&finished(q.get(c).unwrap().unwrap()))
        .await
        .unwrap();
    let deadline = Instant::now() + HOLD_OUTCOMES * 50;
    while !q.get(c).unwrap().unwrap().is_finished() {
        assert!(
            Instant::now() < deadline,
            "the held outcome was never committed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) async fn saves_keep_their_order_and_close_commits_what_is_held(store: &dyn Store) {
    let (a, b) = {
        let q = queue(store);
        let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
        let b = q.enqueue("s", Alert::new("b")).await.unwrap().id;
        // An outcome, then a later durable save of the same alert: the later one stands.
        let mut doc = q.get(a).unwrap().unwrap();
        q.save_outcome(&finished(doc.clone())).await.unwrap();
        doc.routed = true;
        q.save(&doc).await.unwrap();
        assert_eq!(q.get(a).unwrap().unwrap(), doc);
        // A durable save, then an outcome held when the queue closes.
        let doc = q.get(b).unwrap().unwrap();
        q.save(&doc).await.unwrap();
        q.save_outcome(&finished(doc)).await.unwrap();
        (a, b)
    };
    let q = queue(store);
    assert!(!q.get(a).unwrap().unwrap().is_finished());
    assert!(
        q.get(b).unwrap().unwrap().is_finished(),
        "an outcome held at close is committed before the file closes"
    );
    assert_eq!(
        q.unfinished()
            .unwrap()
            .iter()
            .map(|x| x.id)
            .collect::<Vec<_>>(),
        [a]
    );
}
