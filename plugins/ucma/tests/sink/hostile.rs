//! Attacks replayed through real sockets: a signed send captured on the wire and replayed under
//! a fresh idempotency key (issue 11 §6), and a hostile bridge streaming an endless answer
//! (issue 12 §3).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{DeliveryStatus, kit::Sink as _};
use alertbridge_testbed::ucma_sim::{Availability, SimConfig, Simulator};
use alertbridge_ucma::client::MAX_RESPONSE_BYTES;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{SECRET, message, new_sink};

const ALICE: &str = "sip:alice@contoso.com";

/// A TCP relay to `upstream` that records every byte the client sent.
async fn recording_relay(upstream: std::net::SocketAddr) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut server_rx, mut server_tx) = server.into_split();
                let (mut client_rx, mut client_tx) = client.split();
                let up = async {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        record.lock().expect("record").extend_from_slice(&buf[..n]);
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_tx.shutdown().await;
                };
                let down = tokio::io::copy(&mut server_rx, &mut client_tx);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (format!("http://{addr}"), sent)
}

/// The HTTP/1.1 requests in `bytes`, as (head, body).
fn requests(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let body = rest[end + 4..end + 4 + length].to_vec();
        rest = &rest[end + 4 + length..];
        out.push((head, body));
    }
    out
}

/// Sends one raw request to `addr` and returns the response's status code.
async fn replay(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the bridge");
    let head: Vec<&str> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    let request = format!("{}\r\nConnection: close\r\n\r\n", head.join("\r\n"));
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_captured_signed_send_cannot_be_replayed_under_a_fresh_key() {
    let mut config = SimConfig::new(SECRET).user(ALICE, Availability::Online);
    config.require_signature = true;
    let sim = Simulator::start(config).await.expect("simulator");
    let (endpoint, wire) = recording_relay(sim.addr()).await;
    let sink = new_sink(&format!(
        "endpoint = \"{endpoint}\"\nsecret = \"{SECRET}\"\nsign_requests = true\n"
    ))
    .expect("sink");
    let results = sink.deliver(message(1, &[ALICE])).await.expect("send");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    assert_eq!(sim.received(ALICE).len(), 1);

    // What an eavesdropper on the plain-HTTP link saw.
    let captured = requests(&wire.lock().expect("wire"));
    let (head, body) = captured
        .iter()
        .find(|(head, _)| head.starts_with("POST /v1/messages "))
        .expect("the send crossed the relay");
    assert!(
        !head.to_ascii_lowercase().contains("authorization:"),
        "signed requests carry no bearer: {head}"
    );
    let key_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("idempotency-key:"))
        .expect("a key");

    // The same request under another key, within the signature's time window.
    let forged = head.replace(
        key_line,
        "idempotency-key: ab1-ffffffffffffffffffffffffffffffff",
    );
    assert_eq!(replay(sim.addr(), &forged, body).await, 401);
    assert_eq!(
        sim.received(ALICE).len(),
        1,
        "no second IM from a replay under a fresh key"
    );
    // As captured, it is an idempotent replay: answered from the store, nothing sent.
    assert_eq!(replay(sim.addr(), head, body).await, 200);
    assert_eq!(sim.received(ALICE).len(), 1);
    assert_eq!(sim.counters().replays, 1);
}

/// A "bridge" that answers every request with `200` and a chunked body of `total` bytes, or
/// with a `Content-Length` of `total` and nothing behind it; counts what it managed to write.
async fn endless_bridge(total: u64, announce_length: bool) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let written = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&written);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                if announce_length {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0u64;
                while sent < total {
                    let frame = format!("{:x}\r\n", chunk.len());
                    if stream.write_all(frame.as_bytes()).await.is_err()
                        || stream.write_all(&chunk).await.is_err()
                        || stream.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                    sent += chunk.len() as u64;
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (format!("http://{addr}"), written)
}

/// The peak resident memory of this process so far, in KiB (nextest runs each test in a
/// process of its own).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_answer_is_cut_at_the_cap_with_a_clear_error() {
    const TOTAL: u64 = 256 * 1024 * 1024;
    let (endpoint, written) = endless_bridge(TOTAL, false).await;
    let sink = new_sink(&format!(
        "endpoint = \"{endpoint}\"\nsecret = \"{SECRET}\"\n"
    ))
    .expect("sink");
    let peak_before = peak_rss_kib();
    let started = Instant::now();
    let e = sink
        .presence(vec![ALICE.to_owned()])
        .await
        .expect_err("refused");
    let took = started.elapsed();
    let grew = peak_rss_kib().saturating_sub(peak_before);
    // Give the server a moment to notice the closed connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = written.load(Ordering::Relaxed);
    eprintln!(
        "endless answer: refused after {} ms; the bridge got {} KiB out before the sink hung up; peak RSS grew {grew} KiB",
        took.as_millis(),
        sent / 1024
    );
    assert!(
        e.message.contains(&format!(
            "answer over {MAX_RESPONSE_BYTES} bytes (200); not read further"
        )),
        "{}",
        e.message
    );
    assert!(
        grew < 64 * 1024,
        "memory stayed bounded: peak RSS grew {grew} KiB"
    );
    assert!(
        sent < 32 * 1024 * 1024,
        "the sink stopped reading near the cap (plus socket buffers), not at {sent} bytes"
    );

    let results = sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect_err("refused");
    assert!(
        results.message.contains("not read further"),
        "{}",
        results.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_announced_huge_answer_is_refused_before_reading() {
    let (endpoint, _) = endless_bridge(10 * 1024 * 1024 * 1024, true).await;
    let sink = new_sink(&format!(
        "endpoint = \"{endpoint}\"\nsecret = \"{SECRET}\"\n"
    ))
    .expect("sink");
    let started = Instant::now();
    let e = sink
        .presence(vec![ALICE.to_owned()])
        .await
        .expect_err("refused");
    assert!(e.message.contains("not read further"), "{}", e.message);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused from the header, not after waiting for the body"
    );
}
