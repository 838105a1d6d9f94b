//! The admin HTTP server is not a door for web pages (issue 11 §3), replayed through real
//! sockets against the real binary: a cross-site form POST to `/-/reload`, a DNS-rebinding page
//! (`Host: evil.example`) reading alerts and sending a test alert, the admin token, a public
//! `admin_listen` without one, and 300 half-sent requests against a process with 256 file
//! descriptors while the webhook must keep answering.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{Host, bin_dir, cli, free_port, post, wait_until};

const LONG: Duration = Duration::from_secs(30);
const TOKEN: &str = "admin-token-PLANTED-7f3e9c2a51";

/// An answer read to its end: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` (request line and headers, without the blank line; `connection: close` is
/// added) and `body` exactly as given, so the test controls `Host`, `Origin` and the rest.
fn raw(port: u16, head: &str, body: &str) -> Option<Answer> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let text = format!(
        "{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(text.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Answer {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

struct Bed {
    _dir: tempfile::TempDir,
    host: Host,
    admin: u16,
    webhook: u16,
}

impl Bed {
    fn dir(&self) -> &Path {
        &self.host.dir
    }

    fn records(&self) -> String {
        fs::read_to_string(self.dir().join("delivered.jsonl")).unwrap_or_default()
    }

    /// Posts a JSON alert to the webhook; returns the status (None if it did not answer in
    /// 10 s).
    fn post_alert(&self, subject: &str) -> Option<u16> {
        raw(
            self.webhook,
            &format!(
                "POST /api/v1/alerts HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nauthorization: Bearer hook-token\r\ncontent-type: application/json",
                self.webhook
            ),
            &format!(r#"{{"subject": "{subject}", "severity": "critical"}}"#),
        )
        .map(|a| a.status)
    }

    fn routes(&self, auth: &str) -> usize {
        let a = raw(
            self.admin,
            &format!(
                "GET /api/v1/status HTTP/1.1\r\nhost: 127.0.0.1:{}{auth}",
                self.admin
            ),
            "",
        )
        .expect("status answers");
        assert_eq!(a.status, 200, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("JSON");
        v["routes"].as_array().map_or(0, Vec::len)
    }
}

/// `host_extra` goes into `[host]`; `extra_route` adds a third route.
fn config(dir: &Path, admin: &str, webhook: u16, host_extra: &str, extra_route: bool) -> String {
    let d = dir.display();
    let extra = if extra_route {
        "\n[[route]]\nname = \"added-by-reload\"\nmatch = { severity = \"info\" }\ngroups = [\"ops\"]\nsinks = [\"lync\"]\n"
    } else {
        ""
    };
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "{admin}"
admin_hosts = ["alerts.example.net"]
{host_extra}

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "monitoring"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{webhook}"
tokens_file = "{d}/tokens"

[[sink]]
name = "lync"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "critical-to-ops"
match = {{ severity = ">=high" }}
groups = ["ops"]
sinks = ["lync"]

[[route]]
name = "the-rest"
groups = ["ops"]
sinks = ["lync"]
{extra}"#
    )
}

fn bed(host_extra: &str, prefix: &[&str]) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "hook-token\n").unwrap();
    fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let text = config(
        dir.path(),
        &format!("127.0.0.1:{admin}"),
        webhook,
        host_extra,
        false,
    );
    let host = Host::start_under(dir.path(), admin, &text, prefix);
    wait_until("the webhook to listen", LONG, || {
        TcpStream::connect(("127.0.0.1", webhook)).is_ok()
    });
    Bed {
        _dir: dir,
        host,
        admin,
        webhook,
    }
}

fn assert_guard_headers(a: &Answer, what: &str) {
    let csp = a.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[test]
fn a_cross_site_form_post_cannot_reload() {
    let bed = bed("", &[]);
    assert_eq!(bed.routes(""), 2);
    // The config on disk now has a third route: a reload that goes through shows it.
    let text = config(
        bed.dir(),
        &format!("127.0.0.1:{}", bed.admin),
        bed.webhook,
        "",
        true,
    );
    fs::write(&bed.host.config, text).unwrap();
    let host = format!("host: 127.0.0.1:{}", bed.admin);
    // What a browser sends for an auto-submitted <form method=post> on another site, and the
    // variants a page can produce without a CORS preflight.
    let attacks = [
        (
            "form from another site",
            format!(
                "{host}\r\norigin: http://evil.example\r\ncontent-type: application/x-www-form-urlencoded\r\nsec-fetch-site: cross-site"
            ),
            "reload=1",
        ),
        (
            "form, origin only",
            format!(
                "{host}\r\norigin: http://evil.example\r\ncontent-type: application/x-www-form-urlencoded"
            ),
            "reload=1",
        ),
        (
            "sandboxed page (origin null)",
            format!("{host}\r\norigin: null\r\ncontent-type: multipart/form-data; boundary=x"),
            "--x--",
        ),
        (
            "another port of this host",
            format!(
                "{host}\r\norigin: http://127.0.0.1:{}\r\ncontent-type: text/plain",
                bed.webhook
            ),
            "x",
        ),
        (
            "text/plain without origin",
            format!("{host}\r\ncontent-type: text/plain"),
            "{}",
        ),
        ("a body without a type", host.clone(), "reload=1"),
    ];
    for (what, headers, body) in &attacks {
        let a = raw(
            bed.admin,
            &format!("POST /-/reload HTTP/1.1\r\n{headers}"),
            body,
        )
        .unwrap_or_else(|| panic!("{what}: no answer"));
        assert!(
            a.status == 403 || a.status == 415,
            "{what}: answered {} {}",
            a.status,
            a.body
        );
        assert_guard_headers(&a, what);
        assert_eq!(bed.routes(""), 2, "{what}: the reload went through");
    }
    assert!(!bed.host.log().contains("Config reloaded"));

    // The operator's own requests still reload: no body, or JSON from the same origin.
    let (status, body) = post(&format!("{}/-/reload", bed.host.admin)).expect("reload answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(bed.routes(""), 3);
    let a = raw(
        bed.admin,
        &format!(
            "POST /-/reload HTTP/1.1\r\n{host}\r\norigin: http://127.0.0.1:{}\r\ncontent-type: application/json",
            bed.admin
        ),
        "{}",
    )
    .expect("reload answers");
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn a_rebound_host_name_reads_no_alert_and_sends_no_test_alert() {
    let bed = bed("", &[]);
    assert_eq!(bed.post_alert("Disk full on db01 SECRET-7781"), Some(202));
    wait_until("the alert delivered", LONG, || {
        bed.records().contains("SECRET-7781")
    });
    let port = bed.admin;
    // A page at http://evil.example:<port>/ whose name now resolves to 127.0.0.1: the browser
    // sends its own name as Host, and to it the request is same-origin.
    let evil = format!("host: evil.example:{port}");
    for path in [
        "/api/v1/alerts?limit=10",
        "/api/v1/alerts/1",
        "/api/v1/status",
        "/",
    ] {
        let a = raw(port, &format!("GET {path} HTTP/1.1\r\n{evil}"), "").expect("answers");
        assert_eq!(a.status, 421, "GET {path}: {} {}", a.status, a.body);
        assert!(!a.body.contains("SECRET-7781") && !a.body.contains("sip:alice"));
        assert_guard_headers(&a, path);
    }
    let a = raw(
        port,
        &format!(
            "POST /api/v1/test-alert HTTP/1.1\r\n{evil}\r\norigin: http://evil.example:{port}\r\ncontent-type: application/json"
        ),
        r#"{"route": "the-rest", "subject": "rebound test alert 4242"}"#,
    )
    .expect("answers");
    assert_eq!(a.status, 421, "{}", a.body);
    // An absolute-form request target naming the rebound host, with an innocent Host header.
    let a = raw(
        port,
        &format!("GET http://evil.example:{port}/api/v1/alerts HTTP/1.1\r\nhost: 127.0.0.1:{port}"),
        "",
    )
    .expect("answers");
    assert_eq!(a.status, 421, "{}", a.body);
    // A name that merely starts like an allowed one, and one that ends like it.
    for host in ["alerts.example.net.evil.example", "evil-alerts.example.net"] {
        let a = raw(
            port,
            &format!("GET /api/v1/alerts HTTP/1.1\r\nhost: {host}"),
            "",
        )
        .expect("answers");
        assert_eq!(a.status, 421, "{host}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(!bed.records().contains("rebound test alert"));

    // IP literals, localhost and the names in admin_hosts are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("Alerts.Example.NET:{port}"),
        "alerts.example.net".to_owned(),
    ] {
        let a = raw(
            port,
            &format!("GET /api/v1/alerts?limit=10 HTTP/1.1\r\nhost: {host}"),
            "",
        )
        .expect("answers");
        assert_eq!(a.status, 200, "{host}: {}", a.body);
        assert!(a.body.contains("SECRET-7781"), "{host}");
        assert!(!a.body.contains("rebound test alert"));
        assert_guard_headers(&a, &host);
    }
    let a = raw(
        port,
        &format!(
            "POST /api/v1/test-alert HTTP/1.1\r\nhost: localhost:{port}\r\norigin: http://localhost:{port}\r\ncontent-type: application/json"
        ),
        r#"{"route": "the-rest", "subject": "own test alert 4243"}"#,
    )
    .expect("answers");
    assert_eq!(a.status, 202, "{}", a.body);
    wait_until("the operator's test alert delivered", LONG, || {
        bed.records().contains("own test alert 4243")
    });
}

#[test]
fn the_admin_token_guards_writes_and_alert_contents() {
    let bed = bed(r#"admin_token_file = "admin.token""#, &[]);
    assert_eq!(bed.post_alert("Token test SECRET-5512"), Some(202));
    wait_until("the alert delivered", LONG, || {
        bed.records().contains("SECRET-5512")
    });
    let port = bed.admin;
    let host = format!("host: 127.0.0.1:{port}");
    let good = format!("\r\nauthorization: Bearer {TOKEN}");
    let wrong = format!("\r\nauthorization: Bearer {TOKEN}x");
    // Open without the token: health, metrics and the page itself.
    for path in ["/healthz", "/metrics", "/", "/page.js"] {
        let a = raw(port, &format!("GET {path} HTTP/1.1\r\n{host}"), "").expect("answers");
        // (/healthz says 503 while an instance is still starting: open all the same.)
        assert!(
            a.status == 200 || (path == "/healthz" && a.status == 503),
            "{path}: {}",
            a.status
        );
        assert_guard_headers(&a, path);
    }
    // Alert contents and every state-changing request need it.
    let guarded = [
        ("GET", "/api/v1/alerts", ""),
        ("GET", "/api/v1/alerts/1", ""),
        ("GET", "/api/v1/status", ""),
        ("POST", "/-/reload", ""),
        (
            "POST",
            "/api/v1/test-alert",
            r#"{"route": "the-rest", "subject": "no token 9090"}"#,
        ),
    ];
    for (method, path, body) in guarded {
        for auth in ["", wrong.as_str(), "\r\nauthorization: Basic YWRtaW46eA=="] {
            let ct = if body.is_empty() {
                ""
            } else {
                "\r\ncontent-type: application/json"
            };
            let a = raw(
                port,
                &format!("{method} {path} HTTP/1.1\r\n{host}{auth}{ct}"),
                body,
            )
            .expect("answers");
            assert_eq!(a.status, 401, "{method} {path} {auth:?}: {}", a.body);
            assert!(a.header("www-authenticate").is_some());
            assert!(!a.body.contains("SECRET-5512") && !a.body.contains("sip:alice"));
            assert_guard_headers(&a, path);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!bed.records().contains("no token 9090"));
    // With it, all of them work.
    let a = raw(
        port,
        &format!("GET /api/v1/alerts HTTP/1.1\r\n{host}{good}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 200);
    assert!(a.body.contains("SECRET-5512"));
    assert_eq!(bed.routes(&good), 2);
    let a = raw(
        port,
        &format!(
            "POST /api/v1/test-alert HTTP/1.1\r\n{host}{good}\r\ncontent-type: application/json"
        ),
        r#"{"route": "the-rest", "subject": "with token 9191"}"#,
    )
    .unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
    let a = raw(
        port,
        &format!("POST /-/reload HTTP/1.1\r\n{host}{good}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    wait_until("the test alert delivered", LONG, || {
        bed.records().contains("with token 9191")
    });
    // A new token in the file takes over on reload; the old one is refused from then on.
    let rotated = "rotated-admin-token-0c4f2b7d";
    fs::write(bed.dir().join("admin.token"), format!("{rotated}\n")).unwrap();
    let a = raw(
        port,
        &format!("POST /-/reload HTTP/1.1\r\n{host}{good}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let a = raw(
        port,
        &format!("GET /api/v1/status HTTP/1.1\r\n{host}{good}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 401);
    assert_eq!(
        bed.routes(&format!("\r\nauthorization: Bearer {rotated}")),
        2
    );
    // The tokens themselves are never logged.
    let log = bed.host.log();
    assert!(!log.contains(TOKEN) && !log.contains(rotated));
    // Wrong tokens are logged (rate-limited) with where they came from.
    assert!(
        log.contains("wrong token refused") && log.contains("peer=Some(127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn a_public_admin_listen_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "hook-token\n").unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let path = dir.path().join("alertbridge.toml");
    let public = format!("0.0.0.0:{admin}");
    fs::write(&path, config(dir.path(), &public, webhook, "", false)).unwrap();
    let (ok, out) = cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        !ok,
        "check accepted a public admin_listen without a token:\n{out}"
    );
    assert!(
        out.contains("admin_listen") && out.contains("admin_token_file"),
        "{out}"
    );
    // `run` refuses it too, and never listens.
    let mut child = Command::new(bin_dir().join("alertbridge"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LONG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`run` served a public admin_listen without a token");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("admin_listen"), "{err}");

    // A token that is too short is refused, naming the key and not the value.
    fs::write(dir.path().join("short.token"), "PLANTED-short\n").unwrap();
    fs::write(
        &path,
        config(
            dir.path(),
            &public,
            webhook,
            r#"admin_token_file = "short.token""#,
            false,
        ),
    )
    .unwrap();
    let (ok, out) = cli(&["check", "--config", path.to_str().unwrap()]);
    assert!(!ok && out.contains("admin_token_file"), "{out}");
    assert!(!out.contains("PLANTED-short"), "{out}");

    // With a token (from the environment this time) it starts, and the token is required.
    let var = "ALERTBRIDGE_TEST_ADMIN_TOKEN";
    let text = config(
        dir.path(),
        &public,
        webhook,
        &format!(r#"admin_token_env = "{var}""#),
        false,
    );
    let host = Host::start_under(
        dir.path(),
        admin,
        &text,
        &["env", &format!("{var}={TOKEN}")],
    );
    let a = raw(
        admin,
        &format!("GET /api/v1/alerts HTTP/1.1\r\nhost: 127.0.0.1:{admin}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 401);
    let a = raw(
        admin,
        &format!("GET /api/v1/alerts HTTP/1.1\r\nhost: 127.0.0.1:{admin}\r\nauthorization: Bearer {TOKEN}"),
        "",
    )
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(!host.log().contains(TOKEN));
}

/// Open descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn half_sent_requests_cannot_take_the_webhook_down() {
    // 256 descriptors for the whole process, as a service unit might give it.
    let bed = bed(
        "admin_read_timeout_ms = 2000",
        &["prlimit", "--nofile=256:256", "--"],
    );
    let pid = bed.host.pid().expect("running");
    assert_eq!(bed.post_alert("before the flood"), Some(202));
    let base = fds(pid);

    // 300 requests that never finish their head.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", bed.admin)).expect("connect");
        s.write_all(
            format!(
                "GET /api/v1/alerts HTTP/1.1\r\nhost: 127.0.0.1:{}\r\nx-slow: 1",
                bed.admin
            )
            .as_bytes(),
        )
        .unwrap();
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = fds(pid);
    eprintln!("descriptors: {base} before, {during} with 300 slow admin clients");
    assert!(
        during < 200,
        "the admin server holds {during} of 256 descriptors"
    );

    // The webhook still takes alerts at once, and they are delivered.
    let start = Instant::now();
    assert_eq!(
        bed.post_alert("during the flood 6161"),
        Some(202),
        "the webhook did not answer; log:\n{}",
        bed.host.log()
    );
    eprintln!("webhook answered in {:?} during the flood", start.elapsed());
    wait_until("the alert delivered during the flood", LONG, || {
        bed.records().contains("during the flood 6161")
    });

    // The slow clients time out (2 s each, a slot at a time) and the admin server answers.
    let start = Instant::now();
    wait_until(
        "the admin server to answer again",
        Duration::from_secs(90),
        || {
            raw(
                bed.admin,
                &format!("GET /healthz HTTP/1.1\r\nhost: 127.0.0.1:{}", bed.admin),
                "",
            )
            .is_some_and(|a| a.status == 200)
        },
    );
    eprintln!("admin answered again {:?} after the flood", start.elapsed());
    let mut closed = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            _ => closed += 1,
        }
    }
    eprintln!("{closed} of 300 slow clients were closed by the server");
    assert!(closed > 0, "no slow client was ever closed");
}
