//! Outcomes after a send on the PostgreSQL queue (`Queue::save_outcome`): taken at once, ride
//! in the writer's next transaction, kept through a database fault, and never ahead of a later
//! save of the same alert.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::Alert;

use super::{
    tests::{TestDb, open, settings, told},
    *,
};
use crate::{
    model::now_ms,
    queue::{Queue, QueueError, QueueOptions, shared::HOLD_OUTCOMES},
};

/// `alert` as the dispatcher leaves it after its send: finished.
fn finished(mut alert: StoredAlert) -> StoredAlert {
    alert.routed = true;
    alert.finished_ms = Some(now_ms());
    alert
}

/// Enqueues until the queue takes alerts again (it reconnects by itself).
async fn enqueue_once_back(q: &PgQueue) -> Taken {
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

#[tokio::test]
async fn an_outcome_rides_in_the_next_transaction_and_close_commits_what_is_held() {
    let Some(db) = TestDb::new() else { return };
    let q = open(&db, "a", 60_000, Box::new(drop));
    let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
    let before = Instant::now();
    q.save_outcome(&finished(q.get(a).unwrap().unwrap()))
        .await
        .unwrap();
    if before.elapsed() < HOLD_OUTCOMES / 2 {
        assert!(
            !q.get(a).unwrap().unwrap().is_finished(),
            "an outcome does not get a transaction of its own at once"
        );
    }
    // The next enqueue's transaction carries it.
    let b = q.enqueue("s", Alert::new("b")).await.unwrap().id;
    assert!(q.get(a).unwrap().unwrap().is_finished());

    // With nothing after it, it is committed within the hold time.
    let c = q.enqueue("s", Alert::new("c")).await.unwrap().id;
    q.save_outcome(&finished(q.get(c).unwrap().unwrap()))
        .await
        .unwrap();
    let deadline = Instant::now() + HOLD_OUTCOMES * 500;
    while !q.get(c).unwrap().unwrap().is_finished() {
        assert!(
            Instant::now() < deadline,
            "the held outcome was never committed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // An outcome, then a later save of the same alert: the later one stands.
    let d = q.enqueue("s", Alert::new("d")).await.unwrap().id;
    let mut doc = q.get(d).unwrap().unwrap();
    q.save_outcome(&finished(doc.clone())).await.unwrap();
    doc.routed = true;
    q.save(&doc).await.unwrap();
    assert_eq!(q.get(d).unwrap().unwrap(), doc);

    // An outcome held when the queue closes is committed before it closes.
    let e = q.enqueue("s", Alert::new("e")).await.unwrap().id;
    q.save_outcome(&finished(q.get(e).unwrap().unwrap()))
        .await
        .unwrap();
    drop(q);
    let q = open(&db, "a", 60_000, Box::new(drop));
    assert!(q.get(e).unwrap().unwrap().is_finished());
    let left: Vec<u64> = q.unfinished().unwrap().iter().map(|x| x.id).collect();
    assert_eq!(left, [b, d]);
}

#[tokio::test]
async fn an_outcome_while_the_database_is_down_is_taken_kept_and_committed_after_the_reconnect() {
    let Some(db) = TestDb::new() else { return };
    let (on_commit, _rx) = told();
    let q = PgQueue::open(
        settings(&db, "a", 60_000),
        &QueueOptions::default(),
        Arc::new(Metrics::default()),
        on_commit,
    )
    .unwrap();
    let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
    let b = q.enqueue("s", Alert::new("b")).await.unwrap().id;
    let doc_a = q.get(a).unwrap().unwrap();
    let mut doc_b = q.get(b).unwrap().unwrap();
    db.go_down();
    assert!(matches!(
        q.enqueue("s", Alert::new("during")).await,
        Err(QueueError::Unavailable { .. })
    ));
    // Taken although nothing can be committed now: the dispatcher goes on with its work.
    q.save_outcome(&finished(doc_a)).await.unwrap();
    // An outcome, then a later save of the same alert while down: the later one stands.
    q.save_outcome(&finished(doc_b.clone())).await.unwrap();
    doc_b.routed = true;
    assert!(matches!(
        q.save(&doc_b).await,
        Err(QueueError::Unavailable { .. })
    ));
    db.come_back();
    enqueue_once_back(&q).await;
    assert!(
        q.get(a).unwrap().unwrap().is_finished(),
        "the kept outcome was written after the reconnect"
    );
    assert_eq!(q.get(b).unwrap().unwrap(), doc_b);
}
