//! The UCWA simulator's web page in headless Chromium: it reloads itself every 2 s, but not while
//! a reply box has focus or text (a reload would wipe a half-typed reply), and again once the box
//! is left empty.

use std::time::Duration;

use alertbridge_testbed::{
    browser::Browser,
    harness::wait_until,
    servers,
    ucwa_sim::{SimConfig, Simulator, UserSpec},
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(30);

/// Marks the loaded page: a reload drops the mark.
const MARK: &str = "window.__kept = 1;";
const MARKED: &str = "return window.__kept === 1;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_page_does_not_reload_over_a_half_typed_reply() {
    let Some(chromium) = servers::chromium() else {
        return;
    };
    let sim = Simulator::start(SimConfig {
        users: vec![
            UserSpec::new("alerts@contoso.com", "pw", "Online"),
            UserSpec::new("alice@contoso.com", "a", "Away"),
        ],
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator");
    let url = sim.discover_url();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(&chromium);
        browser.open(&url);
        wait_until("the page", LONG, || {
            browser.text("body").contains("alice@contoso.com")
        });
        // Without typing the page reloads (within its 2 s period).
        browser.script(MARK, json!([]));
        wait_until("a reload of the idle page", LONG, || {
            browser.script(MARKED, json!([])) == json!(false)
        });
        wait_until("the page again", LONG, || {
            browser.text("body").contains("alice@contoso.com")
        });

        // A half-typed reply (focus and text) outlives two periods.
        browser.script(
            "const b = document.querySelector('input[aria-label=\"reply as alice@contoso.com\"]');\
             b.focus(); b.value = 'ack half-typed'; window.__kept = 1;",
            json!([]),
        );
        std::thread::sleep(Duration::from_millis(4500));
        assert_eq!(browser.script(MARKED, json!([])), json!(true), "reloaded");
        let typed = browser.script(
            "return document.querySelector('input[aria-label=\"reply as alice@contoso.com\"]').value;",
            json!([]),
        );
        assert_eq!(typed, json!("ack half-typed"));

        // Text alone (the box left) also holds the reload; an empty, unfocused box lets it go.
        browser.script("document.activeElement.blur();", json!([]));
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(browser.script(MARKED, json!([])), json!(true), "reloaded");
        browser.script(
            "document.querySelector('input[aria-label=\"reply as alice@contoso.com\"]').value = '';",
            json!([]),
        );
        wait_until("a reload once the box is empty", LONG, || {
            browser.script(MARKED, json!([])) == json!(false)
        });
    })
    .await
    .unwrap();
}
