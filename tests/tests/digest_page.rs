//! A digest's "Full list" end to end (issue 16): a grouped route folds a burst into one digest
//! IM (through the real host and the `test-sink` plugin) whose link is the status page's
//! `?digest=ID`; opened in headless Chromium, the page lists exactly the alerts that digest
//! carried with their outcomes, 200 rows at a time with "more". `/metrics` counts the digests
//! and the alerts they carried.

use std::{collections::BTreeSet, time::Duration};

use alertbridge_testbed::{
    browser::Browser,
    harness::{emit, get, wait_until},
    servers,
    sink_bed::SinkBed,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

const ROUTES: &str = r#"
[[route]]
name = "grouped"
users = ["sip:alice@contoso.com"]
sinks = ["lync"]
group_by = ["severity"]
group_wait_ms = 1500
group_interval_ms = 60000
"#;

/// The "Full list" link of the recorded digest IM whose subject starts with `tag`.
fn link_of(bed: &SinkBed, tag: &str) -> Option<String> {
    bed.records()
        .iter()
        .filter(|r| r["subject"].as_str().is_some_and(|s| s.starts_with(tag)))
        .find_map(|r| {
            r["body"]
                .as_str()?
                .lines()
                .find_map(|l| l.strip_prefix("Full list: "))
                .map(str::to_owned)
        })
}

/// The ids of the alerts `emit` answered for.
fn ids(emitted: &Value) -> BTreeSet<u64> {
    emitted["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("an id"))
        .collect()
}

/// The ids in the rows of the page's digest table.
fn shown_ids(browser: &Browser) -> Vec<u64> {
    let v = browser.script(
        "return [...document.querySelectorAll('#digest-alerts tbody tr')].map(r => r.dataset.id);",
        json!([]),
    );
    v.as_array()
        .expect("rows")
        .iter()
        .map(|x| x.as_str().and_then(|s| s.parse().ok()).expect("a row id"))
        .collect()
}

/// The value of the unlabelled counter `name` on `/metrics`.
fn counter(admin: u16, name: &str) -> f64 {
    let text = get(&format!("http://127.0.0.1:{admin}/metrics")).expect("/metrics answers");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {text}"))
}

#[test]
fn the_digest_link_opens_the_page_listing_exactly_its_alerts() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let bed = SinkBed::start(ROUTES);
    let (host, admin, control) = (&bed.host, bed.admin, bed.port);
    // Two groups at once: 30 critical alerts, 250 normal ones.
    let critical = ids(&emit(
        control,
        "count=30&prefix=c&subject=Disk%20full&severity=critical",
    ));
    let minor = ids(&emit(
        control,
        "count=250&prefix=m&subject=Slow&severity=normal",
    ));
    assert_eq!((critical.len(), minor.len()), (30, 250));
    let (mut link, mut big) = (String::new(), String::new());
    wait_until("both digest IMs", LONG, || {
        match (
            link_of(&bed, "[FIRING ×30]"),
            link_of(&bed, "[FIRING ×250]"),
        ) {
            (Some(a), Some(b)) => {
                (link, big) = (a, b);
                true
            }
            _ => false,
        }
    });
    wait_until("every alert delivered", LONG, || {
        host.all_alerts(&[])
            .iter()
            .all(|a| a["state"] == "finished")
    });
    assert_eq!(bed.records().len(), 2, "one IM per group");
    let first = critical.first().unwrap();
    assert_eq!(link, format!("http://127.0.0.1:{admin}/?digest={first}"));

    let browser = Browser::start(&chromium);
    browser.open(&link);
    wait_until("the digest on the page", LONG, || {
        browser.text("#digest-summary").contains("30 alerts")
    });
    let summary = browser.text("#digest-summary");
    assert_eq!(summary, "30 alerts: 30 firing, 0 resolved", "{summary}");
    let shown: BTreeSet<u64> = shown_ids(&browser).into_iter().collect();
    assert_eq!(shown, critical, "exactly the digest's alerts");
    let table = browser.text("#digest-alerts");
    assert!(table.contains("Disk full 0"), "{table}");
    assert!(table.contains("seq=c:0"), "{table}");
    assert!(table.contains("critical"), "{table}");
    assert_eq!(
        table
            .matches("delivered sip:alice@contoso.com via lync")
            .count(),
        30,
        "{table}"
    );
    assert!(!table.contains("Slow"), "no alert of the other digest");
    assert!(
        browser
            .text("#digest")
            .lines()
            .all(|l| !l.starts_with("more"))
    );

    // A long digest: 200 rows, then the rest on "more".
    browser.open(&big);
    wait_until("the long digest on the page", LONG, || {
        browser.text("#digest-summary").contains("250 alerts")
    });
    assert_eq!(shown_ids(&browser).len(), 200);
    assert_eq!(browser.text("#digest-more"), "more (50 not shown)");
    browser.click("#digest-more");
    let shown: BTreeSet<u64> = shown_ids(&browser).into_iter().collect();
    assert_eq!(shown, minor);
    assert_eq!(
        browser.script(
            "return document.getElementById('digest-more').hidden;",
            json!([])
        ),
        json!(true)
    );

    browser.open(&format!("http://127.0.0.1:{admin}/?digest=abc"));
    wait_until("the bad id's answer", LONG, || {
        browser.text("#digest").contains("not a digest id: abc")
    });

    assert_eq!(counter(admin, "alertbridge_digests_total"), 2.0);
    assert_eq!(counter(admin, "alertbridge_digest_alerts_total"), 280.0);
}
