//! A reload cannot change how the open queue keeps its dedup index and history: such a change
//! is refused with the reason (it needs a restart) and the running settings stay.

mod queue_support;

use alertbridge_testbed::harness::free_port;
use queue_support::*;

#[test]
fn a_reload_that_changes_the_dedup_bound_is_refused_as_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (admin, hook) = (free_port(), free_port());
    let config = webhook_config(dir.path(), &data, admin, hook, "dedup_max_keys = 100");
    let b = Bridge::start(&config, admin, &dir.path().join("host.log"), None);
    webhook_config(dir.path(), &data, admin, hook, "dedup_max_keys = 5");
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
