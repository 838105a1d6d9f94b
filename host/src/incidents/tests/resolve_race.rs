//! A resolve that arrives before its incident opened (the firing alert still in flight): the
//! firing alert accepted before it opens its incident already resolved and pages nobody; one
//! accepted after it pages; the memory expires; it survives a restart on the redb store.

use super::*;

async fn take(run: &Run, id: u64, accepted_ms: i64) -> Opened {
    take_key(run, "fp1", id, accepted_ms).await
}

async fn take_key(run: &Run, key: &str, id: u64, accepted_ms: i64) -> Opened {
    run.engine
        .take_alert(
            id,
            accepted_ms,
            "am",
            &alert("Disk full on db1", Some(key)),
            "critical",
            "ops",
            true,
        )
        .await
        .unwrap()
}

async fn state(run: &Run, id: IncidentId) -> IncidentState {
    run.engine.get(id).await.unwrap().state
}

async fn resolve_early(run: &Run) {
    resolve_key(run, "fp1").await;
}

async fn resolve_key(run: &Run, key: &str) {
    let found = run
        .engine
        .resolve_by_key(key, "Alertmanager")
        .await
        .unwrap();
    assert!(found.is_none(), "no incident is open yet");
}

#[tokio::test(start_paused = true)]
async fn a_resolve_before_its_older_firing_alert_opens_it_resolved_and_pages_nobody() {
    let run = start(three_levels());
    wait(1).await;
    resolve_early(&run).await;
    wait(2).await;
    // The firing alert was accepted before the resolve (it was in flight).
    let o = take(&run, 1, T0).await;
    let inc = run.engine.get(o.id).await.unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    let mark = inc.resolved.clone().unwrap();
    assert_eq!((mark.by.as_str(), mark.at_ms), ("Alertmanager", T0 + 1000));
    assert!(inc.pages.is_empty() && inc.next.is_none());
    // Taken again (a crash before its record was saved): the same incident.
    assert_eq!(take(&run, 1, T0).await.id, o.id);
    wait(5000).await;
    assert!(run.pager.users_paged().is_empty(), "nobody paged");
    // The remembered resolve was consumed: another in-flight alert of the key pages.
    let again = take(&run, 2, T0).await;
    assert_ne!(again.id, o.id);
    assert_eq!(run.pager.users_paged(), vec![at(5003, "alice")]);
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_firing_alert_accepted_after_the_resolve_is_a_new_problem_and_pages() {
    // A flapping check: firing (in flight), resolved, firing again.
    let run = start(three_levels());
    wait(1).await;
    resolve_early(&run).await;
    wait(1).await;
    let first = take(&run, 1, T0).await;
    let second = take(&run, 2, T0 + 1500).await;
    assert_eq!(state(&run, first.id).await, IncidentState::Resolved);
    assert_eq!(state(&run, second.id).await, IncidentState::Open);
    assert_eq!(run.pager.users_paged(), vec![at(2, "alice")]);
    // A resolve older than the alert is spent by it: once that incident is resolved, an
    // older alert of the key opens normally.
    resolve_key(&run, "fp2").await;
    wait(1).await;
    let newer = take_key(&run, "fp2", 3, T0 + 2500).await;
    run.engine.resolve(newer.id, "x").await.unwrap();
    let older = take_key(&run, "fp2", 4, T0).await;
    assert_eq!(state(&run, older.id).await, IncidentState::Open);
    assert_eq!(
        run.pager.users_paged(),
        vec![at(2, "alice"), at(3, "alice"), at(3, "alice")]
    );
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_remembered_resolve_expires() {
    let run = start(three_levels());
    resolve_key(&run, "fp1").await;
    resolve_key(&run, "fp2").await;
    // Within the 10 minutes it applies; after them, it is forgotten.
    wait(9 * 60).await;
    let kept = take_key(&run, "fp2", 2, T0 - 1).await;
    wait(2 * 60).await;
    let expired = take_key(&run, "fp1", 1, T0 - 1).await;
    assert_eq!(state(&run, kept.id).await, IncidentState::Resolved);
    assert_eq!(state(&run, expired.id).await, IncidentState::Open);
    assert_eq!(run.pager.users_paged(), vec![at(660, "alice")]);
    run.stop.cancel();
    run.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_remembered_resolve_survives_a_restart_on_the_redb_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbIncidents::open(dir.path()).unwrap());
    let run = start_on(store, Arc::default(), three_levels(), T0);
    resolve_early(&run).await;
    run.stop.cancel();
    run.task.await.unwrap();
    drop(run.engine);
    // Back 30 s later, on the same file.
    let store = Arc::new(RedbIncidents::open(dir.path()).unwrap());
    let run = start_on(store, Arc::default(), three_levels(), T0 + 30_000);
    let o = take(&run, 1, T0 - 10).await;
    let inc = run.engine.get(o.id).await.unwrap();
    assert_eq!(inc.state, IncidentState::Resolved);
    assert_eq!(inc.resolved.unwrap().by, "Alertmanager");
    wait(5000).await;
    assert!(run.pager.users_paged().is_empty(), "nobody paged");
    // Consumed durably: after another restart the key's next older alert opens normally.
    run.stop.cancel();
    run.task.await.unwrap();
    drop(run.engine);
    let store = Arc::new(RedbIncidents::open(dir.path()).unwrap());
    let run = start_on(store, Arc::default(), three_levels(), T0 + 40_000);
    let two = take(&run, 2, T0 - 10).await;
    assert_eq!(
        run.engine.get(two.id).await.unwrap().state,
        IncidentState::Open
    );
    run.stop.cancel();
    run.task.await.unwrap();
}
