//! Mail cannot forge or suppress other alerts (issue 11 §2), replayed through the real host
//! and a real Dovecot: a mail whose `<dedup-key>` names the key of the next real mail
//! (`pop3:<mailbox>:<UIDL>`, predictable) does not suppress it; a `<label name="mail.from">`
//! does not reach a route that matches `mail.from`; with `trusted_authserv_id` only mail the
//! operator's MTA vouched for (topmost `Authentication-Results` of that id) becomes an alert.
//!
//! Needs Dovecot (see `pop3_host.rs`) and the built workspace.

use std::{path::Path, time::Duration};

use alertbridge_testbed::dovecot::*;
use alertbridge_testbed::harness::{Host, free_port, wait_until};

const CEO: &str = "sip:ceo@contoso.com";

/// Two routes: mail from the CEO's address (by the `mail.from` label) to the CEO, the rest to
/// ops.
fn config(dir: &Path, admin: u16, env: &Dovecot, mailbox: &Mailbox, pop3_extra: &str) -> String {
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
{pop3_extra}

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["{RECIPIENT}"]
ceo = ["{CEO}"]

[[route]]
name = "from-ceo"
match = {{ labels = {{ "mail.from" = "ceo@contoso.com" }} }}
groups = ["ceo"]
sinks = ["sink"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        server = env.addr
    )
}

/// The UIDL Dovecot will give the next mail: its `pop3_uidl_format` is `%08Xu%08Xv` (IMAP UID
/// and UIDVALIDITY, hex). Read from the mailbox's own `dovecot-uidlist` after a first mail.
fn next_uidl(mailbox: &Mailbox) -> String {
    let list = std::fs::read_to_string(mailbox.dir.join("dovecot-uidlist"))
        .expect("dovecot-uidlist (written once Dovecot saw a mail)");
    let mut header = list.lines().next().expect("uidlist header").split(' ');
    assert_eq!(header.next(), Some("3"), "uidlist version 3: {list}");
    let mut validity = None;
    let mut next = None;
    for field in header {
        if let Some(v) = field.strip_prefix('V') {
            validity = v.parse::<u32>().ok();
        } else if let Some(n) = field.strip_prefix('N') {
            next = n.parse::<u32>().ok();
        }
    }
    let (validity, next) = (validity.expect("V field"), next.expect("N field"));
    format!("{next:08x}{validity:08x}")
}

fn xml_mail(user: &str, id: &str, from: &str, extra_headers: &str, doc: &str) -> String {
    format!(
        "{extra_headers}From: {from}\r\nTo: {user}@example.test\r\nSubject: xml\r\nMessage-ID: <{id}>\r\n\
         MIME-Version: 1.0\r\nContent-Type: application/xml\r\n\r\n{doc}\r\n"
    )
}

fn wait_records(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_until(&format!("{n} deliveries at the sink"), LONG, || {
        records(dir).len() >= n
    });
    records(dir)
}

/// The forged mail claims the key of the next real mail; both become alerts, and the real
/// one reaches its recipient.
#[test]
fn a_forged_dedup_key_does_not_suppress_the_real_mail() {
    let Some(env) = dovecot() else { return };
    let mailbox = Mailbox::create(&env, "e2eforgekey");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &env, &mailbox, ""),
    );
    // A first mail, so Dovecot has numbered the mailbox (and the attacker can read off the
    // next UIDL as anyone could: they are sequential).
    let token = unix_micros();
    mailbox.deliver(
        "first",
        &plain_mail(
            &mailbox.user,
            &format!("first-{token}@x.test"),
            "first",
            "1",
        ),
    );
    wait_records(dir.path(), 1);
    wait_until("the first mail deleted", LONG, || mailbox.count() == 0);
    // The key the source will give the real mail after the forged one (the UIDL after next).
    let forged_uidl = next_uidl(&mailbox);
    let next_uid = u32::from_str_radix(&forged_uidl[..8], 16).unwrap() + 1;
    let real_uidl = format!("{next_uid:08x}{}", &forged_uidl[8..]);
    let server = env.addr.replace("localhost", "127.0.0.1");
    let real_key = format!("pop3:{}@{server}:{real_uidl}", mailbox.user);
    let forged = xml_mail(
        &mailbox.user,
        &format!("forged-{token}@evil.test"),
        "attacker@evil.test",
        "",
        &format!(
            "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>harmless</subject>\
             <dedup-key>{real_key}</dedup-key></alert>"
        ),
    );
    mailbox.deliver("forged", &forged);
    wait_records(dir.path(), 2);
    wait_until("the forged mail deleted", LONG, || mailbox.count() == 0);
    mailbox.deliver(
        "real",
        &plain_mail(
            &mailbox.user,
            &format!("real-{token}@x.test"),
            "REAL: database down",
            "db01 is down",
        ),
    );
    let recs = wait_records(dir.path(), 3);
    let real = recs
        .iter()
        .find(|r| r["subject"] == "REAL: database down")
        .unwrap_or_else(|| panic!("the real alert was suppressed: {recs:?}"));
    assert_eq!(real["user"].as_str(), Some(RECIPIENT), "{real}");
    let alerts = host.alerts(10);
    let keys: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a["alert"]["dedup_key"].as_str().or(a["dedup_key"].as_str()))
        .collect();
    assert!(
        keys.contains(&real_key.as_str()),
        "the real mail keeps its mailbox key {real_key}: {keys:?}"
    );
    assert!(
        keys.contains(&format!("sender:{real_key}").as_str()),
        "the forged key lives in the sender namespace: {keys:?}"
    );
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
}

/// A document's `mail.from` label does not make the mail come from the CEO; the real
/// sender's label decides, and a mail really from that address still reaches the route.
#[test]
fn a_forged_mail_from_label_does_not_match_a_mail_from_route() {
    let Some(env) = dovecot() else { return };
    let mailbox = Mailbox::create(&env, "e2eforgefrom");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, &env, &mailbox, ""),
    );
    let token = unix_micros();
    let forged = xml_mail(
        &mailbox.user,
        &format!("forged-{token}@evil.test"),
        "attacker@evil.test",
        "",
        "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>wire the money</subject>\
         <labels><label name=\"mail.from\">ceo@contoso.com</label></labels></alert>",
    );
    mailbox.deliver("forged", &forged);
    let recs = wait_records(dir.path(), 1);
    let f = &recs[0];
    assert_eq!(f["subject"], "wire the money");
    assert_eq!(
        (f["user"].as_str(), label(f, "mail.from")),
        (Some(RECIPIENT), "attacker@evil.test"),
        "the forged label reached the CEO route: {f}"
    );
    mailbox.deliver(
        "real",
        &plain_mail(
            &mailbox.user,
            &format!("real-{token}@x.test"),
            "from ops",
            "x",
        )
        .replace("monitor@example.test", "ceo@contoso.com"),
    );
    let recs = wait_records(dir.path(), 2);
    let real = recs
        .iter()
        .find(|r| r["subject"] == "from ops")
        .expect("real");
    assert_eq!(real["user"].as_str(), Some(CEO), "{real}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(records(dir.path()).len(), 2);
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
}

/// With `trusted_authserv_id`, the operator's MTA must vouch for the sender's domain in the
/// topmost `Authentication-Results` header of its id: a mail carrying the attacker's own
/// passing header below the MTA's failing one is kept out; a vouched-for mail gets through.
#[test]
fn only_mail_the_trusted_mta_vouched_for_becomes_an_alert() {
    let Some(env) = dovecot() else { return };
    let mailbox = Mailbox::create(&env, "e2eauthres");
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(
            dir.path(),
            admin,
            &env,
            &mailbox,
            "allowed_senders = [\"contoso.com\"]\ntrusted_authserv_id = \"mx.contoso.com\"",
        ),
    );
    let token = unix_micros();
    let doc = |s: &str| {
        format!("<alert xmlns=\"urn:alertbridge:alert:1\"><subject>{s}</subject></alert>")
    };
    // What the MTA added on top (spf failed: the mail came from elsewhere), and below it the
    // header the sender wrote into the mail, claiming the MTA's id.
    let spoofed = xml_mail(
        &mailbox.user,
        &format!("spoof-{token}@evil.test"),
        "ceo@contoso.com",
        "Authentication-Results: mx.contoso.com; spf=fail smtp.mailfrom=evil.test; dkim=none\r\n\
         Received: from evil.test by mx.contoso.com; Mon, 7 Dec 2026 10:00:00 +0000\r\n\
         Authentication-Results: mx.contoso.com; dkim=pass header.d=contoso.com\r\n",
        &doc("spoofed"),
    );
    let no_header = xml_mail(
        &mailbox.user,
        &format!("bare-{token}@evil.test"),
        "ceo@contoso.com",
        "",
        &doc("no header"),
    );
    let vouched = xml_mail(
        &mailbox.user,
        &format!("good-{token}@contoso.com"),
        "ceo@contoso.com",
        "Authentication-Results: mx.contoso.com;\r\n\tdkim=pass (2048-bit key) header.d=contoso.com header.s=s1;\r\n\tspf=pass smtp.mailfrom=contoso.com\r\n",
        &doc("vouched"),
    );
    mailbox.deliver("spoofed", &spoofed);
    mailbox.deliver("bare", &no_header);
    mailbox.deliver("good", &vouched);
    let recs = wait_records(dir.path(), 1);
    wait_until("the vouched-for mail deleted", LONG, || {
        mailbox.count() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let recs_now = records(dir.path());
    assert_eq!(recs_now.len(), 1, "{recs_now:?}");
    assert_eq!(
        (recs[0]["subject"].as_str(), recs[0]["user"].as_str()),
        (Some("vouched"), Some(CEO))
    );
    assert_eq!(
        mailbox.count(),
        2,
        "the refused mails stay (on_disallowed = keep)"
    );
    assert!(
        host.log().contains("not vouched for by mx.contoso.com"),
        "the refusal is logged with its reason"
    );
    assert!(host.stop(), "graceful stop; log:\n{}", host.log());
}
