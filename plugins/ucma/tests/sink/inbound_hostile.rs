//! A hostile bridge's inbound answers, replayed through real sockets: an answer over the size
//! cap, one that is not JSON, one that ignores `wait_ms`, and a flood of messages with bad
//! senders, oversized conversation references and texts. Each is bounded: nothing unchecked
//! reaches the host, the sink does not spin, and only what the host took is acknowledged.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use alertbridge_plugin_api::testing::TestHost;
use alertbridge_ucma::{
    client::MAX_RESPONSE_BYTES,
    inbound::{INBOUND_MESSAGE, POLL_LIMIT},
    protocol::{MAX_CONVERSATION_BYTES, MAX_INBOUND_TEXT_BYTES},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::run_sink;

/// What the raw bridge saw: request lines and the bodies of acks.
#[derive(Default)]
struct Seen {
    polls: usize,
    acks: Vec<String>,
}

/// A bridge answering `/v1/health` honestly, `/v1/inbound/ack` with `{}` and every
/// `/v1/inbound` poll with `inbound` (status 200), immediately.
async fn raw_bridge(inbound: Vec<u8>) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let record = Arc::clone(&seen);
    let inbound = Arc::new(inbound);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (record, inbound) = (Arc::clone(&record), Arc::clone(&inbound));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n @ 1..) = stream.read(&mut chunk).await else {
                        return;
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() < end + 4 + length {
                        continue;
                    }
                    let body =
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    let answer: Vec<u8> = if line.starts_with("GET /v1/inbound") {
                        record.lock().expect("seen").polls += 1;
                        inbound.to_vec()
                    } else if line.starts_with("POST /v1/inbound/ack") {
                        record.lock().expect("seen").acks.push(body);
                        b"{}".to_vec()
                    } else {
                        br#"{"status":"ok"}"#.to_vec()
                    };
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        answer.len()
                    );
                    let _ = stream.write_all(reply.as_bytes()).await;
                    let _ = stream.write_all(&answer).await;
                    return;
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

fn config(url: &str) -> String {
    format!(
        "endpoint = \"{url}\"\nsecret = \"{}\"\nhealth_interval_ms = 60000\ninbound_wait_ms = 1000",
        super::SECRET
    )
}

fn host() -> TestHost {
    let host = TestHost::new("ocs");
    host.accept_calls(INBOUND_MESSAGE);
    host
}

/// Runs a sink against a bridge answering every poll with `inbound` for `for_ms`.
async fn run(inbound: Vec<u8>, for_ms: u64) -> (TestHost, Arc<Mutex<Seen>>) {
    let (url, seen) = raw_bridge(inbound).await;
    let host = host();
    let (_sink, stop) = run_sink(&config(&url), &host);
    tokio::time::sleep(Duration::from_millis(for_ms)).await;
    stop.cancel();
    (host, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_malformed_or_early_empty_answer_is_not_polled_in_a_tight_loop() {
    let huge = format!(
        "{{\"messages\":[],\"pad\":\"{}\"}}",
        " ".repeat(MAX_RESPONSE_BYTES + 10)
    );
    for (what, body) in [
        ("oversized", huge.into_bytes()),
        ("not JSON", b"<html>hello</html>".to_vec()),
        (
            "empty at once (wait_ms ignored)",
            br#"{"messages":[]}"#.to_vec(),
        ),
        (
            "messages without cursors",
            br#"{"messages":[{"text":"x"},{"id":1}]}"#.to_vec(),
        ),
    ] {
        let (host, seen) = run(body, 2000).await;
        let seen = seen.lock().expect("seen");
        assert!(host.calls().is_empty(), "{what}: nothing reaches the host");
        assert!(seen.acks.is_empty(), "{what}: nothing acknowledged");
        // Backoff from 200 ms doubling: 0, .2, .6, 1.4 s -> about 4 polls in 2 s, never hundreds.
        assert!(
            (1..=6).contains(&seen.polls),
            "{what}: {} polls in 2 s",
            seen.polls
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_handed_over_bounded_and_checked() {
    let mut messages = Vec::new();
    for cursor in (1..=400u64).rev() {
        let (from, conversation, text) = match cursor % 4 {
            0 => (
                "alice@contoso.com".to_owned(),
                "c_1".to_owned(),
                "no sip: scheme".to_owned(),
            ),
            1 => (
                "sip:bob@contoso.com".to_owned(),
                "c".repeat(MAX_CONVERSATION_BYTES + 1),
                "long ref".to_owned(),
            ),
            2 => (
                "SIP:Carol@Contoso.com".to_owned(),
                "c_2".to_owned(),
                "é".repeat(3000),
            ),
            _ => (
                "sip:dave@contoso.com".to_owned(),
                "c_3".to_owned(),
                format!("ack {cursor}"),
            ),
        };
        messages.push(
            json!({"cursor": cursor, "id": format!("in_{cursor}"), "from": from,
            "text": text, "conversation": conversation, "received_at": "2026-12-07T10:00:00Z"}),
        );
    }
    let body = serde_json::to_vec(&json!({"messages": messages, "dropped": 7})).expect("json");
    assert!(body.len() < MAX_RESPONSE_BYTES);
    let (host, seen) = run(body, 1500).await;
    let calls = host.calls();
    let seen = seen.lock().expect("seen");
    // Every poll gets the same 400 (the bridge never forgets): each poll hands over the first
    // POLL_LIMIT by cursor, only the valid ones, and acknowledges up to the last handled.
    assert!(!calls.is_empty());
    for (name, args) in &calls {
        assert_eq!(name, INBOUND_MESSAGE);
        assert!(
            args["user"] == "sip:carol@contoso.com" || args["user"] == "sip:dave@contoso.com",
            "{args:?}"
        );
        assert!(args["text"].len() <= MAX_INBOUND_TEXT_BYTES, "text cut");
        assert!(args["text"].is_char_boundary(args["text"].len()));
        assert!(args["conversation"].len() <= MAX_CONVERSATION_BYTES);
    }
    let first: Vec<u64> = calls
        .iter()
        .take(POLL_LIMIT / 2)
        .map(|(_, a)| a["id"].trim_start_matches("in_").parse().expect("id"))
        .collect();
    let expected: Vec<u64> = (1..=POLL_LIMIT as u64).filter(|c| c % 4 >= 2).collect();
    assert_eq!(
        first, expected,
        "in cursor order, the first {POLL_LIMIT} only"
    );
    assert_eq!(
        seen.acks.first().map(String::as_str),
        Some(format!("{{\"up_to\":{POLL_LIMIT}}}").as_str()),
        "acknowledged up to the last of the batch"
    );
}
