//! [`PgSilences`] against a real PostgreSQL (a scratch database per test, as the queue's tests
//! make them; skipped with one line without a server): ids from the shared sequence, never
//! reused; two hosts' registries see each other's silences; a damaged row is reported beside
//! the others; the database away is a clear error and nothing in force is lost.

use std::sync::Arc;

use alertbridge_plugin_api::{Alert, Severity, kit::Secret};
use serde_json::json;

use super::*;
use crate::{
    model::StoredAlert,
    queue::postgres::tests::TestDb,
    silences::{NewSilence, SilenceState, Silences},
};

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn store(db: &TestDb) -> PgSilences {
    PgSilences::open(Secret::new(db.url.expose())).unwrap()
}

fn new(labels: serde_json::Value, duration: &str) -> NewSilence {
    serde_json::from_value(json!({"matchers": {"labels": labels}, "duration": duration,
        "author": "alice", "comment": "maintenance"}))
    .unwrap()
}

fn db01() -> StoredAlert {
    let mut a = Alert::new("Disk full");
    a.severity = Severity::HIGH;
    a.labels.insert("host".into(), "db01".into());
    StoredAlert::new(1, "monitoring", a, T0)
}

/// `Silences::open` waits for the database: off the test's async thread, as the host's
/// refresh does.
async fn open(store: PgSilences) -> Silences {
    tokio::task::spawn_blocking(move || Silences::open(Arc::new(store)))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_silences_with_ids_from_one_sequence() {
    let Some(db) = TestDb::new() else { return };
    let (a, b) = (open(store(&db)).await, open(store(&db)).await);
    let first = a
        .create(&new(json!({"host": "db01"}), "1h"), T0)
        .await
        .unwrap();
    let second = b
        .create(&new(json!({"host": "web01"}), "1h"), T0)
        .await
        .unwrap();
    assert_eq!((first.id, second.id), (1, 2), "one sequence for every host");

    assert_eq!(b.silencing(&db01(), T0), None, "not seen before a refresh");
    b.refresh().await.unwrap();
    assert_eq!(b.silencing(&db01(), T0).map(|s| s.id), Some(first.id));
    assert_eq!(b.get(first.id), Some(first.clone()), "stored as made");

    // Expired on b, seen expired on a; pruned on a, gone on b; its id is never given again.
    b.expire(first.id, T0 + MIN).await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.silencing(&db01(), T0 + MIN), None);
    assert_eq!(a.get(first.id).unwrap().expired_ms, Some(T0 + MIN));
    let later = T0 + MIN + crate::silences::KEEP_EXPIRED_MS + 1;
    assert_eq!(a.prune(later).await.unwrap(), 1);
    b.refresh().await.unwrap();
    assert_eq!(b.get(first.id), None);
    assert_eq!(
        db.one("SELECT count(*) FROM ab_silences"),
        "1",
        "only the pruned one went"
    );
    let third = b
        .create(&new(json!({"host": "db01"}), "1h"), T0)
        .await
        .unwrap();
    assert_eq!(third.id, 3);

    // A restarted host loads every one.
    let again = open(store(&db)).await;
    let ids: Vec<u64> = again.list().iter().map(|s| s.id).collect();
    assert_eq!(ids, [3, 2]);
    assert_eq!(again.get(3).unwrap().state(T0), SilenceState::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_is_reported_beside_the_others() {
    let Some(db) = TestDb::new() else { return };
    let s = store(&db);
    let silences = open(store(&db)).await;
    silences
        .create(&new(json!({"host": "db01"}), "1h"), T0)
        .await
        .unwrap();
    db.sql("INSERT INTO ab_silences (id, doc) VALUES (7, '{\"id\": 7, \"matchers\": ')");
    let (good, damaged) = tokio::task::spawn_blocking(move || s.load())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(good.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
    assert_eq!(damaged.len(), 1);
    assert!(
        matches!(damaged[0], SilenceError::Corrupt { id: 7, .. }),
        "{}",
        damaged[0]
    );
    // The registry keeps the readable one in force.
    silences.refresh().await.unwrap();
    assert_eq!(silences.silencing(&db01(), T0).map(|s| s.id), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_away_is_a_clear_error_and_loses_nothing() {
    let Some(db) = TestDb::new() else { return };
    let silences = open(store(&db)).await;
    let made = silences
        .create(&new(json!({"host": "db01"}), "1h"), T0)
        .await
        .unwrap();
    db.go_down();
    let refused = silences
        .create(&new(json!({"host": "web01"}), "1h"), T0)
        .await
        .unwrap_err();
    assert!(matches!(refused, SilenceError::Storage(_)), "{refused}");
    let chain = crate::error_chain(&refused);
    assert!(chain.contains("PostgreSQL"), "says why: {chain}");
    let e = silences.expire(made.id, T0 + MIN).await.unwrap_err();
    assert!(matches!(e, SilenceError::Storage(_)), "{e}");
    assert!(silences.refresh().await.is_err());
    // What was in force stays in force, unchanged.
    assert_eq!(
        silences.silencing(&db01(), T0 + MIN).map(|s| s.id),
        Some(made.id)
    );
    assert_eq!(silences.list().len(), 1);

    db.come_back();
    silences.refresh().await.unwrap();
    assert_eq!(silences.get(made.id), Some(made.clone()));
    let next = silences
        .create(&new(json!({"host": "web01"}), "1h"), T0)
        .await
        .unwrap();
    assert!(next.id > made.id);
    silences.expire(made.id, T0 + MIN).await.unwrap();
    let again = open(store(&db)).await;
    assert_eq!(again.get(made.id).unwrap().expired_ms, Some(T0 + MIN));
    assert_eq!(again.list().len(), 2, "the refused one was never stored");
}
