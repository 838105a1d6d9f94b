//! Alert mails through the real host and a real Dovecot, read by the kit's alert format parser
//! (docs/alert-format.md), the same one the webhook uses: a refused alert document becomes a
//! plain-text alert whose `mail.problem` names the field, line and column; a document the old
//! pop3 parser let through (an empty recipient name) is refused the same way as by the webhook;
//! a good one arrives field by field. Nothing is lost: every mail becomes an alert and is
//! deleted once taken.
//!
//! Needs Dovecot (`scripts/test` starts it; by hand: `scripts/dovecot.sh start DIR && eval
//! "$(scripts/dovecot.sh env DIR)"`) and the built workspace (`cargo build -p alertbridge -p
//! alertbridge-pop3 -p alertbridge-test-sink`).

use std::{collections::BTreeMap, path::Path};

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
max_backoff_ms = 1000
connect_timeout_ms = 3000
read_timeout_ms = 10000

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
redeliveries_file = "{d}/redeliveries.txt"

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

fn xml_mail(user: &str, id: &str, subject: &str, document: &str) -> String {
    format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {user}@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: application/xml; charset=utf-8\r\n\r\n\
         {document}"
    )
}

#[test]
fn refused_alert_documents_say_where_and_good_ones_arrive_field_by_field() {
    let Some(env) = dovecot() else { return };
    let mailbox = Mailbox::create(&env, "e2eformat");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &env, &mailbox),
    );
    let token = unix_micros();
    let user = mailbox.user.clone();
    let bad_id = format!("bad-severity-{token}@example.test");
    let empty_id = format!("empty-group-{token}@example.test");
    let good_id = format!("good-{token}@example.test");
    mailbox.deliver(
        "bad",
        &xml_mail(
            &user,
            &bad_id,
            "bad severity",
            "<alert xmlns=\"urn:alertbridge:alert:1\">\r\n  <subject>x</subject>\r\n  <severity>urgent</severity>\r\n</alert>\r\n",
        ),
    );
    mailbox.deliver(
        "empty",
        &xml_mail(
            &user,
            &empty_id,
            "empty group",
            "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>x</subject>\r\n<recipients><group/></recipients></alert>\r\n",
        ),
    );
    mailbox.deliver(
        "good",
        &xml_mail(
            &user,
            &good_id,
            "ignored",
            "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>Disk full on db01</subject>\
             <severity>High</severity><expires>2099-12-01T10:00:00Z</expires></alert>\r\n",
        ),
    );
    wait_until("three alerts at the sink", LONG, || {
        records(dir.path()).len() >= 3
    });
    wait_until("every mail deleted", LONG, || mailbox.count() == 0);
    let by_id: BTreeMap<String, serde_json::Value> = records(dir.path())
        .into_iter()
        .map(|r| (label(&r, "mail.message_id").to_owned(), r))
        .collect();
    let bad = &by_id[&bad_id];
    assert_eq!(
        (bad["subject"].as_str(), label(bad, "mail.problem")),
        (
            Some("bad severity"),
            "`severity` at line 3 column 30: unknown severity \"urgent\", expected info, low, normal, high or critical"
        ),
        "{bad}"
    );
    let empty = &by_id[&empty_id];
    assert_eq!(
        (empty["subject"].as_str(), label(empty, "mail.problem")),
        (
            Some("empty group"),
            "`group` at line 2 column 21: group names must not be empty"
        ),
        "{empty}"
    );
    let good = &by_id[&good_id];
    assert_eq!(
        (good["subject"].as_str(), good["severity"].as_str()),
        (Some("Disk full on db01"), Some("high")),
        "{good}"
    );
    assert!(good["labels"].get("mail.problem").is_none(), "{good}");
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
}
