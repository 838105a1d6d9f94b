//! A poison mail cannot block the mailbox (issue 12 §1), replayed through the real host and a
//! real Dovecot: a mail Dovecot cannot read (its file unreadable to the mail user, so every
//! RETR answers `-ERR`) sits between normal mails. The mails around it become alerts at once;
//! after `max_fetch_attempts` failures it is quarantined: one `mail.problem` alert, left on the
//! server, not fetched again — also not after a restart of the host.
//!
//! Needs Dovecot (see `pop3_host.rs`) and the built workspace.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use alertbridge_testbed::dovecot::*;
use alertbridge_testbed::harness::{Host, free_port, wait_until};

fn config(dir: &Path, admin: u16, env: &Dovecot, mailbox: &Mailbox) -> String {
    let d = dir.display();
    let user = &mailbox.user;
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{server}"
tls = "none"
username = "{user}"
password = "{user}pass"
state_dir = "{d}/pop3-state"
poll_interval_ms = 100
max_backoff_ms = 500
max_fetch_attempts = 3

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["{RECIPIENT}"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        server = env.addr
    )
}

#[test]
fn an_unreadable_mail_is_quarantined_once_and_the_mails_around_it_flow() {
    let Some(env) = dovecot() else { return };
    let mailbox = Mailbox::create(&env, "e2epoison");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let token = unix_micros();
    let mail = |i: usize| {
        plain_mail(
            &mailbox.user,
            &format!("m{i}-{token}@example.test"),
            &format!("mail #{i}"),
            "body",
        )
    };
    mailbox.deliver("a", &mail(1));
    // The size in the file name (as Dovecot's own delivery writes it) lets Dovecot list the
    // mail without opening it; mode 000 then makes every RETR and TOP fail.
    let poison = mail(2);
    let size = poison.len();
    let name = format!("{token}.poison.pop3-e2e,S={size},W={size}");
    let tmp = mailbox.dir.join("tmp").join(&name);
    std::fs::write(&tmp, &poison).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::rename(&tmp, mailbox.dir.join("new").join(&name)).unwrap();
    mailbox.deliver("c", &mail(3));

    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &env, &mailbox),
    );
    wait_until("the two readable mails at the sink", LONG, || {
        let r = records(dir.path());
        ["mail #1", "mail #3"]
            .iter()
            .all(|s| r.iter().any(|x| x["subject"] == *s))
    });
    wait_until("the problem alert", LONG, || records(dir.path()).len() >= 3);
    let recs = records(dir.path());
    let problem: Vec<_> = recs
        .iter()
        .filter(|r| !label(r, "mail.problem").is_empty())
        .collect();
    assert_eq!(problem.len(), 1, "{recs:?}");
    let p = problem[0];
    assert_eq!(
        (p["subject"].as_str(), p["severity"].as_str()),
        (Some("Mail quarantined: (subject unknown)"), Some("high")),
        "{p}"
    );
    assert!(
        label(p, "mail.problem").starts_with("server refused RETR"),
        "{p}"
    );
    assert_eq!(label(p, "mail.size"), size.to_string(), "{p}");
    wait_until("the readable mails deleted", LONG, || mailbox.count() == 1);
    // Polls go on; the quarantined mail is not fetched or reported again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(records(dir.path()).len(), 3);
    assert_eq!(
        host.instance("mail")["state"],
        "ok",
        "{}",
        host.instance("mail")
    );

    // A restart: the quarantine is remembered (state_dir), no second report.
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &env, &mailbox),
    );
    mailbox.deliver("d", &mail(4));
    wait_until("the next mail at the sink", LONG, || {
        records(dir.path())
            .iter()
            .any(|r| r["subject"] == "mail #4")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(records(dir.path()).len(), 4, "{:?}", records(dir.path()));
    assert_eq!(
        mailbox.count(),
        1,
        "the poison mail stays (on_quarantine = keep)"
    );
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
}
