//! `{{ alert_url }}` end to end: a route template puts `<public_url>/?alert=<id>` in the IM
//! (through the real host and the `test-sink` plugin), and that link, opened in headless
//! Chromium, shows that alert on the status page — also when it is no longer among the recent
//! alerts the page lists.

use std::{fs, time::Duration};

use alertbridge_testbed::{
    browser::Browser,
    harness::{emit, wait_until},
    servers,
    sink_bed::SinkBed,
};

const LONG: Duration = Duration::from_secs(30);

const ROUTES: &str = r#"
[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["lync"]
template = "{{ subject }}: {{ alert_url }}"
"#;

#[test]
fn the_link_in_the_im_opens_that_alert_on_the_status_page() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let bed = SinkBed::start(ROUTES);
    let (host, admin, control) = (&bed.host, bed.admin, bed.port);
    let first = emit(control, "count=1&prefix=first&subject=Disk%20full");
    let id = first["ids"][0].as_u64().expect("an alert id");
    // 40 later alerts push the first out of the page's list of 30 recent ones.
    emit(control, "count=40&prefix=later&subject=Later");
    let record = bed.record_file();
    let mut link = String::new();
    wait_until("the first alert's IM", LONG, || {
        let text = fs::read_to_string(&record).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|r| r["subject"] == "Disk full 0")
            .and_then(|r| r["body"].as_str().map(str::to_owned));
        match found {
            Some(body) => {
                link = body;
                true
            }
            None => false,
        }
    });
    let url = link
        .strip_prefix("Disk full 0: ")
        .unwrap_or_else(|| panic!("the IM is the template's: {link:?}"));
    assert_eq!(url, format!("http://127.0.0.1:{admin}/?alert={id}"));
    wait_until("every alert delivered", LONG, || {
        host.alerts(50).iter().all(|a| a["state"] == "finished")
    });

    let browser = Browser::start(&chromium);
    browser.open(url);
    wait_until("the linked alert on the page", LONG, || {
        browser.text("#linked-alert").contains("delivered")
    });
    let shown = browser.text("#linked-alert");
    assert!(shown.starts_with(&format!("Alert {id}\n")), "{shown}");
    assert!(shown.contains("Disk full 0"), "{shown}");
    assert!(shown.contains("seq=first:0"), "{shown}");
    assert!(
        shown.contains("sip:alice@contoso.com via lync (route all)"),
        "{shown}"
    );
    assert!(
        !browser.text("#alerts").contains("Disk full 0"),
        "the recent list no longer holds it: the link alone shows it"
    );

    browser.open(&format!("http://127.0.0.1:{admin}/?alert=999999"));
    wait_until("the missing alert's answer", LONG, || {
        browser.text("#linked-alert").starts_with("Alert 999999")
    });
}

/// The bodies of the IMs the test sink recorded, in order.
fn bodies(record: &std::path::Path) -> Vec<String> {
    fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["body"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_reload_puts_a_changed_template_in_force_and_a_broken_one_is_refused() {
    let bed = SinkBed::start(ROUTES);
    let (host, control, text) = (&bed.host, bed.port, bed.config.clone());
    let record = bed.record_file();
    emit(control, "count=1&prefix=a&subject=Before");
    wait_until("the first IM", LONG, || bodies(&record).len() == 1);

    let changed = text.replace(
        "template = \"{{ subject }}: {{ alert_url }}\"",
        "template = \"new: {{ subject | upper }} ({{ labels.seq }})\"",
    );
    assert_ne!(changed, text);
    fs::write(&host.config, &changed).unwrap();
    let (status, body) = alertbridge_testbed::harness::post(&format!("{}/-/reload", host.admin))
        .expect("reload answers");
    assert_eq!(status, 200, "{body}");
    emit(control, "count=1&prefix=b&subject=After");
    wait_until("the second IM", LONG, || bodies(&record).len() == 2);
    assert_eq!(bodies(&record)[1], "new: AFTER 0 (b:0)");

    // A template that does not compile: the reload is refused at its place, the old one stays.
    fs::write(
        &host.config,
        changed.replace("{{ subject | upper }}", "{{ subject | upper }"),
    )
    .unwrap();
    let (status, body) = alertbridge_testbed::harness::post(&format!("{}/-/reload", host.admin))
        .expect("reload answers");
    assert_ne!(status, 200, "{body}");
    assert!(
        body.contains("route `all`: template: syntax error"),
        "{body}"
    );
    emit(control, "count=1&prefix=c&subject=Still");
    wait_until("the third IM", LONG, || bodies(&record).len() == 3);
    assert_eq!(bodies(&record)[2], "new: STILL 0 (c:0)");
}
