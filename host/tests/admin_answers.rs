//! Every error the admin server answers has one JSON shape, `{"error": message, "code": code}`
//! (plus fields of its own), also for hostile requests that never reach a handler: a body that
//! is not JSON, an alert id that is not a number, a path or method the server does not serve.
//! Replayed over a real socket against a bridge started in-process (no plugins needed).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use alertbridge::{app::Bridge, config::Config, plugins::Plugins};
use serde_json::Value;

/// One request on its own connection; returns status, headers (lower-case) and body.
fn call(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("content-length: 0\r\n\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Status and parsed body of an error answer, after checking it is JSON with `error` (a
/// string) and `code`.
fn error_of(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, head, text) = call(addr, host, method, path, body);
    assert!(
        head.contains("content-type: application/json"),
        "{method} {path}: not JSON:\n{head}\n\n{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert!(v["error"].is_string(), "{method} {path}: {v}");
    assert!(v["code"].is_string(), "{method} {path}: {v}");
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_error_is_error_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[host]\ndata_dir = \"{}\"\nadmin_listen = \"127.0.0.1:0\"\nmax_subject_bytes = 64\n",
        dir.path().join("data").display()
    );
    let config = Config::parse(&dir.path().join("a.toml"), &text).expect("config");
    let (bridge, _reloads) = Bridge::start(config, &Plugins::default())
        .await
        .expect("bridge starts");
    let addr = bridge.admin_addr.expect("admin listens");

    let answers = tokio::task::spawn_blocking(move || {
        let host = addr.to_string();
        let post = |path, body| error_of(addr, &host, "POST", path, Some(body));
        let get = |path| error_of(addr, &host, "GET", path, None);
        vec![
            ("not JSON", post("/api/v1/test-alert", "{not json")),
            (
                "a field missing",
                post("/api/v1/test-alert", r#"{"route": "r"}"#),
            ),
            (
                "no such route",
                post("/api/v1/test-alert", r#"{"route": "r", "subject": "s"}"#),
            ),
            ("id not a number", get("/api/v1/alerts/abc")),
            ("limit not a number", get("/api/v1/alerts?limit=-1")),
            ("no such alert", get("/api/v1/alerts/999")),
            ("no such path", get("/nothing/here")),
            ("wrong method", get("/-/reload")),
            (
                "a rebound host name",
                error_of(addr, "evil.example", "GET", "/api/v1/status", None),
            ),
        ]
    })
    .await
    .unwrap();
    let want = [
        ("not JSON", 400, "bad_request"),
        ("a field missing", 422, "bad_request"),
        ("no such route", 400, "unknown_route"),
        ("id not a number", 400, "bad_request"),
        ("limit not a number", 400, "bad_request"),
        ("no such alert", 404, "not_found"),
        ("no such path", 404, "not_found"),
        ("wrong method", 405, "method_not_allowed"),
        ("a rebound host name", 421, "host_not_allowed"),
    ];
    for (what, status, code) in want {
        let (got_status, body) = &answers.iter().find(|(w, _)| *w == what).unwrap().1;
        assert_eq!(
            (*got_status, body["code"].as_str().unwrap()),
            (status, code),
            "{what}: {body}"
        );
    }
    bridge.stop().await;
}
