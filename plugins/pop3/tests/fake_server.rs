//! The `pop3` source against a small scripted POP3 server on loopback, for what Dovecot does
//! not do: lock the maildrop (RFC 1939 §8: a second login is refused while a session holds it),
//! fail a QUIT (the connection drops before the deletions commit), and answer one mail's RETR
//! with a broken reply (a poison mail that breaks every session reading it).

use std::{
    collections::{BTreeSet, HashSet},
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    HealthState,
    kit::{Setup, Source as _},
    testing::TestHost,
};
use alertbridge_pop3::source::Pop3Source;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

/// The server's mailbox and how it behaves.
#[derive(Default)]
struct Maildrop {
    /// Unique-id and text of each mail, in arrival order.
    mails: Vec<(String, String)>,
    /// Refuse a second login while a session holds the maildrop.
    lock: bool,
    locked: bool,
    refused_logins: usize,
    /// QUITs still to fail (by closing without a reply or any deletion).
    fail_quits: usize,
    failed_quits: usize,
    /// The unique-id of a mail whose RETR gets a reply that is not POP3 (the server goes on
    /// reading commands).
    poison: Option<String>,
    poison_retrs: usize,
    /// QUITs that committed.
    quits: usize,
}

#[derive(Clone, Default)]
struct Server(Arc<Mutex<Maildrop>>);

impl Server {
    fn with<T>(&self, f: impl FnOnce(&mut Maildrop) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    async fn start(self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(self.clone().serve(stream));
            }
        });
        addr
    }

    /// One connection: AUTHORIZATION, then TRANSACTION on a snapshot taken at login, then
    /// UPDATE at QUIT (RFC 1939).
    async fn serve(self, stream: TcpStream) {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut out = b"+OK fake POP3 ready\r\n".to_vec();
        let mut snapshot: Option<Vec<(String, String)>> = None;
        let mut deleted: HashSet<usize> = HashSet::new();
        let mut line = String::new();
        loop {
            if lines.buffer().is_empty() {
                if write.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            line.clear();
            if !matches!(lines.read_line(&mut line).await, Ok(n) if n > 0) {
                break;
            }
            let mut words = line.split_whitespace();
            let verb = words.next().unwrap_or_default().to_ascii_uppercase();
            let arg: Option<usize> = words.next().and_then(|w| w.parse().ok());
            let reply = match (verb.as_str(), &snapshot) {
                ("CAPA", _) => "+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n".to_owned(),
                ("USER", None) => "+OK\r\n".to_owned(),
                ("PASS", None) => self.with(|m| {
                    if m.lock && m.locked {
                        m.refused_logins += 1;
                        "-ERR [IN-USE] maildrop locked\r\n".to_owned()
                    } else {
                        m.locked = true;
                        snapshot = Some(m.mails.clone());
                        "+OK\r\n".to_owned()
                    }
                }),
                ("QUIT", Some(_)) if self.with(|m| m.fail_quits > 0) => {
                    self.with(|m| {
                        m.fail_quits -= 1;
                        m.failed_quits += 1;
                        m.locked = false;
                    });
                    let _ = write.write_all(&out).await;
                    return;
                }
                ("QUIT", Some(s)) => {
                    let gone: HashSet<&str> = deleted.iter().map(|&i| s[i].0.as_str()).collect();
                    self.with(|m| {
                        m.mails.retain(|(uid, _)| !gone.contains(uid.as_str()));
                        m.locked = false;
                        m.quits += 1;
                    });
                    out.extend_from_slice(b"+OK bye\r\n");
                    let _ = write.write_all(&out).await;
                    return;
                }
                ("QUIT", None) => {
                    let _ = write.write_all(b"+OK bye\r\n").await;
                    return;
                }
                ("RETR", Some(s))
                    if arg
                        .and_then(|n| s.get(n.wrapping_sub(1)))
                        .is_some_and(|(uid, _)| {
                            self.with(|m| m.poison.as_deref() == Some(uid.as_str()))
                        }) =>
                {
                    self.with(|m| m.poison_retrs += 1);
                    "* this is not a POP3 reply\r\n".to_owned()
                }
                (_, Some(s)) => transaction(&verb, arg, s, &mut deleted),
                _ => "-ERR not now\r\n".to_owned(),
            };
            out.extend_from_slice(reply.as_bytes());
        }
        if snapshot.is_some() {
            self.with(|m| m.locked = false);
        }
    }
}

/// A reply in the TRANSACTION state; message `n` is `mails[n - 1]` unless deleted.
fn transaction(
    verb: &str,
    arg: Option<usize>,
    mails: &[(String, String)],
    deleted: &mut HashSet<usize>,
) -> String {
    let live = |n: usize| (1..=mails.len()).contains(&n) && !deleted.contains(&(n - 1));
    let all = || (1..=mails.len()).filter(|&n| live(n));
    match (verb, arg) {
        ("STAT", _) => {
            let size: usize = all().map(|n| mails[n - 1].1.len()).sum();
            format!("+OK {} {size}\r\n", all().count())
        }
        ("UIDL", None) => multi(all().map(|n| format!("{n} {}", mails[n - 1].0))),
        ("LIST", None) => multi(all().map(|n| format!("{n} {}", mails[n - 1].1.len()))),
        ("UIDL", Some(n)) if live(n) => format!("+OK {n} {}\r\n", mails[n - 1].0),
        ("LIST", Some(n)) if live(n) => format!("+OK {n} {}\r\n", mails[n - 1].1.len()),
        ("RETR", Some(n)) if live(n) => format!("+OK\r\n{}.\r\n", mails[n - 1].1),
        ("TOP", Some(n)) if live(n) => {
            let text = &mails[n - 1].1;
            let end = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
            format!("+OK\r\n{}.\r\n", &text[..end])
        }
        ("DELE", Some(n)) if live(n) => {
            deleted.insert(n - 1);
            "+OK\r\n".to_owned()
        }
        ("NOOP", _) => "+OK\r\n".to_owned(),
        _ => "-ERR no such message\r\n".to_owned(),
    }
}

fn multi(lines: impl Iterator<Item = String>) -> String {
    let mut out = "+OK\r\n".to_owned();
    for line in lines {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out + ".\r\n"
}

fn mails(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let text = format!(
                "From: monitor@example.test\r\nSubject: fake alert #{i}\r\n\
                 Message-ID: <fake-{i}@example.test>\r\n\r\nDisk {i} is full.\r\n"
            );
            (format!("uid-{i:04}"), text)
        })
        .collect()
}

const MAX: usize = 20;
const N: usize = 3 * MAX + 5;

/// Drains the server's `N` mails in sessions of `MAX` and checks that every mail became one
/// alert and left the server.
async fn drain(server: &Server) -> Arc<Pop3Source> {
    let addr = server.clone().start().await;
    let state = tempfile::tempdir().expect("tempdir");
    let host = TestHost::new("fake");
    let config_toml = format!(
        "server = \"{addr}\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
         poll_interval_ms = 100\nmax_backoff_ms = 2000\nmax_messages_per_session = {MAX}\n\
         state_dir = \"{}\"\n",
        state.path().display()
    );
    let setup = Setup {
        instance: "fake".into(),
        kind: "pop3".into(),
        config_toml,
        host: host.host(),
    };
    let source = Arc::new(Pop3Source::new(setup).expect("valid config"));
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    let start = Instant::now();
    while !(host.accepted().len() == N && server.with(|m| m.mails.is_empty())) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not drained: {} alerts, {} mails left; health: {}",
            host.accepted().len(),
            server.with(|m| m.mails.len()),
            source.health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.expect("source task").expect("source run");
    let subjects: BTreeSet<String> = host.accepted().into_iter().map(|a| a.subject).collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("fake alert #{i}")).collect();
    assert_eq!(subjects, expected);
    source
}

#[tokio::test]
async fn a_locked_maildrop_refusing_the_early_login_gets_the_usual_one() {
    let server = Server::default();
    server.with(|m| {
        m.mails = mails(N);
        m.lock = true;
    });
    let source = drain(&server).await;
    assert!(
        server.with(|m| m.refused_logins) >= 1,
        "no early login was tried"
    );
    let c = source.counters();
    assert_eq!(
        c.alerts.load(Ordering::Relaxed),
        N as u64,
        "a mail was submitted twice"
    );
    assert_eq!(
        c.failures.load(Ordering::Relaxed),
        0,
        "a refused early login counted as a failure"
    );
    assert_eq!(
        source.health().state,
        HealthState::OK,
        "{}",
        source.health()
    );
}

#[tokio::test]
async fn a_failed_quit_brings_the_mails_back_and_they_are_deleted_as_duplicates() {
    let server = Server::default();
    server.with(|m| {
        m.mails = mails(N);
        m.fail_quits = 1;
    });
    let source = drain(&server).await;
    assert_eq!(server.with(|m| m.failed_quits), 1);
    // The first session's mails were submitted again: the host answered "duplicate".
    let alerts = source.counters().alerts.load(Ordering::Relaxed);
    assert_eq!(
        alerts,
        (N + MAX) as u64,
        "the failed session's mails resubmitted once"
    );
}

/// A mail whose RETR breaks the connection every time (the reply is not POP3) sits among
/// others. Each broken session still writes its DELEs and QUIT, so the mails taken before the
/// break are deleted (none is submitted twice); the poison mail goes last after its first
/// failure, so the mails after it flow; after `max_fetch_attempts` it is quarantined: one
/// `mail.problem` alert from its headers, and it is not fetched again.
#[tokio::test]
async fn a_mail_that_breaks_every_session_is_quarantined_and_the_rest_flow() {
    const MAILS: usize = 10;
    let server = Server::default();
    let mails = mails(MAILS);
    let poison = mails[3].0.clone();
    server.with(|m| {
        m.mails = mails;
        m.poison = Some(poison.clone());
    });
    let addr = server.clone().start().await;
    let state = tempfile::tempdir().expect("tempdir");
    let host = TestHost::new("fake");
    let config_toml = format!(
        "server = \"{addr}\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"\n\
         poll_interval_ms = 100\nmax_backoff_ms = 300\nmax_fetch_attempts = 3\n\
         state_dir = \"{}\"\n",
        state.path().display()
    );
    let setup = Setup {
        instance: "fake".into(),
        kind: "pop3".into(),
        config_toml,
        host: host.host(),
    };
    let source = Arc::new(Pop3Source::new(setup).expect("valid config"));
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    let start = Instant::now();
    // Every other mail deleted, the poison mail's problem alert queued.
    while !(server.with(|m| m.mails.len()) == 1 && host.accepted().len() == MAILS) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} alerts, {} mails left, {} poisoned RETRs; health: {}",
            host.accepted().len(),
            server.with(|m| m.mails.len()),
            server.with(|m| m.poison_retrs),
            source.health()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A few more polls: the quarantined mail is not fetched again.
    let sessions = source.counters().sessions.load(Ordering::Relaxed);
    while source.counters().sessions.load(Ordering::Relaxed) < sessions + 3 {
        assert!(start.elapsed() < Duration::from_secs(30), "no more polls");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.expect("source task").expect("source run");
    assert_eq!(
        server.with(|m| m.poison_retrs),
        3,
        "RETRs of the poison mail"
    );
    assert_eq!(
        server.with(|m| m.mails[0].0.clone()),
        poison,
        "it stays (on_quarantine = keep)"
    );
    let c = source.counters();
    assert_eq!(
        c.alerts.load(Ordering::Relaxed),
        MAILS as u64,
        "an alert was submitted twice: a broken session's deletions did not commit"
    );
    assert_eq!(c.quarantined.load(Ordering::Relaxed), 1);
    let accepted = host.accepted();
    let problem: Vec<_> = accepted
        .iter()
        .filter(|a| a.labels.contains_key("mail.problem"))
        .collect();
    assert_eq!(problem.len(), 1, "{accepted:?}");
    let p = problem[0];
    assert_eq!(p.subject, "Mail quarantined: fake alert #3");
    assert_eq!(
        (
            p.labels["mail.from"].as_str(),
            p.labels["mail.size"].is_empty()
        ),
        ("monitor@example.test", false)
    );
    assert!(
        p.labels["mail.problem"].contains("unparseable reply to RETR"),
        "{:?}",
        p.labels
    );
    // Every broken session still QUIT: one per poll that got through, plus the broken ones.
    assert!(server.with(|m| m.quits) >= 3 + 3);
}
