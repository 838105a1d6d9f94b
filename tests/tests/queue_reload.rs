//! A reload cannot change how the open queue keeps its dedup index and history: such a change
//! is refused with the reason (it needs a restart) and the running settings stay — on redb and
//! on the segment log.

mod queue_support;

use alertbridge_testbed::harness::free_port;
use queue_support::*;

#[test]
fn a_reload_that_changes_the_dedup_bound_is_refused_as_needing_a_restart() {
    reload_refused(Backend::Redb);
}

#[test]
fn a_reload_that_changes_the_dedup_bound_is_refused_as_needing_a_restart_on_the_log() {
    reload_refused(Backend::Log);
}

fn reload_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (admin, hook) = (free_port(), free_port());
    let config = |extra| webhook_config_on(backend, dir.path(), &data, admin, hook, extra);
    let b = Bridge::start(
        &config("dedup_max_keys = 100"),
        admin,
        &dir.path().join("host.log"),
        None,
    );
    assert_eq!(data.join("queue-log").is_dir(), backend == Backend::Log);
    config("dedup_max_keys = 5");
    let (status, _, body) =
        http(&format!("{}/-/reload", b.admin), "POST", &[], "").expect("the admin API answers");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("dedup_max_keys") && body.contains("needs a restart"),
        "{body}"
    );
    // The running queue still takes alerts.
    assert_eq!(post_alert(hook, &alert("after-reload", 10)).0, 202);
}
