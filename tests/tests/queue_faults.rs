//! The durable queue under storage faults, through the real binary and real sockets: a full
//! disk (a real tmpfs filled to ENOSPC) and a file-size limit (RLIMIT_FSIZE: EFBIG) make the
//! queue loud — `/healthz` 503 naming it, `alertbridge_queue_up 0`, the webhook answering 503
//! with Retry-After — and nothing acknowledged is lost; once the disk has room again the queue
//! reopens by itself and takes alerts again. Both run on redb and on the segment log.
//!
//! Needs the built workspace and root (to mount the tmpfs; skipped with a message otherwise).

mod queue_support;

use std::{fs, time::Duration};

use alertbridge_testbed::harness::{free_port, wait_until};
use queue_support::*;

/// Posts `alert(prefix{i})` until the webhook answers 503; returns the seqs it acknowledged
/// (202) and the 503's head and body.
fn post_until_refused(hook: u16, prefix: &str, body_bytes: usize) -> (Vec<String>, String, String) {
    let mut acked = Vec::new();
    for i in 0..2000 {
        let seq = format!("{prefix}{i}");
        let (status, head, body) = post_alert(hook, &alert(&seq, body_bytes));
        match status {
            202 => acked.push(seq),
            503 => return (acked, head, body),
            other => panic!("post {seq}: unexpected {other}: {body}"),
        }
    }
    panic!(
        "the webhook never refused: {} posts acknowledged",
        acked.len()
    );
}

/// What every fault must look like from outside: health names the queue, the metric is 0.
fn assert_queue_down(b: &Bridge) {
    let (code, health) = b.health();
    assert_eq!(code, 503, "/healthz while the queue is down: {health}");
    let failing = health["failing"].as_array().cloned().unwrap_or_default();
    assert!(
        failing.iter().any(|f| f["name"] == "queue"),
        "/healthz does not name the queue: {health}"
    );
    assert_eq!(b.metric("alertbridge_queue_up"), Some(0.0));
}

#[test]
fn a_full_disk_makes_the_queue_loud_refuses_with_retry_after_and_recovers_losing_nothing() {
    full_disk(Backend::Redb);
}

#[test]
fn a_full_disk_makes_the_log_queue_loud_refuses_with_retry_after_and_recovers_losing_nothing() {
    full_disk(Backend::Log);
}

fn full_disk(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, 8 << 20) else {
        return;
    };
    let (admin, hook) = (free_port(), free_port());
    let config = webhook_config_on(backend, dir.path(), &data, admin, hook, "");
    let log = dir.path().join("host.log");
    let b = Bridge::start(&config, admin, &log, None);
    assert_eq!(b.metric("alertbridge_queue_up"), Some(1.0));
    assert_eq!(data.join("queue-log").is_dir(), backend == Backend::Log);
    let mut acked = Vec::new();
    for i in 0..20 {
        let seq = format!("before{i}");
        let (status, _, body) = post_alert(hook, &alert(&seq, 100));
        assert_eq!(status, 202, "{body}");
        acked.push(seq);
    }

    let filler = fill(&data);
    let (more, head, body) = post_until_refused(hook, "full", 30_000);
    acked.extend(more);
    assert!(
        head.contains("\r\nretry-after:"),
        "503 without Retry-After: {head}"
    );
    assert!(body.contains("queue unavailable"), "{body}");
    assert_queue_down(&b);
    assert!(b.log().contains("Queue commit failed"), "{}", b.log());
    // Still down while the disk stays full: every post is refused, none acknowledged.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(post_alert(hook, &alert("still-full", 30_000)).0, 503);
    assert_queue_down(&b);

    fs::remove_file(&filler).unwrap();
    wait_until("the queue to reopen by itself", LONG, || {
        b.metric("alertbridge_queue_up") == Some(1.0)
    });
    assert_eq!(b.health().0, 200, "{}", b.health().1);
    for i in 0..10 {
        let seq = format!("after{i}");
        let (status, _, body) = post_alert(hook, &alert(&seq, 100));
        assert_eq!(status, 202, "after the reopen: {body}");
        acked.push(seq);
    }
    assert!(b.metric("alertbridge_queue_faults_total").unwrap_or(0.0) >= 1.0);
    wait_delivered_once(dir.path(), &acked, || b.log());
    assert!(b.log().contains("Queue reopened"), "{}", b.log());
}

#[test]
fn a_file_size_limit_takes_the_queue_down_loudly_and_loses_nothing_acknowledged() {
    file_size_limit(Backend::Redb);
}

#[test]
fn a_file_size_limit_takes_the_log_queue_down_loudly_and_loses_nothing_acknowledged() {
    file_size_limit(Backend::Log);
}

fn file_size_limit(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (admin, hook) = (free_port(), free_port());
    let config = webhook_config_on(backend, dir.path(), &data, admin, hook, "");
    let log = dir.path().join("host.log");
    // Hold every alert (recipient offline) so the queue file keeps growing.
    set_online(dir.path(), false);
    let mut b = Bridge::start(&config, admin, &log, Some(6 << 20));
    assert_eq!(data.join("queue-log").is_dir(), backend == Backend::Log);
    let (acked, head, body) = post_until_refused(hook, "big", 30_000);
    assert!(!acked.is_empty(), "nothing was taken before the limit");
    assert!(
        head.contains("\r\nretry-after:"),
        "503 without Retry-After: {head}"
    );
    assert!(
        body.contains("queue unavailable"),
        "{body}; log:\n{}",
        b.log()
    );
    assert_queue_down(&b);
    let status = b.child.as_mut().unwrap().try_wait().unwrap();
    assert!(
        status.is_none(),
        "the host died at the file size limit ({status:?})"
    );
    b.stop();

    // Without the limit every acknowledged alert is there and goes out once.
    set_online(dir.path(), true);
    let b = Bridge::start(&config, admin, &log, None);
    assert_eq!(b.metric("alertbridge_queue_up"), Some(1.0));
    wait_delivered_once(dir.path(), &acked, || b.log());
}
