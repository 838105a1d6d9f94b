//! The status page's incidents in a real browser (headless Chromium through chromedriver): a
//! real host with an admin token and a route with an escalation policy; an alert posted to the
//! webhook opens an incident, which the page shows live (number, title, state, level, who was
//! paged when); clicking its `ack` button acknowledges it through the admin API with the token
//! the page asked for once (the API and the page then say "acknowledged by admin API"), and
//! `resolve` resolves it. A host without escalation policies shows no incident section.
//! An open incident older than the newest 50 (all newer ones resolved) is still on the page,
//! with the five newest resolved, and so is every open one past the page's first read of open
//! ones. Screenshots go to `target/screenshots/`. Without a browser: `GET /api/v1/incidents`
//! pages newest first by id, resolved or not or of one `state`, and refuses a bad `limit`,
//! `before` or `state` with a 400.

use std::{ops::RangeInclusive, time::Duration};

use alertbridge_testbed::{
    browser::Browser,
    harness::{Host, request, wait_until},
    servers,
    sink_bed::SinkBed,
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);
const ADMIN_TOKEN: &str = "incident-page-admin-token-8e21";
const HOOK_TOKEN: &str = "incident-page-hook-token";

/// The routes: one escalating through a policy, or (`escalation` false) a plain one.
fn start(escalation: bool) -> SinkBed {
    let route = if escalation {
        r#"
[[escalation]]
name = "db-oncall"
levels = [
  { users = ["sip:alice@contoso.com"], after_secs = 0 },
  { groups = ["leads"], after_secs = 600 },
]

[[route]]
name = "db"
escalation = "db-oncall"
sinks = ["lync"]
offline = { policy = "skip" }
"#
    } else {
        r#"
[[route]]
name = "all"
groups = ["leads"]
sinks = ["lync"]
"#
    };
    let routes = format!("\n[groups]\nleads = [\"sip:bob@contoso.com\"]\n{route}");
    SinkBed::start_webhook(HOOK_TOKEN, ADMIN_TOKEN, &routes)
}

/// `method` on the admin API with the token: status and answer.
fn call(host: &Host, method: &str, path: &str) -> (u16, Value) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = request(
        method,
        &format!("{}{path}", host.admin),
        &[("authorization", &bearer)],
        "",
    )
    .unwrap_or_else(|| panic!("{method} {path}: no answer; log:\n{}", host.log()));
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
    (status, v)
}

/// GET on the admin API with the token; the answer must be a 200.
fn api(host: &Host, path: &str) -> Value {
    let (status, v) = call(host, "GET", path);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Posts an alert to the webhook on `port`.
fn fire(port: u16, subject: &str, dedup_key: &str) {
    let bearer = format!("Bearer {HOOK_TOKEN}");
    let alert = json!({"subject": subject, "severity": "critical", "dedup_key": dedup_key});
    let (status, body) = request(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/alerts"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        &alert.to_string(),
    )
    .expect("the webhook answers");
    assert_eq!(status, 202, "{body}");
}

/// Opens the page and gives it the admin token when it asks.
fn open_signed_in(browser: &Browser, host: &Host) {
    browser.open(&host.admin);
    wait_until("the page to ask for the token", LONG, || {
        browser.script(
            "return !document.querySelector('#login').hidden;",
            json!([]),
        ) == json!(true)
    });
    browser.script(
        "document.querySelector('#token').value = arguments[0];
         document.querySelector('#login button').click();",
        json!([ADMIN_TOKEN]),
    );
    wait_until("the page to go live", LONG, || {
        browser.text("#live").starts_with("live")
    });
}

fn section_shown(browser: &Browser) -> bool {
    browser.script(
        "return !document.querySelector('#incidents-section').hidden;",
        json!([]),
    ) == json!(true)
}

#[test]
fn the_page_shows_an_incident_live_and_its_buttons_ack_and_resolve_it() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let SinkBed {
        host,
        port: webhook,
        dir: _dir,
        ..
    } = start(true);
    let browser = Browser::start(&chromium);
    open_signed_in(&browser, &host);
    let marker = browser.script("window.__marker = 7; return 7;", json!([]));
    // Before any incident: the section is there (a route names a policy), empty; the route
    // shows its policy.
    wait_until("the empty incident section", LONG, || {
        section_shown(&browser) && browser.text("#incidents").contains("none")
    });
    assert!(
        browser.text("#routes").contains("escalation db-oncall"),
        "{}",
        browser.text("#routes")
    );

    fire(webhook, "Disk full on db01", "db01-disk");

    // The incident appears without a reload: number, title, state, level, who was paged.
    let row = "#incidents tr[data-incident='1']";
    wait_until("the incident on the page", LONG, || {
        let t = browser.text(row);
        t.contains("#1")
            && t.contains("Disk full on db01")
            && t.contains("open")
            && t.contains("sip:alice@contoso.com")
    });
    assert!(section_shown(&browser));
    let shown = browser.text(row);
    assert!(shown.contains("level 1 at"), "{shown}");
    assert!(shown.contains("next at"), "level 2 is due later: {shown}");
    let inc = api(&host, "/api/v1/incidents/1");
    assert_eq!(
        (inc["state"].as_str(), inc["level"].as_u64()),
        (Some("open"), Some(1)),
        "{inc:#}"
    );
    browser.screenshot("incident-open.png");

    // Ack: the API records it as the admin API's, and the page follows.
    browser.click(&format!("{row} button[data-act='ack']"));
    wait_until("the ack in the API", LONG, || {
        api(&host, "/api/v1/incidents/1")["state"] == "acknowledged"
    });
    let inc = api(&host, "/api/v1/incidents/1");
    assert_eq!(inc["acked"]["by"], "admin API", "{inc:#}");
    wait_until("the ack on the page", LONG, || {
        let t = browser.text(row);
        t.contains("acknowledged by admin API")
            && browser.text("#incident-note") == "#1 acknowledged"
    });
    let buttons = |act: &str| {
        browser.script(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([format!("{row} button[data-act='{act}']")]),
        )
    };
    assert_eq!(
        buttons("ack"),
        json!(0),
        "no ack button on an acknowledged incident"
    );
    assert_eq!(buttons("resolve"), json!(1));
    assert!(
        !browser.text(row).contains("next at"),
        "nothing due after the ack"
    );
    browser.screenshot("incident-acknowledged.png");

    // Resolve: the same, and the row stays among the recently resolved, without buttons.
    browser.click(&format!("{row} button[data-act='resolve']"));
    wait_until("the resolve in the API and on the page", LONG, || {
        api(&host, "/api/v1/incidents/1")["state"] == "resolved"
            && browser.text(row).contains("resolved by admin API")
    });
    assert_eq!(buttons("resolve"), json!(0));
    assert_eq!(
        browser.script("return window.__marker;", json!([])),
        marker,
        "the page was not reloaded"
    );
    // Only those two changes went through: one ack and one resolve, each by the page.
    assert_eq!(
        api(&host, "/api/v1/incidents")["incidents"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert!(!host.log().contains(ADMIN_TOKEN));
}

#[test]
fn without_escalation_policies_the_page_shows_no_incident_section() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let SinkBed {
        host, dir: _dir, ..
    } = start(false);
    let browser = Browser::start(&chromium);
    open_signed_in(&browser, &host);
    // Two refreshes of the incidents after going live: still hidden, and no error shown.
    std::thread::sleep(Duration::from_millis(2200));
    assert!(!section_shown(&browser));
    assert_eq!(browser.text("#incident-note"), "");
    assert!(browser.text("#routes").contains("all"));
}

/// The ids a page lists and its cursor.
fn page(host: &Host, query: &str) -> (Vec<u64>, Value) {
    let v = api(host, &format!("/api/v1/incidents{query}"));
    let ids = v["incidents"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|i| i["id"].as_u64().expect("an id"))
        .collect();
    (ids, v["next_before"].clone())
}

/// Opens incidents `ids` (the next ones) through the webhook, one alert each, and waits for the
/// last.
fn open_incidents(host: &Host, webhook: u16, ids: RangeInclusive<u64>) {
    let n = *ids.end();
    for i in ids {
        fire(
            webhook,
            &format!("Disk full on db{i:02}"),
            &format!("db{i:02}-disk"),
        );
    }
    wait_until("the incidents opened", LONG, || {
        call(host, "GET", &format!("/api/v1/incidents/{n}")).0 == 200
    });
}

/// Resolves incident `id` through the admin API.
fn resolve(host: &Host, id: u64) {
    let (status, v) = call(host, "POST", &format!("/api/v1/incidents/{id}/resolve"));
    assert_eq!(status, 200, "resolve #{id}: {v}");
}

#[test]
fn the_incident_list_pages_newest_first_by_state_and_refuses_a_bad_query() {
    let SinkBed {
        host,
        port: webhook,
        dir: _dir,
        ..
    } = start(true);
    open_incidents(&host, webhook, 1..=3);
    // The newest resolved: still first (by id, not open ones first).
    resolve(&host, 3);

    assert_eq!(page(&host, ""), (vec![3, 2, 1], Value::Null));
    assert_eq!(page(&host, "?limit=2"), (vec![3, 2], json!(2)));
    assert_eq!(page(&host, "?limit=2&before=2"), (vec![1], Value::Null));
    assert_eq!(page(&host, "?before=1"), (vec![], Value::Null));
    assert_eq!(page(&host, "?limit=0"), (vec![3], json!(3)), "at least one");
    assert_eq!(page(&host, "?state=all&limit=2"), (vec![3, 2], json!(2)));
    assert_eq!(page(&host, "?state=open&limit=1"), (vec![2], json!(2)));
    assert_eq!(
        page(&host, "?state=open&limit=1&before=2"),
        (vec![1], Value::Null)
    );
    assert_eq!(page(&host, "?state=resolved"), (vec![3], Value::Null));

    // Only #1 open: the newest page (of any state) holds no open incident; the open page does.
    resolve(&host, 2);
    assert_eq!(page(&host, "?limit=2"), (vec![3, 2], json!(2)));
    assert_eq!(page(&host, "?state=open&limit=2"), (vec![1], Value::Null));
    assert_eq!(
        page(&host, "?state=resolved&limit=2"),
        (vec![3, 2], Value::Null)
    );

    for bad in ["?limit=abc", "?before=-1", "?state=bogus", "?state=OPEN"] {
        let (status, v) = call(&host, "GET", &format!("/api/v1/incidents{bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
        let field = bad[1..].split('=').next().unwrap_or_default();
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains(field)),
            "{bad}: the answer names the field: {v}"
        );
    }
}

/// The incident rows the page shows, by id.
fn rows_shown(browser: &Browser) -> Value {
    browser.script(
        "return [...document.querySelectorAll('#incidents tr[data-incident]')]
             .map(r => Number(r.dataset.incident));",
        json!([]),
    )
}

#[test]
fn the_page_shows_every_open_incident_however_old() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let SinkBed {
        host,
        port: webhook,
        dir: _dir,
        ..
    } = start(true);
    // #1 open; #2..=#52 resolved: the newest 50 incidents are all resolved.
    open_incidents(&host, webhook, 1..=52);
    for id in 2..=52 {
        resolve(&host, id);
    }
    assert_eq!(
        page(&host, "?limit=50").0,
        (3..=52).rev().collect::<Vec<_>>()
    );

    let browser = Browser::start(&chromium);
    open_signed_in(&browser, &host);
    let row = "#incidents tr[data-incident='1']";
    wait_until("the old open incident on the page", LONG, || {
        let t = browser.text(row);
        t.contains("#1") && t.contains("Disk full on db01") && t.contains("open")
    });
    // The open one first, then the five newest resolved.
    wait_until("the open one and the five newest resolved", LONG, || {
        rows_shown(&browser) == json!([1, 52, 51, 50, 49, 48])
    });
    assert!(browser.text("#incidents").contains("resolved by admin API"));
    assert_eq!(browser.text("#incident-note"), "");
    browser.screenshot("incident-old-open.png");

    // 100 more open (#53..=#152): more than one page of open ones, all shown, newest first.
    open_incidents(&host, webhook, 53..=152);
    let mut want: Vec<u64> = (53..=152).rev().collect();
    want.extend([1, 52, 51, 50, 49, 48]);
    wait_until(
        "every open one over two pages, then the resolved",
        LONG,
        || rows_shown(&browser) == json!(want),
    );
}
