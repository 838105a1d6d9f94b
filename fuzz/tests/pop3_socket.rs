//! Fuzz findings in the POP3 reply parser, replayed over a real loopback socket through the
//! `pop3` plugin's client (fuzz target `pop3_reply`).

use std::time::Duration;

use alertbridge_pop3::{
    client::{Client, Connection, Timeouts},
    protocol::Limits,
};
use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
};

/// A greeting exactly as long as the status line limit (1024 bytes without CRLF) whose CR and
/// LF arrive in two TCP segments: it was refused as "line longer than 1024 bytes", though the
/// same greeting in one segment is taken.
#[tokio::test]
async fn a_greeting_at_the_limit_split_between_cr_and_lf_is_taken() {
    let limits = Limits::default();
    let text = "x".repeat(limits.status_line - 4);
    let line = format!("+OK {text}");
    assert_eq!(line.len(), limits.status_line);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        s.write_all(format!("{line}\r").as_bytes())
            .await
            .expect("write");
        s.flush().await.expect("flush");
        // Let the client read (and parse) the first segment before the LF comes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.write_all(b"\n").await.expect("write");
        s.flush().await.expect("flush");
        // Keep the connection open until the client is done.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });

    let stream = TcpStream::connect(addr).await.expect("connect");
    let conn = Connection::new(
        stream,
        limits,
        Timeouts {
            io: Duration::from_secs(5),
        },
    );
    let greeted = Client::greet(conn).await;
    assert!(
        greeted.is_ok(),
        "greeting refused: {}",
        greeted
            .err()
            .map(|e| alertbridge_pop3::error_chain(&e))
            .unwrap_or_default()
    );
    server.abort();
}
