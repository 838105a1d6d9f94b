//! The status page in a real browser: headless Chromium (driven through chromedriver's
//! WebDriver API) opens the page of a running bridge, sees an alert posted to the webhook
//! appear with its recipients' outcomes without a reload, and sends a test alert through the
//! form; with an admin token set, the page asks for it once and keeps working; and a page on
//! another origin that auto-submits a form to `/-/reload` does not reload the bridge.
//! Screenshots are saved to `target/screenshots/`.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpListener,
    path::Path,
    time::Duration,
};

use alertbridge_testbed::{
    browser::Browser,
    harness::{Host, free_port, request, wait_until},
    servers,
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);

fn config(dir: &Path, admin: u16, webhook: u16) -> String {
    config_with(dir, admin, webhook, "")
}

/// The config, with `host_extra` in `[host]`.
fn config_with(dir: &Path, admin: u16, webhook: u16, host_extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
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
presence = {{ "sip:carol@contoso.com" = "offline" }}

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com", "sip:carol@contoso.com"]

[[route]]
name = "critical-to-ops"
match = {{ severity = ">=high" }}
groups = ["ops"]
sinks = ["lync"]
offline = {{ policy = "hold", max_wait_secs = 600, then = "skip" }}

[[route]]
name = "the-rest"
groups = ["ops"]
sinks = ["lync"]
"#
    )
}

#[test]
fn the_status_page_updates_live_and_sends_test_alerts() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "page-test-token\n").unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &config(dir.path(), admin, webhook));
    let browser = Browser::start(&chromium);
    browser.call("POST", "/url", json!({"url": host.admin}));
    wait_until("the page to go live", LONG, || {
        browser.text("#live").starts_with("live")
    });
    assert!(
        browser.text("#instances").contains("monitoring"),
        "{}",
        browser.text("#instances")
    );
    assert!(browser.text("#routes").contains("critical-to-ops"));

    // An alert posted to the webhook shows up, with each recipient's outcome, without a reload.
    let marker: u64 = browser
        .script("window.__marker = 42; return window.__marker;", json!([]))
        .as_u64()
        .unwrap();
    let (status, body) = request(
        "POST",
        &format!("http://127.0.0.1:{webhook}/api/v1/alerts"),
        &[
            ("authorization", "Bearer page-test-token"),
            ("content-type", "application/json"),
        ],
        r#"{"subject": "Disk full on db01", "body": "/var is at 98%", "severity": "critical"}"#,
    )
    .expect("the webhook answers");
    assert_eq!(status, 202, "{body}");
    wait_until("the webhook alert with its outcomes", LONG, || {
        let t = browser.text("#alerts");
        t.contains("Disk full on db01")
            && t.contains("delivered sip:alice@contoso.com")
            && t.contains("held sip:carol@contoso.com")
    });
    assert_eq!(
        browser
            .script("return window.__marker;", json!([]))
            .as_u64(),
        Some(marker),
        "the page was not reloaded"
    );

    // The form sends a test alert through the chosen route.
    browser.script(
        "document.querySelector('#route').value = 'the-rest';
         document.querySelector('input[name=subject]').value = 'Hello from the form';
         document.querySelector('#test button').click();",
        json!([]),
    );
    wait_until("the form's answer", LONG, || {
        browser.text("#sent").starts_with("sent as alert")
    });
    wait_until("the test alert delivered", LONG, || {
        let t = browser.text("#alerts");
        t.contains("Hello from the form")
            && t.contains("skipped sip:carol@contoso.com")
            && t.matches("delivered sip:alice@contoso.com").count() >= 2
    });
    let records = fs::read_to_string(dir.path().join("delivered.jsonl")).unwrap();
    assert!(records.contains("Hello from the form"));

    browser.screenshot("status-page.png");
}

const ADMIN_TOKEN: &str = "page-admin-token-4b1d93e0c7";

#[test]
fn with_an_admin_token_the_page_asks_once_and_keeps_working() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "page-test-token\n").unwrap();
    fs::write(dir.path().join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let text = config_with(
        dir.path(),
        admin,
        webhook,
        r#"admin_token_file = "admin.token""#,
    );
    let host = Host::start(dir.path(), admin, &text);
    let (status, body) = request(
        "POST",
        &format!("http://127.0.0.1:{webhook}/api/v1/alerts"),
        &[
            ("authorization", "Bearer page-test-token"),
            ("content-type", "application/json"),
        ],
        r#"{"subject": "Token-guarded alert on db02", "severity": "critical"}"#,
    )
    .expect("the webhook answers");
    assert_eq!(status, 202, "{body}");

    let browser = Browser::start(&chromium);
    browser.call("POST", "/url", json!({"url": host.admin}));
    let login_shown = || {
        browser
            .script(
                "return !document.querySelector('#login').hidden;",
                json!([]),
            )
            .as_bool()
            == Some(true)
    };
    wait_until("the page to ask for the token", LONG, login_shown);
    assert!(browser.text("#live").contains("admin token"));
    assert!(!browser.text("body").contains("Token-guarded alert"));
    browser.screenshot("status-page-token.png");

    // A wrong token is refused and asked for again.
    browser.script(
        "document.querySelector('#token').value = 'not-the-token-at-all';
         document.querySelector('#login button').click();",
        json!([]),
    );
    wait_until("the wrong token refused", LONG, || {
        login_shown() && browser.text("#login-note").contains("refused")
    });

    browser.script(
        "document.querySelector('#token').value = arguments[0];
         document.querySelector('#login button').click();",
        json!([ADMIN_TOKEN]),
    );
    wait_until("the page to go live with the token", LONG, || {
        browser.text("#live").starts_with("live")
            && browser.text("#alerts").contains("Token-guarded alert")
    });
    assert!(browser.text("#routes").contains("critical-to-ops"));

    // Opened again (a new page load), it does not ask again and keeps working.
    browser.call("POST", "/url", json!({"url": host.admin}));
    wait_until("the reopened page to go live", LONG, || {
        browser.text("#live").starts_with("live")
            && browser.text("#alerts").contains("Token-guarded alert")
    });
    assert!(!login_shown(), "the page asked for the token again");

    // The form sends a test alert with the token.
    browser.script(
        "document.querySelector('#route').value = 'the-rest';
         document.querySelector('input[name=subject]').value = 'Hello with a token';
         document.querySelector('#test button').click();",
        json!([]),
    );
    wait_until("the form's answer", LONG, || {
        browser.text("#sent").starts_with("sent as alert")
    });
    wait_until("the test alert listed", LONG, || {
        browser.text("#alerts").contains("Hello with a token")
    });
    let records = fs::read_to_string(dir.path().join("delivered.jsonl")).unwrap();
    assert!(records.contains("Hello with a token"));
    assert!(!host.log().contains(ADMIN_TOKEN));
}

/// Serves `html` to every request on a loopback port (another origin than the bridge's).
fn serve_page(html: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    port
}

#[test]
fn a_form_on_another_origin_cannot_reload_the_bridge() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), "page-test-token\n").unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &config(dir.path(), admin, webhook));
    let routes = |host: &Host| {
        host.api("/api/v1/status")["routes"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(routes(&host), 2);
    // The config on disk gains a route: a reload that goes through would show it.
    let text = config(dir.path(), admin, webhook).replace(
        "[[route]]\nname = \"the-rest\"",
        "[[route]]\nname = \"added\"\nmatch = { severity = \"info\" }\ngroups = [\"ops\"]\nsinks = [\"lync\"]\n\n[[route]]\nname = \"the-rest\"",
    );
    fs::write(&host.config, text).unwrap();

    let evil = serve_page(format!(
        r#"<!doctype html><title>cute cats</title>
<form id="f" method="post" action="http://127.0.0.1:{admin}/-/reload"><input name="please" value="reload"></form>
<script>document.getElementById("f").submit();</script>"#
    ));
    let browser = Browser::start(&chromium);
    browser.call(
        "POST",
        "/url",
        json!({"url": format!("http://127.0.0.1:{evil}/")}),
    );
    wait_until("the form to be submitted", LONG, || {
        browser
            .call("GET", "/url", json!({}))
            .as_str()
            .is_some_and(|u| u.contains(&format!(":{admin}/-/reload")))
            && !browser.text("body").is_empty()
    });
    let shown = browser.text("body");
    browser.screenshot("cross-site-form.png");
    assert!(
        shown.contains("another origin"),
        "the bridge answered: {shown}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(routes(&host), 2, "the cross-site form reloaded the bridge");
    assert!(!host.log().contains("Config reloaded"));
}
