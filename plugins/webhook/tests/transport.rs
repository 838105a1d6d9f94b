//! Through real sockets: HTTP/2 (h2c and h2 over TLS by ALPN), TLS with a certificate made at
//! test time, slow clients, the connection cap, and graceful stop with a request in flight.

mod common;

use std::time::{Duration, Instant};

use alertbridge_plugin_api::testing::Answer;
use common::{TOKEN, client, start, start_on};
use reqwest::{StatusCode, Version};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_by_prior_knowledge() {
    let s = start("").await;
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = c
        .post(s.url("/api/v1/alerts"))
        .bearer_auth(TOKEN)
        .json(&json!({"subject": "over h2c"}))
        .send()
        .await
        .expect("response");
    assert_eq!(
        (r.version(), r.status()),
        (Version::HTTP_2, StatusCode::ACCEPTED)
    );
    assert_eq!(s.host.accepted()[0].subject, "over h2c");
    s.shutdown().await.expect("clean stop");
}

fn write_cert(dir: &std::path::Path) -> Vec<u8> {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("key.pem"), key_pair.serialize_pem()).expect("write key");
    cert.pem().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_by_alpn_and_http1() {
    let mut pem = Vec::new();
    let tls = "[tls]\ncert_file = \"{dir}/cert.pem\"\nkey_file = \"{dir}/key.pem\"\n";
    let s = start_on("127.0.0.1:0", TOKEN, tls, |dir| pem = write_cert(dir)).await;
    let url = format!("https://localhost:{}/api/v1/alerts", s.addr.port());
    let ca = reqwest::Certificate::from_pem(&pem).expect("certificate");
    let builder = || {
        reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve("localhost", s.addr)
    };
    let h2 = builder().build().expect("client");
    let r = h2
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"subject": "over h2"}))
        .send()
        .await
        .expect("response");
    assert_eq!(
        (r.version(), r.status()),
        (Version::HTTP_2, StatusCode::ACCEPTED)
    );
    let h1 = builder().http1_only().build().expect("client");
    let r = h1
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"subject": "over h1"}))
        .send()
        .await
        .expect("response");
    assert_eq!(
        (r.version(), r.status()),
        (Version::HTTP_11, StatusCode::ACCEPTED)
    );
    // Plain HTTP to the TLS port gets nowhere, and the server keeps serving.
    assert!(
        client()
            .get(format!("http://{}/healthz", s.addr))
            .send()
            .await
            .is_err()
    );
    let r = h1
        .get(format!("https://localhost:{}/healthz", s.addr.port()))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.host.accepted().len(), 2);
    s.shutdown().await.expect("clean stop");
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let s = start("header_read_timeout_ms = 300\nbody_read_timeout_ms = 300\n").await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    let (_, took) = read_until_closed(&mut silent).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    // Sends half a request head and stalls.
    let mut slow_head = TcpStream::connect(s.addr).await.expect("connect");
    slow_head
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (_, took) = read_until_closed(&mut slow_head).await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    // Sends the head but only part of the body: 408.
    let mut slow_body = TcpStream::connect(s.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"subj"
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    let (answer, _) = read_until_closed(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.contains("the body did not arrive within 300 ms"),
        "{answer}"
    );
    // A well-behaved client is still served.
    let r = client()
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    s.shutdown().await.expect("clean stop");
}

/// On HTTP/1 the head deadline runs again after every request: a keep-alive connection that
/// went silent, or sends its next head slowly, is closed after `header_read_timeout_ms`, long
/// before `idle_timeout_ms`; one that keeps sending requests is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_get_the_head_deadline_again() {
    let s = start("header_read_timeout_ms = 400\nidle_timeout_ms = 60000\n").await;
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut busy = TcpStream::connect(s.addr).await.expect("connect");
    // Twice the head deadline in all, a request every 100 ms: answered every time.
    for _ in 0..8 {
        busy.write_all(get).await.expect("write");
        let mut answer = [0; 512];
        let n = busy.read(&mut answer).await.expect("read");
        assert!(answer[..n].starts_with(b"HTTP/1.1 200 "), "{n} bytes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silent.
    let (answer, took) = read_until_closed(&mut busy).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // One request, then half a head.
    let mut slow_next = TcpStream::connect(s.addr).await.expect("connect");
    slow_next.write_all(get).await.expect("write");
    slow_next
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (answer, took) = read_until_closed(&mut slow_next).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    s.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait() {
    let s = start("max_connections = 1\nheader_read_timeout_ms = 5000\n").await;
    let holder = TcpStream::connect(s.addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    assert!(
        quick.get(s.url("/healthz")).send().await.is_err(),
        "a second connection was served over the cap"
    );
    drop(holder);
    let r = client()
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("served once the first connection closed");
    assert_eq!(r.status(), StatusCode::OK);
    s.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_finishes_the_request_in_flight() {
    let s = start("").await;
    // The host takes 1.5 s; the stop comes 0.5 s into the request, while it waits for the host.
    s.host.script([Answer::Delay(Duration::from_millis(1500))]);
    let url = s.url("/api/v1/alerts");
    let in_flight = tokio::spawn(async move {
        client()
            .post(url)
            .bearer_auth(TOKEN)
            .json(&json!({"subject": "in flight"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let addr = s.addr;
    let host = s.host.clone();
    s.stop.cancel();
    let r = in_flight
        .await
        .expect("task")
        .expect("answered during stop");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(host.accepted().len(), 1);
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .expect("run returned")
        .expect("task")
        .expect("clean stop");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_run_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("t"), "x\n").expect("write");
    let host = alertbridge_plugin_api::testing::TestHost::new("hook");
    let setup = alertbridge_plugin_api::kit::Setup {
        instance: "hook".into(),
        kind: "webhook".into(),
        config_toml: format!(
            "listen = \"{addr}\"\ntokens_file = {:?}\n",
            dir.path().join("t")
        ),
        host: host.host(),
    };
    let source = std::sync::Arc::new(
        alertbridge_webhook::source::WebhookSource::new(setup).expect("config"),
    );
    let (ctx, _stop) = host.source_context();
    let err = alertbridge_plugin_api::kit::Source::run(source, ctx)
        .await
        .expect_err("port is taken");
    assert!(
        err.message
            .starts_with(&format!("cannot listen on {addr}: ")),
        "{}",
        err.message
    );
}

/// A bare HTTP/2 connection (h2c by prior knowledge) that answers the server's PINGs like any
/// HTTP/2 client; the task ends when the server closes the connection.
async fn h2_connection(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

async fn h2_get(send: &mut hyper::client::conn::http2::SendRequest<String>, path: &str) -> u16 {
    let request = hyper::Request::get(format!("http://x{path}"))
        .body(String::new())
        .expect("request");
    send.send_request(request)
        .await
        .expect("h2 response")
        .status()
        .as_u16()
}

/// Issue 12 §3: 32 HTTP/2 connections that made one request each and then sat idle (answering
/// PINGs) used to hold every `max_connections` slot forever. Each is now told to go after
/// `idle_timeout_ms`, and a new client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_give_their_slots_back() {
    let s = start("max_connections = 32\nidle_timeout_ms = 700\n").await;
    let mut held = Vec::new();
    for _ in 0..32 {
        let (mut send, task) = h2_connection(s.addr).await;
        assert_eq!(h2_get(&mut send, "/healthz").await, 200);
        held.push((send, task));
    }
    let started = Instant::now();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("a new client is served once idle connections are closed");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "served after {:?}",
        started.elapsed()
    );
    for (_, task) in held {
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("the server closed the idle h2 connection")
            .expect("task");
    }
    s.shutdown().await.expect("clean stop");
}

/// Requests refused with 401 keep no connection alive, and a connection that never idles is
/// still told to go at `max_connection_age_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_or_endless_h2_connections_are_closed() {
    let s = start("idle_timeout_ms = 600\nmax_connection_age_ms = 1500\n").await;
    // 401s every 100 ms: no activity as far as the idle clock is concerned.
    let (mut send, task) = h2_connection(s.addr).await;
    let started = Instant::now();
    let pester = tokio::spawn(async move {
        loop {
            let request = hyper::Request::post("http://x/api/v1/alerts")
                .header("content-type", "application/json")
                .body("{\"subject\":\"x\"}".to_owned())
                .expect("request");
            match send.send_request(request).await {
                Ok(r) => assert_eq!(r.status().as_u16(), 401),
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("the server closed a connection that only got 401s")
        .expect("task");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1400), "closed after {took:?}");
    let _ = pester.await;

    // Healthy requests every 100 ms: never idle, closed at the maximum age.
    let (mut send, task) = h2_connection(s.addr).await;
    let started = Instant::now();
    let busy = tokio::spawn(async move {
        let mut served = 0;
        loop {
            let request = hyper::Request::get("http://x/healthz")
                .body(String::new())
                .expect("request");
            match send.send_request(request).await {
                Ok(r) if r.status().is_success() => served += 1,
                _ => break served,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the server closed the connection at its maximum age")
        .expect("task");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert!(busy.await.expect("task") >= 10);
    s.shutdown().await.expect("clean stop");
}
