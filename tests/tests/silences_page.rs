//! The status page's silences in headless Chromium through a real host: "silence alerts like
//! this" on an alert pre-fills the form from its labels; the form creates the silence (with the
//! admin token the page keeps), which the page lists as active; the next matching alert shows
//! `silenced` with the silence's id and reaches nobody; the page's "expire" ends the silence and
//! the alert after it is delivered. Screenshots go to `target/screenshots/`.

use std::{fs, time::Duration};

use alertbridge_testbed::{
    browser::Browser,
    harness::{request, wait_until},
    servers,
    sink_bed::SinkBed,
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);
const TOKEN: &str = "silence-page-token-93ab10";

const ROUTES: &str = r#"
[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com"]

[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
"#;

fn post_alert(webhook: u16, subject: &str) {
    let body = json!({"subject": subject, "severity": "critical",
                      "labels": {"alertname": "DiskFull", "host": "db01"}});
    let (status, answer) = request(
        "POST",
        &format!("http://127.0.0.1:{webhook}/api/v1/alerts"),
        &[
            ("authorization", "Bearer page-hook-token"),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .expect("the webhook answers");
    assert_eq!(status, 202, "{answer}");
}

#[test]
fn the_page_silences_alerts_like_one_and_expires_the_silence() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let bed = SinkBed::start_webhook("page-hook-token", TOKEN, ROUTES);
    let (host, webhook) = (&bed.host, bed.port);
    let delivered = || fs::read_to_string(bed.record_file()).unwrap_or_default();
    post_alert(webhook, "Disk full on db01");

    let browser = Browser::start(&chromium);
    browser.open(&host.admin);
    browser.script(
        "document.querySelector('#token').value = arguments[0];
         document.querySelector('#login button').click();",
        json!([TOKEN]),
    );
    wait_until("the alert delivered on the page", LONG, || {
        let t = browser.text("#alerts");
        t.contains("Disk full on db01") && t.contains("delivered sip:alice@contoso.com")
    });
    wait_until("the empty silences list", LONG, || {
        browser.text("#silences").contains("none")
    });

    // "silence alerts like this" pre-fills the matchers from the alert's labels.
    browser.click("#alerts button.silence-like");
    wait_until("the form pre-filled", LONG, || {
        browser
            .text("#silence-note")
            .contains("pre-filled from alert 1")
    });
    let labels = browser
        .script(
            "return document.querySelector('#silence-labels').value;",
            json!([]),
        )
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(labels, "alertname = DiskFull\nhost = db01");

    // Narrowed to the host, signed and submitted through the form.
    browser.script(
        "document.querySelector('#silence-labels').value = 'host = db01';
         document.querySelector('#silence-duration').value = '1h';
         document.querySelector('#silence-author').value = 'alice';
         document.querySelector('#silence-comment').value = 'db01 maintenance';",
        json!([]),
    );
    browser.click("#silence-form button[type=submit]");
    wait_until("the silence created", LONG, || {
        browser
            .text("#silence-note")
            .starts_with("silence 1 created: host = db01")
    });
    wait_until("the silence listed as active", LONG, || {
        let t = browser.text("#silences");
        t.contains("active") && t.contains("host = db01") && t.contains("db01 maintenance")
    });
    let (_, body) = request(
        "GET",
        &format!("{}/api/v1/silences/1", host.admin),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .unwrap();
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["matchers"], json!({"labels": {"host": "db01"}}));
    assert_eq!(s["author"], "alice");

    // The next matching alert is silenced, on the page with the silence's id.
    post_alert(webhook, "Disk full on db01 again");
    wait_until("the silenced alert on the page", LONG, || {
        let t = browser.text("#alerts");
        t.contains("Disk full on db01 again")
            && t.contains("silenced sip:alice@contoso.com")
            && t.contains("silenced by silence 1")
    });
    browser.screenshot("status-page-silences.png");
    assert!(!delivered().contains("Disk full on db01 again"));

    // "expire" ends it; the alert after that is delivered.
    browser.click("#silences button.silence-expire");
    wait_until("the silence expired", LONG, || {
        browser.text("#silence-note") == "silence 1 expired"
            && browser.text("#silences").contains("expired")
    });
    post_alert(webhook, "Disk full on db01 after");
    wait_until("the alert after the silence delivered", LONG, || {
        delivered().contains("Disk full on db01 after")
    });
    wait_until("it shows as delivered", LONG, || {
        let t = browser.text("#alerts tbody tr:first-child");
        t.contains("Disk full on db01 after") && t.contains("delivered sip:bob@contoso.com")
    });
}
