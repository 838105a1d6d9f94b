//! Outcomes after a send on the PostgreSQL queue (`Queue::save_outcome`) through a database
//! fault: taken at once, kept, committed after the reconnect, and never ahead of a later save
//! of the same alert. That they ride in the next transaction, are committed within the hold
//! time and at close, and keep their order with saves, the backend contract checks
//! ([`crate::queue::contract_tests`], instantiated in [`super::tests`]).

use alertbridge_plugin_api::Alert;

use super::tests::{TestDb, enqueue_once_back, open, told};
use crate::queue::{Queue, QueueError, contract_tests::finished};

#[tokio::test]
async fn an_outcome_while_the_database_is_down_is_taken_kept_and_committed_after_the_reconnect() {
    let Some(db) = TestDb::new() else { return };
    let (on_commit, _rx) = told();
    let q = open(&db, "a", 60_000, on_commit);
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
