//! The scriptable POP3 test server over real sockets, byte for byte: logins, listings, RETR
//! with dot-stuffing, DELE/QUIT against dropped connections, pipelining, the mailbox lock,
//! each fault, the `pop3-server` binary, and the real `pop3` source draining it.

use std::{
    path::Path,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    PluginError,
    kit::{CancellationToken, Setup, Source as _},
    testing::TestHost,
};
use alertbridge_pop3::source::Pop3Source;
use alertbridge_testbed::pop3_server::{
    BadReply, BadReplyKind, Faults, GARBAGE_LINE, INJECTED_ERR_LINE, Pop3Handle, Pop3Server,
    ServerConfig, Tls, apop_digest,
};
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader, ReadHalf, WriteHalf,
    },
    net::TcpStream,
    task::JoinHandle,
};

const WAIT: Duration = Duration::from_secs(10);
const LOCKED: &str = "-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n";
const AUTH_FAILED: &str = "-ERR [AUTH] Authentication failed.\r\n";

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A raw client: sends exact bytes, reads exact bytes.
struct Wire {
    reader: BufReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    greeting: String,
}

impl Wire {
    async fn connect(server: &Pop3Handle) -> Self {
        Self::greeted(Box::new(tcp(server.addr()).await)).await
    }

    /// Reads the greeting on `stream`.
    async fn greeted(stream: Box<dyn Stream>) -> Self {
        let (read, writer) = tokio::io::split(stream);
        let mut wire = Self {
            reader: BufReader::new(read),
            writer,
            greeting: String::new(),
        };
        wire.greeting = wire.line().await;
        assert!(wire.greeting.starts_with("+OK "), "{:?}", wire.greeting);
        wire
    }

    /// The APOP timestamp of the greeting.
    fn timestamp(&self) -> &str {
        let start = self.greeting.find('<').expect("timestamp in greeting");
        let end = self.greeting.rfind('>').expect("timestamp end");
        &self.greeting[start..=end]
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send");
        self.writer.flush().await.expect("flush");
    }

    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let read = tokio::time::timeout(WAIT, self.reader.read_until(b'\n', &mut line))
            .await
            .expect("reply in time");
        assert!(
            read.expect("read") > 0,
            "connection closed, expected a line"
        );
        String::from_utf8_lossy(&line).into_owned()
    }

    /// Reads exactly as many bytes as `expected` has and compares them.
    async fn expect(&mut self, expected: &str) {
        let mut got = vec![0; expected.len()];
        let read = tokio::time::timeout(WAIT, self.reader.read_exact(&mut got)).await;
        let got = match read {
            Ok(Ok(_)) => got,
            other => panic!("expected {expected:?}, read failed: {other:?}"),
        };
        assert_eq!(String::from_utf8_lossy(&got), expected);
    }

    /// Sends `command` and checks the whole reply.
    async fn roundtrip(&mut self, command: &str, expected: &str) {
        self.send(command.as_bytes()).await;
        self.expect(expected).await;
    }

    async fn login(&mut self, user: &str, password: &str) {
        self.roundtrip(
            &format!("USER {user}\r\nPASS {password}\r\n"),
            "+OK\r\n+OK Logged in.\r\n",
        )
        .await;
    }

    /// Everything up to the server closing the connection.
    async fn rest(&mut self) -> String {
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest))
            .await
            .expect("close in time")
            .expect("read");
        String::from_utf8_lossy(&rest).into_owned()
    }
}

async fn server(dir: &Path, faults: Faults) -> Pop3Handle {
    let config = ServerConfig::new()
        .user("alerts", "alertpass", dir.join("alerts"))
        .user("other", "otherpass", dir.join("other"))
        .faults(faults);
    Pop3Server::start(config).await.expect("start")
}

const MAIL_1: &[u8] = b"Subject: one\n\n.leading dot\nplain\n";
const MAIL_2: &[u8] = b"Subject: two\r\n\r\n..two dots\r\n.\r\nend";

/// Wire size of MAIL_1 / MAIL_2 with CRLF line ends, unstuffed.
const SIZE_1: usize = "Subject: one\r\n\r\n.leading dot\r\nplain\r\n".len();
const SIZE_2: usize = "Subject: two\r\n\r\n..two dots\r\n.\r\nend\r\n".len();

#[tokio::test]
async fn every_login_method_works_and_wrong_credentials_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let mut w = Wire::connect(&server).await;
    w.roundtrip("STAT\r\n", "-ERR STAT is not allowed before login.\r\n")
        .await;
    w.roundtrip("PASS alertpass\r\n", "-ERR No username given.\r\n")
        .await;
    w.roundtrip(
        "USER alerts\r\nPASS wrong\r\n",
        &format!("+OK\r\n{AUTH_FAILED}"),
    )
    .await;
    w.roundtrip(
        "USER nobody\r\nPASS alertpass\r\n",
        &format!("+OK\r\n{AUTH_FAILED}"),
    )
    .await;
    w.roundtrip("PASS alertpass\r\n", "-ERR No username given.\r\n")
        .await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("USER alerts\r\n", "-ERR Already logged in.\r\n")
        .await;
    w.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;
    assert_eq!(w.rest().await, "");

    let mut w = Wire::connect(&server).await;
    let bad = apop_digest(w.timestamp(), "wrong");
    w.roundtrip(&format!("APOP alerts {bad}\r\n"), AUTH_FAILED)
        .await;
    let good = apop_digest(w.timestamp(), "alertpass");
    w.roundtrip(&format!("APOP alerts {good}\r\n"), "+OK Logged in.\r\n")
        .await;
    w.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;

    let mut w = Wire::connect(&server).await;
    w.roundtrip("AUTH\r\n", "+OK\r\nPLAIN\r\n.\r\n").await;
    w.roundtrip(
        "AUTH CRAM-MD5\r\n",
        "-ERR Unsupported authentication mechanism.\r\n",
    )
    .await;
    w.roundtrip(
        "AUTH PLAIN\r\n*\r\n",
        "+ \r\n-ERR Authentication aborted.\r\n",
    )
    .await;
    // "\0alerts\0wrong", then "\0alerts\0alertpass" after the `+ ` prompt.
    w.roundtrip("AUTH PLAIN AGFsZXJ0cwB3cm9uZw==\r\n", AUTH_FAILED)
        .await;
    w.roundtrip(
        "AUTH PLAIN\r\nAGFsZXJ0cwBhbGVydHBhc3M=\r\n",
        "+ \r\n+OK Logged in.\r\n",
    )
    .await;
    w.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;

    let mut w = Wire::connect(&server).await;
    w.roundtrip(
        "AUTH PLAIN AGFsZXJ0cwBhbGVydHBhc3M=\r\n",
        "+OK Logged in.\r\n",
    )
    .await;
    let counters = server.counters();
    assert_eq!(
        (counters.sessions, counters.logins, counters.refused_logins),
        (4, 4, 4)
    );
}

#[tokio::test]
async fn capa_advertises_what_is_implemented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let mut w = Wire::connect(&server).await;
    w.roundtrip("CAPA\r\n", "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
        .await;
    w.roundtrip("STLS\r\n", "-ERR TLS is not configured.\r\n")
        .await;
    w.roundtrip("XTND XMIT\r\n", "-ERR Unknown command: XTND\r\n")
        .await;
}

#[tokio::test]
async fn list_uidl_retr_and_top_serve_the_maildir_dot_stuffed_with_crlf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let uidl_1 = server.deliver("alerts", MAIL_1).expect("deliver");
    let uidl_2 = server.deliver("alerts", MAIL_2).expect("deliver");
    // A mail already seen by another client, with Maildir info in its name.
    std::fs::write(
        server
            .maildir("alerts")
            .expect("maildir")
            .join("cur")
            .join("9999999999.seen.host:2,S"),
        "Subject: 3\n\nx\n",
    )
    .expect("seed cur");
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    let size_3 = "Subject: 3\r\n\r\nx\r\n".len();
    w.roundtrip(
        "STAT\r\n",
        &format!("+OK 3 {}\r\n", SIZE_1 + SIZE_2 + size_3),
    )
    .await;
    w.roundtrip(
        "LIST\r\n",
        &format!("+OK 3 messages:\r\n1 {SIZE_1}\r\n2 {SIZE_2}\r\n3 {size_3}\r\n.\r\n"),
    )
    .await;
    w.roundtrip("LIST 2\r\n", &format!("+OK 2 {SIZE_2}\r\n"))
        .await;
    w.roundtrip("LIST 4\r\n", "-ERR There's no message 4.\r\n")
        .await;
    w.roundtrip("LIST 0\r\n", "-ERR There's no message 0.\r\n")
        .await;
    w.roundtrip(
        "UIDL\r\n",
        &format!("+OK\r\n1 {uidl_1}\r\n2 {uidl_2}\r\n3 9999999999.seen.host\r\n.\r\n"),
    )
    .await;
    w.roundtrip("UIDL 1\r\n", &format!("+OK 1 {uidl_1}\r\n"))
        .await;
    w.roundtrip(
        "RETR 1\r\n",
        &format!("+OK {SIZE_1} octets\r\nSubject: one\r\n\r\n..leading dot\r\nplain\r\n.\r\n"),
    )
    .await;
    w.roundtrip(
        "RETR 2\r\n",
        &format!("+OK {SIZE_2} octets\r\nSubject: two\r\n\r\n...two dots\r\n..\r\nend\r\n.\r\n"),
    )
    .await;
    w.roundtrip("TOP 2 0\r\n", "+OK\r\nSubject: two\r\n\r\n.\r\n")
        .await;
    w.roundtrip(
        "TOP 2 1\r\n",
        "+OK\r\nSubject: two\r\n\r\n...two dots\r\n.\r\n",
    )
    .await;
    w.roundtrip("RETR x\r\n", "-ERR Invalid arguments to RETR.\r\n")
        .await;
    w.roundtrip("NOOP\r\n", "+OK\r\n").await;
    w.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;
    assert_eq!(
        server.mailbox_len("alerts").expect("len"),
        3,
        "nothing was deleted"
    );
}

#[tokio::test]
async fn quit_removes_marked_mail_but_a_dropped_connection_removes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let _uidl_1 = server.deliver("alerts", MAIL_1).expect("deliver");
    let uidl_2 = server.deliver("alerts", MAIL_2).expect("deliver");

    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip(
        "DELE 1\r\nDELE 2\r\n",
        "+OK Marked to be deleted.\r\n+OK Marked to be deleted.\r\n",
    )
    .await;
    w.roundtrip("STAT\r\n", "+OK 0 0\r\n").await;
    drop(w);
    wait_until("the dropped session to end", || {
        server.counters().ended == 1
    })
    .await;

    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("STAT\r\n", &format!("+OK 2 {}\r\n", SIZE_1 + SIZE_2))
        .await;
    w.roundtrip(
        "DELE 1\r\nDELE 1\r\nRETR 1\r\n",
        "+OK Marked to be deleted.\r\n-ERR Message is deleted.\r\n-ERR Message is deleted.\r\n",
    )
    .await;
    w.roundtrip("RSET\r\n", "+OK 2 messages.\r\n").await;
    w.roundtrip(
        "LIST 1\r\nDELE 1\r\n",
        &format!("+OK 1 {SIZE_1}\r\n+OK Marked to be deleted.\r\n"),
    )
    .await;
    w.roundtrip("QUIT\r\n", "+OK Logging out, messages deleted.\r\n")
        .await;
    assert_eq!(w.rest().await, "");
    assert_eq!(server.mailbox_len("alerts").expect("len"), 1);
    assert_eq!(server.counters().deleted, 1);

    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("UIDL\r\n", &format!("+OK\r\n1 {uidl_2}\r\n.\r\n"))
        .await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let uidl = server.deliver("alerts", MAIL_1).expect("deliver");
    let mut w = Wire::connect(&server).await;
    w.send(b"CAPA\r\nUSER alerts\r\nPASS alertpass\r\nSTAT\r\nUIDL\r\nRETR 1\r\nDELE 1\r\nBOGUS\r\nSTAT\r\nQUIT\r\n").await;
    let expected = format!(
        "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n.\r\n\
         +OK\r\n+OK Logged in.\r\n+OK 1 {SIZE_1}\r\n+OK\r\n1 {uidl}\r\n.\r\n\
         +OK {SIZE_1} octets\r\nSubject: one\r\n\r\n..leading dot\r\nplain\r\n.\r\n\
         +OK Marked to be deleted.\r\n-ERR Unknown command: BOGUS\r\n+OK 0 0\r\n+OK Logging out, messages deleted.\r\n"
    );
    assert_eq!(w.rest().await, expected);
    assert_eq!(server.mailbox_len("alerts").expect("len"), 0);
}

#[tokio::test]
async fn a_second_session_on_a_locked_mailbox_gets_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let mut first = Wire::connect(&server).await;
    first.login("alerts", "alertpass").await;
    let mut second = Wire::connect(&server).await;
    second
        .roundtrip(
            "USER alerts\r\nPASS alertpass\r\n",
            &format!("+OK\r\n{LOCKED}"),
        )
        .await;
    // Another user's mailbox is not affected.
    let mut other = Wire::connect(&server).await;
    other.login("other", "otherpass").await;
    first.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;
    assert_eq!(first.rest().await, "");
    // The lock went with the first session: the second one may try again.
    second.login("alerts", "alertpass").await;
}

#[tokio::test]
async fn drop_in_retr_cuts_the_nth_retr_halfway_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(
        dir.path(),
        Faults {
            drop_in_retr: Some(2),
            ..Faults::default()
        },
    )
    .await;
    server.deliver("alerts", MAIL_1).expect("deliver");
    server.deliver("alerts", MAIL_2).expect("deliver");
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("DELE 1\r\n", "+OK Marked to be deleted.\r\n")
        .await;
    w.roundtrip(
        "RETR 2\r\n",
        &format!("+OK {SIZE_2} octets\r\nSubject: two\r\n\r\n...two dots\r\n..\r\nend\r\n.\r\n"),
    )
    .await;
    w.send(b"RETR 2\r\n").await;
    let cut = w.rest().await;
    let full_body = "Subject: two\r\n\r\n...two dots\r\n..\r\nend\r\n.\r\n";
    assert_eq!(
        cut,
        format!(
            "+OK {SIZE_2} octets\r\n{}",
            &full_body[..full_body.len() / 2]
        )
    );
    assert_eq!(server.faults().drop_in_retr, None, "the fault fires once");
    wait_until("the cut to be counted", || server.counters().cut == 1).await;
    assert_eq!(server.mailbox_len("alerts").expect("len"), 2);
    // The next session reads everything.
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("RETR 2\r\n", &format!("+OK {SIZE_2} octets\r\n{full_body}"))
        .await;
    assert_eq!(server.counters().retrs, 3);
}

#[tokio::test]
async fn reply_delay_slows_every_reply_and_can_be_lifted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    let mut w = Wire::connect(&server).await;
    let delay = Duration::from_millis(300);
    server
        .set_faults(Faults {
            reply_delay: delay,
            ..Faults::default()
        })
        .await;
    let started = Instant::now();
    w.send(b"NOOP\r\n").await;
    let mut byte = [0u8; 1];
    let early =
        tokio::time::timeout(Duration::from_millis(100), w.reader.read_exact(&mut byte)).await;
    assert!(early.is_err(), "a reply came before the delay: {early:?}");
    w.expect("-ERR Not logged in.\r\n").await;
    assert!(
        started.elapsed() >= delay,
        "the reply came after {:?}",
        started.elapsed()
    );
    server.set_faults(Faults::default()).await;
    w.roundtrip("USER alerts\r\n", "+OK\r\n").await;
}

#[tokio::test]
async fn bad_replies_answer_a_command_once_with_garbage_or_err_without_running_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Faults {
        bad_replies: vec![
            BadReply::new("stat", BadReplyKind::Garbage),
            BadReply::new("DELE", BadReplyKind::Err),
        ],
        ..Faults::default()
    };
    let server = server(dir.path(), faults).await;
    server.deliver("alerts", MAIL_1).expect("deliver");
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.send(b"STAT\r\n").await;
    let mut garbage = vec![0; GARBAGE_LINE.len()];
    w.reader.read_exact(&mut garbage).await.expect("garbage");
    assert_eq!(garbage, GARBAGE_LINE);
    w.roundtrip("STAT\r\n", &format!("+OK 1 {SIZE_1}\r\n"))
        .await;
    w.roundtrip(
        "DELE 1\r\n",
        std::str::from_utf8(INJECTED_ERR_LINE).expect("ascii"),
    )
    .await;
    assert!(
        server.faults().bad_replies.is_empty(),
        "{:?}",
        server.faults()
    );
    w.roundtrip("QUIT\r\n", "+OK Logging out.\r\n").await;
    assert_eq!(
        server.mailbox_len("alerts").expect("len"),
        1,
        "the refused DELE marked nothing"
    );
}

#[tokio::test]
async fn refuse_logins_refuses_the_right_password_until_lifted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(
        dir.path(),
        Faults {
            refuse_logins: true,
            ..Faults::default()
        },
    )
    .await;
    let mut w = Wire::connect(&server).await;
    w.roundtrip(
        "USER alerts\r\nPASS alertpass\r\n",
        &format!("+OK\r\n{AUTH_FAILED}"),
    )
    .await;
    let digest = apop_digest(w.timestamp(), "alertpass");
    w.roundtrip(&format!("APOP alerts {digest}\r\n"), AUTH_FAILED)
        .await;
    w.roundtrip("AUTH PLAIN AGFsZXJ0cwBhbGVydHBhc3M=\r\n", AUTH_FAILED)
        .await;
    server.set_faults(Faults::default()).await;
    w.login("alerts", "alertpass").await;
}

#[tokio::test]
async fn down_refuses_connects_and_cuts_sessions_and_up_listens_again_on_the_same_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path(), Faults::default()).await;
    server.deliver("alerts", MAIL_1).expect("deliver");
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("DELE 1\r\n", "+OK Marked to be deleted.\r\n")
        .await;
    server
        .set_faults(Faults {
            down: true,
            ..Faults::default()
        })
        .await;
    assert_eq!(w.rest().await, "", "the session is cut");
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "a down server accepted a connection"
    );
    assert_eq!(
        server.mailbox_len("alerts").expect("len"),
        1,
        "a cut session deletes nothing"
    );

    server.set_faults(Faults::default()).await;
    let mut w = Wire::connect(&server).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("STAT\r\n", &format!("+OK 1 {SIZE_1}\r\n"))
        .await;

    let addr = server.addr();
    server.stop().await;
    assert_eq!(w.rest().await, "", "stop cuts sessions");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

#[tokio::test]
async fn the_binary_serves_its_users_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("alerts");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pop3-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--user",
            &format!("alerts:alertpass:{}", maildir.display()),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pop3-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut first))
        .await
        .expect("first line in time")
        .expect("read");
    let addr = first
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"));
    let addr: std::net::SocketAddr = addr
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("address");
    std::fs::write(maildir.join("new").join("1.mail"), MAIL_1).expect("deliver");

    let mut w = Wire::greeted(Box::new(tcp(addr).await)).await;
    w.login("alerts", "alertpass").await;
    w.roundtrip(
        "UIDL\r\nQUIT\r\n",
        "+OK\r\n1 1.mail\r\n.\r\n+OK Logging out.\r\n",
    )
    .await;

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "{status}");
}

/// The real `pop3` source, in-process through `TestHost`, draining `alerts` on a server.
struct RunningSource {
    host: TestHost,
    stop: CancellationToken,
    task: JoinHandle<Result<(), PluginError>>,
}

impl RunningSource {
    /// `tls` holds the `tls` (and `ca_file`) lines of the source's config.
    fn start(server: &Pop3Handle, state_dir: &Path, tls: &str) -> Self {
        let config_toml = format!(
            "server = \"{}\"\n{tls}username = \"alerts\"\npassword = \"alertpass\"\n\
             poll_interval_ms = 50\nmax_backoff_ms = 200\nconnect_timeout_ms = 2000\n\
             read_timeout_ms = 2000\nstate_dir = \"{}\"\n",
            server.addr(),
            state_dir.display()
        );
        let host = TestHost::new("pop3-test");
        let setup = Setup {
            instance: "pop3-test".into(),
            kind: "pop3".into(),
            config_toml,
            host: host.host(),
        };
        let source = Arc::new(Pop3Source::new(setup).expect("valid config"));
        let (ctx, stop) = host.source_context();
        let task = tokio::spawn(source.run(ctx));
        Self { host, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let stopped = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("source stops in time");
        stopped.expect("source task").expect("source run");
    }
}

async fn tcp(addr: std::net::SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real `pop3` source (in-process, through `TestHost`) drains the server, through a cut
/// RETR, a garbage reply and an `-ERR` to DELE, losing and duplicating nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pop3_source_drains_the_server_through_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let faults = Faults {
        drop_in_retr: Some(2),
        bad_replies: vec![
            BadReply::new("UIDL", BadReplyKind::Garbage),
            BadReply::new("DELE", BadReplyKind::Err),
        ],
        ..Faults::default()
    };
    let server = server(dir.path(), faults).await;
    for i in 0..3 {
        let mail = format!(
            "From: Monitoring <monitor@example.test>\r\nSubject: alert #{i}\r\n\r\nDisk {i} is full.\r\n.dot line\r\n"
        );
        server.deliver("alerts", mail.as_bytes()).expect("deliver");
    }
    let source = RunningSource::start(&server, &dir.path().join("state"), "tls = \"none\"\n");
    let host = &source.host;
    wait_until("3 alerts and an empty mailbox", || {
        host.accepted().len() == 3 && server.mailbox_len("alerts").is_ok_and(|n| n == 0)
    })
    .await;
    let mut subjects: Vec<String> = host.accepted().into_iter().map(|a| a.subject).collect();
    subjects.sort();
    assert_eq!(subjects, ["alert #0", "alert #1", "alert #2"]);
    assert_eq!(server.faults(), Faults::default(), "every fault fired");
    assert!(
        server.counters().cut >= 1 && server.counters().deleted == 3,
        "{:?}",
        server.counters()
    );
    source.stop().await;
}

#[tokio::test]
async fn a_server_started_down_listens_once_brought_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(
        dir.path(),
        Faults {
            down: true,
            ..Faults::default()
        },
    )
    .await;
    assert!(
        std::net::TcpStream::connect(server.addr()).is_err(),
        "a down server accepted a connection"
    );
    server.set_faults(Faults::default()).await;
    let mut w = Wire::connect(&server).await;
    w.login("other", "otherpass").await;
    w.roundtrip("STAT\r\n", "+OK 0 0\r\n").await;
    assert_eq!(
        server.deliver("nobody", b"x").map_err(|e| e.to_string()),
        Err("unknown user \"nobody\"".to_owned())
    );
}

/// A test CA and a server certificate for 127.0.0.1 it signed (webpki refuses a CA
/// certificate as the server's own); returns the CA in PEM and the server's rustls config.
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let key = KeyPair::generate().expect("server key");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (ca.pem(), Arc::new(config))
}

/// A TLS client trusting only `ca_pem`.
fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn stls_upgrades_the_connection_and_is_advertised_only_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, config) = test_pki();
    let server = Pop3Server::start(
        ServerConfig::new()
            .user("alerts", "alertpass", dir.path().join("alerts"))
            .tls(Tls::Stls(config)),
    )
    .await
    .expect("start");
    server.deliver("alerts", MAIL_1).expect("deliver");
    let capa = "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n";
    let mut w = Wire::connect(&server).await;
    w.roundtrip("CAPA\r\n", &format!("{capa}STLS\r\n.\r\n"))
        .await;
    w.roundtrip("STLS\r\n", "+OK Begin TLS negotiation now.\r\n")
        .await;
    let plain = w.reader.into_inner().unsplit(w.writer);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tls_connector(&ca)
        .connect(name, plain)
        .await
        .expect("TLS handshake");
    let (read, writer) = tokio::io::split(Box::new(tls) as Box<dyn Stream>);
    let mut w = Wire {
        reader: BufReader::new(read),
        writer,
        greeting: w.greeting,
    };
    w.roundtrip("CAPA\r\n", &format!("{capa}.\r\n")).await;
    w.roundtrip("STLS\r\n", "-ERR TLS is already active.\r\n")
        .await;
    w.login("alerts", "alertpass").await;
    w.roundtrip("STAT\r\n", &format!("+OK 1 {SIZE_1}\r\n"))
        .await;
    w.roundtrip("STLS\r\n", "-ERR STLS is not allowed after login.\r\n")
        .await;
}

/// The real `pop3` source over STLS and over implicit TLS, trusting the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pop3_source_drains_the_server_over_stls_and_implicit_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, config) = test_pki();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write CA");
    for (mode, tls) in [
        ("starttls", Tls::Stls(Arc::clone(&config))),
        ("implicit", Tls::Implicit(Arc::clone(&config))),
    ] {
        let maildir = dir.path().join(mode);
        let server = Pop3Server::start(
            ServerConfig::new()
                .user("alerts", "alertpass", &maildir)
                .tls(tls),
        )
        .await
        .expect("start");
        server.deliver("alerts", MAIL_1).expect("deliver");
        let tls = format!("tls = \"{mode}\"\nca_file = \"{}\"\n", ca_file.display());
        let source = RunningSource::start(&server, &maildir.join("state"), &tls);
        let host = &source.host;
        wait_until(&format!("the alert over {mode}"), || {
            host.accepted().len() == 1 && server.mailbox_len("alerts").is_ok_and(|n| n == 0)
        })
        .await;
        assert_eq!(host.accepted()[0].subject, "one", "{mode}");
        source.stop().await;
    }
}
