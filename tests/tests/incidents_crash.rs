//! Incidents survive SIGKILL: the real host with the `ucwa` sink and the UCWA simulator
//! ([`alertbridge_testbed::incident_bed`]). Alice (level 1) is paged; the host is killed while
//! level 2's 3 s wait runs and stays down past its due time; after the restart Bob (level 2) is
//! paged once, right away — and a second SIGKILL and restart page nobody again.
//!
//! Before the incident engine was wired into `run`, a route naming `escalation` was refused at
//! load, so this failed at the host's start.

use std::time::Duration;

use alertbridge_testbed::{
    harness::wait_until,
    incident_bed::{ALICE, BOB, CAROL, IncidentBed, LONG, now_ms},
};

#[test]
fn a_level_due_while_the_host_was_killed_fires_once_after_the_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bed = IncidentBed::start(dir.path(), 3, 600);
    bed.emit("Disk%20full%20on%20db03", "disk");
    bed.wait_paged(ALICE, 1);
    // Level 1's page recorded as handed over, and its delivery as finished (a send whose
    // outcome a kill cut off is resent, marked as a repeat: not what this test is about).
    wait_until("level 1 handed over and delivered", LONG, || {
        bed.incident(1)["pages"][0]["handed"] == true
            && bed.host.alerts(10).iter().all(|a| a["state"] == "finished")
    });
    let opened = bed.incident(1)["opened_ms"].as_i64().unwrap_or_default();
    let due = opened + 3_000;

    // SIGKILL while level 2's wait runs; down past its due time.
    assert!(now_ms() < due - 500, "killed before level 2 is due");
    bed.host.kill9();
    std::thread::sleep(Duration::from_millis(
        u64::try_from(due + 500 - now_ms()).unwrap_or(0),
    ));
    assert!(bed.pages(BOB, 1).is_empty(), "nobody paged while down");
    let restarted = now_ms();
    bed.host.restart();

    // Level 2 fires once, right after the start.
    let bob = bed.wait_paged(BOB, 1);
    let after = i64::try_from(bob.at_unix_ms).unwrap_or(0) - restarted;
    assert!(after < 10_000, "Bob paged {after} ms after the restart");
    eprintln!("level 2 (due while down) paged {after} ms after the restart began");
    let inc = bed.incident(1);
    let pages = inc["pages"].as_array().cloned().unwrap_or_default();
    assert_eq!(pages.len(), 2, "{inc:#}");
    assert_eq!(pages[1]["level"], 2, "{inc:#}");
    assert!(
        pages[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("level 2")),
        "{inc:#}"
    );

    // Once: not again a moment later, nor after another SIGKILL and restart.
    wait_until("level 2's page delivered", LONG, || {
        bed.host.alerts(10).iter().all(|a| a["state"] == "finished")
    });
    bed.host.kill9();
    bed.host.restart();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        (bed.pages(ALICE, 1).len(), bed.pages(BOB, 1).len()),
        (1, 1),
        "{:#?}",
        bed.sim.all_received()
    );
    assert!(bed.texts(CAROL).is_empty());
    let inc = bed.incident(1);
    assert_eq!(inc["pages"].as_array().map(Vec::len), Some(2), "{inc:#}");
    assert_eq!(inc["state"], "open", "{inc:#}");
}
