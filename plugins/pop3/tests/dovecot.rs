//! The `pop3` source against a real Dovecot on loopback (plain, STLS, POP3S), through
//! `TestHost`. Start Dovecot first:
//!
//! ```sh
//! scripts/dovecot.sh start /tmp/alertbridge-dovecot && eval "$(scripts/dovecot.sh env /tmp/alertbridge-dovecot)"
//! cargo nextest run -p alertbridge-pop3 --test dovecot
//! ```
//!
//! Each test owns one mailbox user (see `TEST_USERS` in the script), so tests run in parallel.
//! Without the environment each test skips with one line saying what to start; with
//! `ALERTBRIDGE_REQUIRE_SERVERS=1` (`scripts/test`) it fails instead.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    AlertStatus, HealthState, kit::Setup, kit::Source as _, testing::TestHost,
};
use alertbridge_pop3::source::Pop3Source;
use tokio::task::JoinHandle;

struct Env {
    pop3: String,
    pop3s: String,
    ca: String,
    maildirs: PathBuf,
    ctl: String,
}

/// The test Dovecot from the variables `scripts/dovecot.sh env` prints, if they are set and it
/// answers. Otherwise the test skips, printing one line that says how to start it, or fails
/// when `ALERTBRIDGE_REQUIRE_SERVERS` is set (as `scripts/test` does): CI cannot pass by skipping.
fn env() -> Option<Env> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let found = (|| {
        let env = Env {
            pop3: var("ALERTBRIDGE_TEST_POP3_ADDR")?,
            pop3s: var("ALERTBRIDGE_TEST_POP3S_ADDR")?,
            ca: var("ALERTBRIDGE_TEST_POP3_CA")?,
            maildirs: PathBuf::from(var("ALERTBRIDGE_TEST_MAILDIR_ROOT")?),
            ctl: var("ALERTBRIDGE_TEST_DOVECOT_CTL")?,
        };
        std::net::TcpStream::connect(&env.pop3)
            .map_err(|e| format!("nothing answers at {} ({e})", env.pop3))?;
        Ok::<_, String>(env)
    })();
    match found {
        Ok(env) => Some(env),
        Err(why) => {
            let hint = "run scripts/test, or `scripts/dovecot.sh start DIR` and eval \
                        \"$(scripts/dovecot.sh env DIR)\"";
            let required = std::env::var("ALERTBRIDGE_REQUIRE_SERVERS")
                .is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
            assert!(
                !required,
                "Dovecot is required (ALERTBRIDGE_REQUIRE_SERVERS is set) but {why}: {hint}"
            );
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            // Past the test harness's capture, so `cargo test` shows it; one write of the
            // whole line, so lines of tests running side by side do not interleave.
            let line = format!("skipped {test}: no Dovecot ({why}) — {hint}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

/// One test's mailbox: its Maildir, emptied at the start.
struct Mailbox {
    user: &'static str,
    dir: PathBuf,
}

impl Mailbox {
    fn new(env: &Env, user: &'static str) -> Self {
        let dir = env.maildirs.join(user).join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            let path = dir.join(sub);
            assert!(
                path.is_dir(),
                "{} missing: start Dovecot with scripts/dovecot.sh",
                path.display()
            );
            for entry in std::fs::read_dir(&path).expect("list maildir").flatten() {
                std::fs::remove_file(entry.path()).expect("empty maildir");
            }
        }
        Self { user, dir }
    }

    /// Drops a mail into `new/` the Maildir way (write in `tmp/`, rename).
    fn deliver(&self, name: &str, mail: &str) {
        let file = format!(
            "{}.{name}.{}.alertbridge-test",
            unix_micros(),
            std::process::id()
        );
        let tmp = self.dir.join("tmp").join(&file);
        std::fs::write(&tmp, mail).expect("write mail");
        std::fs::rename(&tmp, self.dir.join("new").join(&file)).expect("deliver mail");
    }

    fn deliver_alerts(&self, from: usize, n: usize) {
        for i in from..from + n {
            self.deliver(
                &format!("m{i}"),
                &alert_mail(self.user, i, "monitor@example.test"),
            );
        }
    }

    /// Mails on the server (new and seen).
    fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|s| std::fs::read_dir(self.dir.join(s)).map_or(0, |d| d.count()))
            .sum()
    }
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn alert_mail(user: &str, i: usize, from: &str) -> String {
    format!(
        "From: Monitoring <{from}>\r\nTo: {user}@example.test\r\nSubject: {user} alert #{i}\r\n\
         Message-ID: <{user}-{i}-{}@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Disk {i} is full.\r\n.leading dot line\r\n",
        unix_micros()
    )
}

struct Running {
    source: Arc<Pop3Source>,
    host: TestHost,
    stop: alertbridge_plugin_api::kit::CancellationToken,
    task: JoinHandle<Result<(), alertbridge_plugin_api::PluginError>>,
}

impl Running {
    /// Waits for `cond`; a timeout reports the source's health.
    async fn wait(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < LONG,
                "timed out after {LONG:?} waiting for {what}; health: {}",
                self.source.health()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn subjects(&self) -> BTreeSet<String> {
        self.host
            .accepted()
            .into_iter()
            .map(|a| a.subject)
            .collect()
    }

    async fn stop(self) -> TestHost {
        self.stop.cancel();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("source stops in time");
        result.expect("source task").expect("source run");
        self.host
    }
}

fn config(server: &str, tls: &str, user: &str, state_dir: &Path, extra: &str) -> String {
    format!(
        "server = \"{server}\"\ntls = \"{tls}\"\nusername = \"{user}\"\npassword = \"{user}pass\"\n\
         poll_interval_ms = 100\nmax_backoff_ms = 2000\nconnect_timeout_ms = 3000\nread_timeout_ms = 5000\n\
         state_dir = \"{}\"\n{extra}",
        state_dir.display()
    )
}

fn start(config_toml: String, host: TestHost) -> Running {
    let setup = Setup {
        instance: "pop3-test".into(),
        kind: "pop3".into(),
        config_toml,
        host: host.host(),
    };
    let source = Arc::new(Pop3Source::new(setup).expect("valid config"));
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    Running {
        source,
        host,
        stop,
        task,
    }
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LONG: Duration = Duration::from_secs(60);

async fn drain_over(server: &str, tls: &str, user: &'static str, extra: &str) {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, user);
    let state = tempfile::tempdir().expect("tempdir");
    mailbox.deliver_alerts(0, 3);
    let run = start(
        config(server, tls, user, state.path(), extra),
        TestHost::new(user),
    );
    run.wait("3 alerts", |r| r.host.accepted().len() == 3).await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    let expected: BTreeSet<String> = (0..3).map(|i| format!("{user} alert #{i}")).collect();
    assert_eq!(run.subjects(), expected);
    let alert = &run.host.accepted()[0];
    assert!(
        alert.body.starts_with("Disk ") && alert.body.ends_with("\n.leading dot line"),
        "{:?}",
        alert.body
    );
    assert_eq!(alert.labels["mail.from"], "monitor@example.test");
    let key = alert.dedup_key.as_deref().expect("dedup key");
    assert!(
        key.starts_with(&format!("pop3:{user}@127.0.0.1:")) && key.len() > 30,
        "{key}"
    );
    // New mail keeps coming in while the source runs.
    mailbox.deliver_alerts(3, 2);
    wait_for("2 more alerts", LONG, || run.host.accepted().len() == 5).await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    assert_eq!(
        run.source.health().state,
        HealthState::OK,
        "{}",
        run.source.health()
    );
    run.stop().await;
}

#[tokio::test]
async fn plain_new_mail_becomes_alerts_and_is_deleted() {
    let Some(env) = env() else { return };
    drain_over(&env.pop3, "none", "tplain", "").await;
}

#[tokio::test]
async fn stls_new_mail_becomes_alerts() {
    let Some(env) = env() else { return };
    drain_over(
        &env.pop3,
        "starttls",
        "tstls",
        &format!("ca_file = \"{}\"\nauth = \"user\"\n", env.ca),
    )
    .await;
}

#[tokio::test]
async fn pop3s_new_mail_becomes_alerts_and_untrusted_certificates_are_refused() {
    let Some(env) = env() else { return };
    drain_over(
        &env.pop3s,
        "implicit",
        "tpop3s",
        &format!("ca_file = \"{}\"\n", env.ca),
    )
    .await;

    // Without the test CA the self-signed certificate is not trusted: no session, mail stays.
    let mailbox = Mailbox::new(&env, "tpop3s");
    mailbox.deliver_alerts(0, 1);
    let state = tempfile::tempdir().expect("tempdir");
    let run = start(
        config(&env.pop3s, "implicit", "tpop3s", state.path(), ""),
        TestHost::new("tpop3s"),
    );
    wait_for("a TLS error in health", LONG, || {
        run.source
            .health()
            .message
            .contains("TLS handshake with 127.0.0.1")
    })
    .await;
    assert_eq!(run.source.health().state, HealthState::DEGRADED);
    assert!(
        run.source.health().message.contains("certificate"),
        "{}",
        run.source.health()
    );
    assert_eq!((run.host.accepted().len(), mailbox.count()), (0, 1));
    run.stop().await;
}

#[tokio::test]
async fn mail_is_deleted_only_after_the_host_took_its_alert() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "trefuse");
    let state = tempfile::tempdir().expect("tempdir");
    mailbox.deliver_alerts(0, 2);
    let host = TestHost::new("trefuse");
    host.refuse_next(3);
    let run = start(config(&env.pop3, "none", "trefuse", state.path(), ""), host);
    wait_for("a refusal in health", LONG, || {
        run.source
            .health()
            .message
            .contains("host refused the alert: queue full")
    })
    .await;
    assert_eq!(
        (run.host.accepted().len(), mailbox.count()),
        (0, 2),
        "refused mail must stay on the server"
    );
    wait_for("both alerts once the host takes them", LONG, || {
        run.host.accepted().len() == 2
    })
    .await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    // Both mails are submitted together: three refusals take two sessions.
    assert!(run.source.counters().failures.load(Ordering::Relaxed) >= 2);
    run.stop().await;
}

#[tokio::test]
async fn keep_mode_deletes_nothing_and_submits_nothing_twice_across_restarts() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tkeep");
    let state = tempfile::tempdir().expect("tempdir");
    let cfg = || config(&env.pop3, "none", "tkeep", state.path(), "keep = true\n");
    mailbox.deliver_alerts(0, 3);
    let run = start(cfg(), TestHost::new("tkeep"));
    wait_for("3 alerts", LONG, || run.host.accepted().len() == 3).await;
    let sessions = run.source.counters().sessions.load(Ordering::Relaxed);
    wait_for("3 more polls", LONG, || {
        run.source.counters().sessions.load(Ordering::Relaxed) >= sessions + 3
    })
    .await;
    assert_eq!((run.host.accepted().len(), mailbox.count()), (3, 3));
    run.stop().await;

    // A new instance (a fresh host, so no dedup can hide a resubmit) on the same state.
    let run = start(cfg(), TestHost::new("tkeep"));
    wait_for("3 polls", LONG, || {
        run.source.counters().sessions.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(
        run.host.accepted().len(),
        0,
        "a restart resubmitted kept mail"
    );
    mailbox.deliver_alerts(3, 1);
    wait_for("the new mail's alert", LONG, || {
        run.host.accepted().len() == 1
    })
    .await;
    assert_eq!(run.host.accepted()[0].subject, "tkeep alert #3");
    assert_eq!(mailbox.count(), 4);
    run.stop().await;
}

#[tokio::test]
async fn a_server_restart_mid_session_loses_nothing() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "trestart");
    let state = tempfile::tempdir().expect("tempdir");
    const N: usize = 400;
    mailbox.deliver_alerts(0, N);
    let host = TestHost::new("trestart");
    // Slow submits keep the session open long enough to restart the server under it.
    host.script(
        (0..N).map(|_| alertbridge_plugin_api::testing::Answer::Delay(Duration::from_millis(200))),
    );
    let run = start(
        config(
            &env.pop3,
            "none",
            "trestart",
            state.path(),
            "max_messages_per_session = 100\n",
        ),
        host,
    );
    wait_for("the first alerts", LONG, || run.host.accepted().len() >= 10).await;
    // Dovecot daemonizes: keep it off this test's output pipes.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} restart", env.ctl))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run dovecot ctl");
    assert!(status.success(), "{} restart failed", env.ctl);
    wait_for("every alert", LONG, || run.host.accepted().len() == N).await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    let expected: BTreeSet<String> = (0..N).map(|i| format!("trestart alert #{i}")).collect();
    assert_eq!(run.subjects(), expected);
    run.stop().await;
}

#[tokio::test]
async fn a_backlog_drains_in_overlapping_sessions_each_mail_alerted_once() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tbatch");
    let state = tempfile::tempdir().expect("tempdir");
    // Three sessions' worth and a few more: each next session logs in while the one before
    // still holds (and is deleting) its mails, and must leave them out.
    const MAX: usize = 50;
    const N: usize = 3 * MAX + 7;
    mailbox.deliver_alerts(0, N);
    let extra = format!("max_messages_per_session = {MAX}\n");
    let run = start(
        config(&env.pop3, "none", "tbatch", state.path(), &extra),
        TestHost::new("tbatch"),
    );
    run.wait("every alert", |r| r.host.accepted().len() == N)
        .await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    let expected: BTreeSet<String> = (0..N).map(|i| format!("tbatch alert #{i}")).collect();
    assert_eq!(run.subjects(), expected);
    let counters = run.source.counters();
    assert_eq!(
        counters.alerts.load(Ordering::Relaxed),
        N as u64,
        "a mail was submitted twice"
    );
    assert_eq!(counters.failures.load(Ordering::Relaxed), 0);
    run.wait("the sessions to be counted", |r| {
        r.source.counters().sessions.load(Ordering::Relaxed) >= 4
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_and_is_retried() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "twrongpw");
    let state = tempfile::tempdir().expect("tempdir");
    mailbox.deliver_alerts(0, 1);
    let cfg =
        config(&env.pop3, "none", "twrongpw", state.path(), "").replace("twrongpwpass", "wrong");
    let run = start(cfg, TestHost::new("twrongpw"));
    // (Another test may restart Dovecot meanwhile: wait for the error rather than sample it.)
    run.wait("the authentication error in health", |r| {
        r.source.health().message
            == "authentication (AUTH PLAIN) refused by the server: [AUTH] Authentication failed."
    })
    .await;
    assert_eq!(run.source.health().state, HealthState::DEGRADED);
    run.wait("a retry", |r| {
        r.source.counters().failures.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert_eq!((run.host.accepted().len(), mailbox.count()), (0, 1));
    run.stop().await;
}

#[tokio::test]
async fn disallowed_senders_are_kept_and_not_fetched_again() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tdisallow");
    let state = tempfile::tempdir().expect("tempdir");
    mailbox.deliver("ok", &alert_mail("tdisallow", 1, "monitor@example.test"));
    mailbox.deliver(
        "spam",
        &alert_mail("tdisallow", 2, "someone@elsewhere.test"),
    );
    let extra = "allowed_senders = [\"example.test\"]\n";
    let run = start(
        config(&env.pop3, "none", "tdisallow", state.path(), extra),
        TestHost::new("tdisallow"),
    );
    wait_for("the allowed alert", LONG, || run.host.accepted().len() == 1).await;
    let sessions = run.source.counters().sessions.load(Ordering::Relaxed);
    wait_for("3 more polls", LONG, || {
        run.source.counters().sessions.load(Ordering::Relaxed) >= sessions + 3
    })
    .await;
    assert_eq!(run.host.accepted()[0].subject, "tdisallow alert #1");
    assert_eq!(
        mailbox.count(),
        1,
        "the disallowed mail must stay on the server"
    );
    assert_eq!(run.source.counters().disallowed.load(Ordering::Relaxed), 1);
    run.stop().await;
}

/// Oversize mail is quarantined: left on the server, reported once in a `mail.problem` alert
/// (also across a restart), and the mail after it flows; then a dot-stuffed mail just under
/// the limit is fetched like any other.
#[tokio::test]
async fn oversize_and_dot_stuffed_mail_never_block_the_mailbox() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tsize");
    let state = tempfile::tempdir().expect("tempdir");
    let big = alert_mail("tsize", 1, "monitor@example.test")
        + &"x".repeat(70).repeat(100).replace("xx", "x\r\n");
    mailbox.deliver("big", &big);
    mailbox.deliver("small", &alert_mail("tsize", 2, "monitor@example.test"));
    let cfg = || {
        config(
            &env.pop3,
            "none",
            "tsize",
            state.path(),
            "max_message_bytes = 2048\n",
        )
    };
    let run = start(cfg(), TestHost::new("tsize"));
    wait_for("two alerts", LONG, || run.host.accepted().len() == 2).await;
    wait_for("one mail left", LONG, || mailbox.count() == 1).await;
    let accepted = run.host.accepted();
    let subjects: BTreeSet<&str> = accepted.iter().map(|a| a.subject.as_str()).collect();
    assert_eq!(
        subjects,
        BTreeSet::from(["tsize alert #2", "Mail quarantined: tsize alert #1"])
    );
    let problem = accepted
        .iter()
        .find(|a| a.labels.contains_key("mail.problem"))
        .expect("the problem alert");
    assert!(
        problem.labels["mail.problem"].starts_with("larger than max_message_bytes ("),
        "{:?}",
        problem.labels
    );
    assert_eq!(problem.labels["mail.from"], "monitor@example.test");
    assert!(problem.labels["mail.size"].parse::<u64>().expect("size") > 2048);
    assert_eq!(run.source.counters().oversize.load(Ordering::Relaxed), 1);
    assert_eq!(run.source.counters().quarantined.load(Ordering::Relaxed), 1);
    run.stop().await;

    // A new instance on the same state: the quarantined mail is not reported again.
    let run = start(cfg(), TestHost::new("tsize"));
    run.wait("3 polls", |r| {
        r.source.counters().sessions.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(run.host.accepted().len(), 0, "reported twice");
    assert_eq!(mailbox.count(), 1);
    run.stop().await;

    a_dot_stuffed_mail_just_under_the_limit_flows_between_normal_mails(&env).await;
}

/// A mail of `.` lines just under `max_message_bytes` is a third larger on the wire (every
/// line dot-stuffed). It used to exceed the reply limit: the session failed at it every time,
/// the mail after it never arrived and the deletion before it never committed. (Part of the
/// test above: both use the `tsize` mailbox.)
async fn a_dot_stuffed_mail_just_under_the_limit_flows_between_normal_mails(env: &Env) {
    let mailbox = Mailbox::new(env, "tsize");
    let state = tempfile::tempdir().expect("tempdir");
    const MAX: usize = 1 << 20;
    let head = "From: Monitoring <monitor@example.test>\r\nTo: tsize@example.test\r\n\
                Subject: tsize dots\r\nMessage-ID: <tsize-dots@example.test>\r\n\r\n";
    let dots = (MAX - head.len() - 64) / 3;
    let dot_mail = format!("{head}{}", ".\r\n".repeat(dots));
    assert!(dot_mail.len() < MAX && dot_mail.len() > MAX - 100);
    mailbox.deliver("a", &alert_mail("tsize", 1, "monitor@example.test"));
    mailbox.deliver("b", &dot_mail);
    mailbox.deliver("c", &alert_mail("tsize", 3, "monitor@example.test"));
    let extra = format!("max_message_bytes = {MAX}\nmax_fetch_attempts = 5\n");
    let run = start(
        config(&env.pop3, "none", "tsize", state.path(), &extra),
        TestHost::new("tsize"),
    );
    run.wait("three alerts", |r| r.host.accepted().len() == 3)
        .await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    assert_eq!(
        run.subjects(),
        BTreeSet::from([
            "tsize alert #1".to_owned(),
            "tsize dots".to_owned(),
            "tsize alert #3".to_owned()
        ])
    );
    let c = run.source.counters();
    assert_eq!(
        (
            c.failures.load(Ordering::Relaxed),
            c.quarantined.load(Ordering::Relaxed)
        ),
        (0, 0),
        "{}",
        run.source.health()
    );
    run.stop().await;
}

#[tokio::test]
async fn shutdown_mid_drain_commits_what_was_taken_and_keeps_the_rest() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tshutdown");
    let state = tempfile::tempdir().expect("tempdir");
    // Enough batches that the shutdown lands before all are submitted (a few batches await
    // their receipts at once).
    const N: usize = 1000;
    mailbox.deliver_alerts(0, N);
    let host = TestHost::new("tshutdown");
    host.script(
        (0..N).map(|_| alertbridge_plugin_api::testing::Answer::Delay(Duration::from_millis(100))),
    );
    let run = start(
        config(&env.pop3, "none", "tshutdown", state.path(), ""),
        host,
    );
    wait_for("some alerts", LONG, || run.host.accepted().len() >= 20).await;
    let host = run.stop().await;
    let accepted = host.accepted().len();
    assert!(accepted < N, "shutdown came too late to test anything");
    assert_eq!(
        accepted + mailbox.count(),
        N,
        "each mail is either an alert or still on the server"
    );
}

#[tokio::test]
async fn two_instances_cannot_drain_one_mailbox() {
    let Some(env) = env() else { return };
    let mailbox = Mailbox::new(&env, "tlock");
    let state = tempfile::tempdir().expect("tempdir");
    let first = start(
        config(&env.pop3, "none", "tlock", state.path(), ""),
        TestHost::new("a"),
    );
    wait_for("the first instance to poll", LONG, || {
        first.source.counters().sessions.load(Ordering::Relaxed) >= 1
    })
    .await;
    let second = start(
        config(&env.pop3, "none", "tlock", state.path(), ""),
        TestHost::new("b"),
    );
    wait_for("the second to see the lock", LONG, || {
        second
            .source
            .health()
            .message
            .contains("locked by another instance")
    })
    .await;
    mailbox.deliver_alerts(0, 2);
    wait_for("2 alerts", LONG, || first.host.accepted().len() == 2).await;
    assert_eq!(second.host.accepted().len(), 0);
    assert_eq!(second.source.counters().sessions.load(Ordering::Relaxed), 0);
    first.stop().await;
    wait_for("the second to take over", LONG, || {
        second.source.counters().sessions.load(Ordering::Relaxed) >= 1
    })
    .await;
    second.stop().await;
}

/// A mailbox user made at run time (not one of the script's `TEST_USERS`): a line in Dovecot's
/// passwd-file (DIR/dovecot/users beside DIR/mail) and an empty Maildir. A guard thread puts the
/// line back while the test runs, since `dovecot.sh restart` (the restart test) rewrites the file.
struct RunTimeUser {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RunTimeUser {
    fn create(env: &Env, user: &'static str) -> (Self, Mailbox) {
        use std::os::unix::fs::PermissionsExt as _;
        let users_file = env
            .maildirs
            .parent()
            .expect("the Maildir root has a parent")
            .join("dovecot/users");
        let users = std::fs::read_to_string(&users_file).expect("read Dovecot's users file");
        let template = users
            .lines()
            .find(|l| l.starts_with("alerts:"))
            .expect("the users file has the `alerts` user");
        let fields: Vec<&str> = template.split(':').collect();
        let (uid, gid): (u32, u32) = (
            fields[2].parse().expect("uid"),
            fields[3].parse().expect("gid"),
        );
        let home = env.maildirs.join(user);
        for path in [
            home.clone(),
            home.join("Maildir"),
            home.join("Maildir/new"),
            home.join("Maildir/cur"),
            home.join("Maildir/tmp"),
        ] {
            std::fs::create_dir_all(&path).expect("create Maildir");
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown Maildir");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .expect("chmod Maildir");
        }
        let line = format!(
            "{user}:{{PLAIN}}{user}pass:{uid}:{gid}::{}::\n",
            home.display()
        );
        let ensure = move || {
            let now = std::fs::read_to_string(&users_file).unwrap_or_default();
            if !now.lines().any(|l| l.starts_with(&format!("{user}:"))) {
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&users_file)
                    .expect("open Dovecot's users file");
                f.write_all(line.as_bytes()).expect("add the user");
            }
        };
        ensure();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                ensure();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        (Self { stop }, Mailbox::new(env, user))
    }
}

impl Drop for RunTimeUser {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn xml_alert_mail(user: &str, i: usize, status: &str) -> String {
    format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {user}@example.test\r\nSubject: mail {i}\r\n\
         Message-ID: <{user}-{i}-{}@example.test>\r\nContent-Type: application/xml; charset=utf-8\r\n\r\n\
         <alert xmlns=\"urn:alertbridge:alert:1\"><subject>Disk full on db01</subject>\
         <severity>high</severity><dedup-key>db01-disk</dedup-key>{status}</alert>\r\n",
        unix_micros()
    )
}

/// Issue 14 §3: an alert mail's `<status>resolved</status>` reaches the host as a resolved
/// alert with the dedup key the firing mail had (both `sender:db01-disk`), through a real
/// Dovecot: two alerts, the second resolved, both mails deleted once taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_alert_mail_carries_its_status_and_the_firing_key() {
    let Some(env) = env() else { return };
    let (_user, mailbox) = RunTimeUser::create(&env, "tresolve");
    let dir = tempfile::tempdir().expect("temp dir");
    let run = start(
        config(&env.pop3, "none", "tresolve", dir.path(), ""),
        TestHost::new("tresolve"),
    );
    mailbox.deliver("firing", &xml_alert_mail("tresolve", 0, ""));
    run.wait("the firing alert", |r| r.host.accepted().len() == 1)
        .await;
    mailbox.deliver(
        "resolved",
        &xml_alert_mail("tresolve", 1, "<status>resolved</status>"),
    );
    run.wait("the resolved alert", |r| r.host.accepted().len() == 2)
        .await;
    wait_for("the mailbox to be empty", LONG, || mailbox.count() == 0).await;
    let host = run.stop().await;
    let got: Vec<_> = host
        .accepted()
        .into_iter()
        .map(|a| (a.status(), a.dedup_key.clone(), a.subject.clone()))
        .collect();
    let key = Some("sender:db01-disk".to_owned());
    let subject = "Disk full on db01".to_owned();
    assert_eq!(
        got,
        [
            (AlertStatus::Firing, key.clone(), subject.clone()),
            (AlertStatus::Resolved, key, subject)
        ]
    );
}
