//! The `pop3` source against a real Dovecot while the queue's disk is full (a real tmpfs filled
//! to ENOSPC): the queue goes down loudly, the source is told "queue unavailable, try later",
//! every mail stays in the mailbox, and once the disk has room again each mail becomes exactly
//! one IM and is deleted.
//!
//! Needs root (to mount the tmpfs; skipped with a message otherwise), Dovecot (`scripts/test`
//! starts it; by hand: `eval "$(scripts/dovecot.sh env DIR)"`) and the built workspace.

mod queue_support;

use std::{
    fs,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alertbridge_testbed::{
    dovecot::{Mailbox, dovecot},
    harness::{free_port, wait_until},
};
use queue_support::*;

const USER: &str = "tqueuefull";

/// Mail `n` of this test, about 30 kB, delivered to `mailbox` as `qfull.<n>.<pid>`.
fn deliver(mailbox: &Mailbox, n: usize) {
    let body = "disk full test line\r\n".repeat(1500);
    let mail = format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {USER}@example.test\r\nSubject: qfull {n}\r\n\
         Message-ID: <qfull-{n}-{}@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    mailbox.deliver_as(&format!("qfull.{n}.{}", std::process::id()), mail);
}

fn delivered_subjects(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["subject"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn pop3_keeps_the_mail_while_the_queue_disk_is_full_and_delivers_it_once_after() {
    let Some(env) = dovecot() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, 8 << 20) else {
        return;
    };
    let mailbox = Mailbox::create(&env, USER);
    let addr = env.addr.clone();
    let admin = free_port();
    let d = dir.path().display();
    let config = dir.path().join("alertbridge.toml");
    fs::write(
        &config,
        format!(
            r#"
[host]
data_dir = "{data}"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{addr}"
tls = "none"
username = "{USER}"
password = "{USER}pass"
state_dir = "{d}/pop3-state"
poll_interval_ms = 200
max_backoff_ms = 1000

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
            data = data.display()
        ),
    )
    .unwrap();
    let b = Bridge::start(&config, admin, &dir.path().join("host.log"), None);
    deliver(&mailbox, 0);
    wait_until("the first mail as an IM", LONG, || {
        delivered_subjects(dir.path()).contains(&"qfull 0".to_owned())
    });
    wait_until("the first mail deleted", LONG, || mailbox.count() == 0);

    let filler = fill(&data);
    for n in 1..=5 {
        deliver(&mailbox, n);
    }
    wait_until("the queue to go down", LONG, || {
        b.metric("alertbridge_queue_up") == Some(0.0)
    });
    let (code, health) = b.health();
    assert_eq!(code, 503, "{health}");
    // Several polls while the disk stays full. A mail may still be taken when a commit finds
    // room inside the file (then it is queued, acknowledged and deleted); every other one is
    // refused "try later" and stays on the server: none is lost.
    std::thread::sleep(Duration::from_secs(3));
    let kept = mailbox.count();
    let taken = b
        .metric_labelled("alertbridge_alerts_accepted_total", "source=\"mail\"")
        .unwrap_or(0.0) as usize
        - 1;
    assert!(
        kept >= 1,
        "every mail left the mailbox while the disk was full; log:\n{}",
        b.log()
    );
    assert_eq!(
        kept + taken,
        5,
        "a mail is neither on the server nor queued; log:\n{}",
        b.log()
    );
    assert!(
        b.log().contains("mail stays on the server") && b.log().contains("queue unavailable"),
        "the source was not told: {}",
        b.log()
    );

    fs::remove_file(&filler).unwrap();
    wait_until("every mail as an IM", LONG, || {
        delivered_subjects(dir.path()).len() >= 6
    });
    wait_until("the mailbox emptied", LONG, || mailbox.count() == 0);
    std::thread::sleep(Duration::from_millis(500));
    let mut got = delivered_subjects(dir.path());
    got.sort();
    let want: Vec<String> = (0..=5).map(|n| format!("qfull {n}")).collect();
    assert_eq!(got, want, "each mail exactly once; log:\n{}", b.log());
}
