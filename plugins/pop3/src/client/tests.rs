//! Client tests on wire transcripts: the exact bytes the client writes and what it makes of
//! the server's replies.

use std::time::Duration;

use super::{AuthMethod, Client, Connection, Timeouts, mock::MockStream};
use crate::{
    error::Error,
    protocol::{Command, Limits, ResponseCode},
};

const DOVECOT_CAPA: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n";

fn conn(stream: &MockStream) -> Connection<MockStream> {
    Connection::new(
        stream.clone(),
        Limits::default(),
        Timeouts {
            io: Duration::from_secs(5),
        },
    )
}

async fn greeted(chunks: &[&[u8]]) -> (MockStream, Client<MockStream>) {
    let stream = MockStream::new(chunks.iter().copied());
    let client = Client::greet(conn(&stream)).await.expect("greeting");
    (stream, client)
}

#[tokio::test]
async fn user_pass_login_then_stat_and_quit() {
    let (stream, mut client) = greeted(&[
        b"+OK Dovecot (Debian) ready.\r\n",
        DOVECOT_CAPA,
        b"+OK\r\n",
        b"+OK Logged in.\r\n",
        b"+OK 2 320\r\n",
        b"+OK Logging out.\r\n",
    ])
    .await;
    assert!(client.capa().await.expect("capa").pipelining);
    assert_eq!(client.best_auth(), AuthMethod::Plain);
    let mut session = client
        .login(AuthMethod::User, "alerts", "alertpass")
        .await
        .expect("login");
    assert!(session.pipelining());
    assert_eq!(session.stat().await.expect("stat"), (2, 320));
    session.quit().await.expect("quit");
    assert_eq!(
        stream.written(),
        "CAPA\r\nUSER alerts\r\nPASS alertpass\r\nSTAT\r\nQUIT\r\n"
    );
}

#[tokio::test]
async fn sasl_plain_sends_the_initial_response() {
    let (stream, client) = greeted(&[b"+OK ready\r\n", b"+OK Logged in.\r\n"]).await;
    client
        .login(AuthMethod::Plain, "alerts", "alertpass")
        .await
        .expect("login");
    assert_eq!(stream.written(), "AUTH PLAIN AGFsZXJ0cwBhbGVydHBhc3M=\r\n");
}

#[tokio::test]
async fn sasl_plain_answers_a_challenge_when_the_response_is_long() {
    let password = "p".repeat(250);
    let (stream, client) = greeted(&[b"+OK ready\r\n", b"+ \r\n", b"+OK Logged in.\r\n"]).await;
    client
        .login(AuthMethod::Plain, "u", &password)
        .await
        .expect("login");
    let written = stream.written();
    let lines: Vec<&str> = written.split("\r\n").collect();
    assert_eq!(lines[0], "AUTH PLAIN");
    assert!(
        lines[1].len() > 255 && !lines[1].contains(' '),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn apop_uses_the_greeting_timestamp() {
    let (stream, client) = greeted(&[
        b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
        b"+OK maildrop has 1 message\r\n",
    ])
    .await;
    assert_eq!(client.best_auth(), AuthMethod::Apop);
    client
        .login(AuthMethod::Apop, "mrose", "tanstaaf")
        .await
        .expect("login");
    assert_eq!(
        stream.written(),
        "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
    );
}

#[tokio::test]
async fn apop_without_timestamp_is_unsupported() {
    let (_, client) = greeted(&[b"+OK ready\r\n"]).await;
    let e = client.login(AuthMethod::Apop, "u", "p").await.unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_with_its_code() {
    let (stream, client) = greeted(&[
        b"+OK ready\r\n",
        b"+OK\r\n",
        b"-ERR [AUTH] Authentication failed.\r\n",
    ])
    .await;
    let e = client
        .login(AuthMethod::User, "alerts", "nope")
        .await
        .unwrap_err();
    assert!(e.is_auth() && !e.is_transient(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "authentication (USER/PASS) refused by the server: [AUTH] Authentication failed."
    );
    assert_eq!(stream.written(), "USER alerts\r\nPASS nope\r\n");
    let (_, client) = greeted(&[
        b"+OK ready\r\n",
        b"+OK\r\n",
        b"-ERR [IN-USE] Mailbox locked\r\n",
    ])
    .await;
    let e = client
        .login(AuthMethod::User, "alerts", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Auth {
                code: Some(ResponseCode::InUse),
                ..
            }
        ) && e.is_transient()
            && !e.is_auth()
    );
}

#[tokio::test]
async fn error_greeting_and_garbage_greeting() {
    let stream = MockStream::new([&b"-ERR [SYS/TEMP] overloaded\r\n"[..]]);
    let e = Client::greet(conn(&stream)).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Server {
                command: "greeting",
                ..
            }
        ) && e.is_transient(),
        "{e}"
    );
    let stream = MockStream::new([&b"HTTP/1.1 400 Bad Request\r\n"[..]]);
    let e = Client::greet(conn(&stream)).await.unwrap_err();
    assert_eq!(
        crate::error_chain(&e),
        "unparseable reply to greeting: reply is neither +OK nor -ERR: \"HTTP/1.1 400 Bad Request\""
    );
}

#[tokio::test]
async fn eof_mid_reply_is_closed() {
    let (_, client) = greeted(&[
        b"+OK ready\r\n",
        b"+OK\r\n",
        b"+OK Logged in.\r\n",
        b"+OK 12 octets\r\nSubject",
    ])
    .await;
    let mut session = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    let e = session.retr(1).await.unwrap_err();
    assert!(matches!(e, Error::Closed), "{e}");
}

#[tokio::test]
async fn listings_and_split_multi_line_replies() {
    let (stream, client) = greeted(&[
        b"+OK ready\r\n",
        b"+OK\r\n+OK Logged in.\r\n",
        b"+OK 2 messages\r\n1 000000016b0c2efa\r\n2 00000002",
        b"6b0c2efa\r\n.",
        b"\r\n+OK\r\n1 120\r\n2 2",
        b"00\r\n.\r\n+OK 200 octets\r\n",
        b"Subject: a\r\n\r\n..dot\r\n",
        b".\r\n+OK 120 0\r\n",
        b"+OK\r\nSubject: b\r\n.\r\n",
    ])
    .await;
    let mut s = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    let uidl = s.uidl().await.expect("uidl");
    assert_eq!(
        uidl.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(),
        ["000000016b0c2efa", "000000026b0c2efa"]
    );
    let list = s.list().await.expect("list");
    assert_eq!(list.iter().map(|e| e.size).collect::<Vec<_>>(), [120, 200]);
    assert_eq!(
        s.retr(2).await.expect("retr"),
        b"Subject: a\r\n\r\n.dot\r\n"
    );
    assert_eq!(s.list_one(1).await.expect("list 1").size, 0);
    assert_eq!(s.top(1, 0).await.expect("top"), b"Subject: b\r\n");
    assert_eq!(
        stream.written(),
        "USER u\r\nPASS p\r\nUIDL\r\nLIST\r\nRETR 2\r\nLIST 1\r\nTOP 1 0\r\n"
    );
}

#[tokio::test]
async fn pipelined_batch_is_one_write_and_err_mid_batch_is_per_command() {
    let (stream, mut client) = greeted(&[
        b"+OK ready\r\n",
        DOVECOT_CAPA,
        b"+OK\r\n+OK Logged in.\r\n",
        b"+OK 9 octets\r\nbody one\r\n.\r\n-ERR Message is deleted.\r\n+OK\r\nbody",
        b" three\r\n.\r\n+OK Marked to be deleted.\r\n",
    ])
    .await;
    client.capa().await.expect("capa");
    let mut s = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    let before = stream.written().len();
    let replies = s
        .batch(&[
            Command::Retr(1),
            Command::Retr(2),
            Command::Retr(3),
            Command::Dele(1),
        ])
        .await
        .expect("batch");
    assert_eq!(
        &stream.written()[before..],
        "RETR 1\r\nRETR 2\r\nRETR 3\r\nDELE 1\r\n"
    );
    assert_eq!(replies.len(), 4);
    assert_eq!(replies[0].as_ref().expect("retr 1").data, b"body one\r\n");
    assert!(
        matches!(&replies[1], Err(Error::Server { command: "RETR", text, .. }) if text == "Message is deleted.")
    );
    assert_eq!(replies[2].as_ref().expect("retr 3").data, b"body three\r\n");
    assert!(replies[3].is_ok());
}

#[tokio::test]
async fn without_pipelining_a_batch_is_lock_step() {
    // The replies arrive only one per read; a lock-step client never has two commands out.
    let (stream, client) = greeted(&[
        b"+OK ready\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
        b"+OK\r\n",
    ])
    .await;
    let mut s = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    assert!(!s.pipelining());
    let replies = s
        .batch(&[Command::Dele(1), Command::Dele(2)])
        .await
        .expect("batch");
    assert!(replies.iter().all(Result::is_ok));
    assert!(stream.written().ends_with("DELE 1\r\nDELE 2\r\n"));
}

#[tokio::test]
async fn stls_refuses_bytes_injected_before_the_handshake() {
    let (_, mut client) = greeted(&[
        b"+OK ready\r\n",
        DOVECOT_CAPA,
        b"+OK Begin TLS negotiation now.\r\n+OK injected\r\n",
    ])
    .await;
    assert!(client.capa().await.expect("capa").stls);
    let e = client.stls().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unexpected {
                command: "STLS",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn over_long_status_line_is_a_parse_error() {
    let long = format!("+OK {}\r\n", "x".repeat(5000));
    let stream = MockStream::new([long.as_bytes()]);
    let e = Client::greet(conn(&stream)).await.unwrap_err();
    assert!(
        crate::error_chain(&e).contains("line longer than 1024 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn command_arguments_cannot_smuggle_commands() {
    let (stream, client) = greeted(&[b"+OK ready\r\n"]).await;
    let e = client
        .login(AuthMethod::User, "alerts\r\nDELE 1", "p")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadArgument("USER")), "{e}");
    assert_eq!(stream.written(), "");
}

#[tokio::test]
async fn split_pipeline_sends_before_reading() {
    let (stream, mut client) = greeted(&[
        b"+OK ready\r\n",
        DOVECOT_CAPA,
        b"+OK\r\n+OK Logged in.\r\n",
        b"+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n.\r\n+OK\r\n",
    ])
    .await;
    client.capa().await.expect("capa");
    let mut s = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    let first = [Command::Retr(1), Command::Retr(2)];
    s.send_pipelined(&first).await.expect("send");
    assert!(stream.written().ends_with("RETR 1\r\nRETR 2\r\n"));
    s.send_pipelined(&[Command::Dele(1)])
        .await
        .expect("send more before reading");
    let replies = s.read_replies(&first).await.expect("read");
    assert_eq!(replies[1].as_ref().expect("retr 2").data, b"two\r\n");
    assert!(s.read_replies(&[Command::Dele(1)]).await.expect("read")[0].is_ok());

    let (_, client) = greeted(&[b"+OK ready\r\n", b"+OK\r\n", b"+OK\r\n"]).await;
    let mut s = client
        .login(AuthMethod::User, "u", "p")
        .await
        .expect("login");
    assert!(matches!(
        s.send_pipelined(&[Command::Noop]).await,
        Err(Error::Unsupported("PIPELINING"))
    ));
}
