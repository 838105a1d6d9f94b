//! Fuzz findings in the webhook's payload parsers, replayed over a real loopback socket against
//! the `webhook` source (fuzz target `webhook_json`).

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    kit::{Setup, Source as _},
    testing::TestHost,
};
use alertbridge_webhook::source::WebhookSource;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

const TOKEN: &str = "fuzz-replay-token";

/// A JSON body with a raw line break inside a string: the 400 answer named "line 2 column 0",
/// though lines and columns count from 1; it now names the line break (line 1, column 14).
#[tokio::test]
async fn a_json_error_at_a_line_break_is_answered_with_a_column_from_1() {
    let host = TestHost::new("hook");
    let setup = Setup {
        instance: "hook".into(),
        kind: "webhook".into(),
        config_toml: format!("listen = \"127.0.0.1:0\"\ntokens = \"{TOKEN}\"\n"),
        host: host.host(),
    };
    let source = Arc::new(WebhookSource::new(setup).expect("valid config"));
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    let mut addr = None;
    for _ in 0..500 {
        addr = source.local_addr();
        if addr.is_some() || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = addr.expect("the source listens");

    let body = b"{\"subject\":\"a\nb\"}";
    let mut request = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("line 1 column 14"), "{answer}");
    assert!(!answer.contains("column 0"), "{answer}");
    assert!(host.accepted().is_empty(), "nothing is submitted");

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
