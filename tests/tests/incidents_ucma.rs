//! The incident loop through the `ucma` sink and the UCMA bridge simulator (OCS 2007 R2 /
//! Lync 2010): the real `alertbridge` binary with the real `test-source` and `ucma` plugin
//! files, the simulated bridge in this process. An alert on a route with an escalation policy
//! pages level 1 (Alice); nobody answers, so level 2 (Bob) is paged after its wait; Bob replies
//! `ack` in the page's conversation (§4.5 inbound, long-polled by the sink); the bot confirms to
//! Bob and tells Alice, each in their own conversation; level 3 (Carol) is never paged. What
//! the operator sees agrees: the admin API's incident, with who was paged when and who acked.

use std::time::{Duration, Instant};

use alertbridge_testbed::{
    harness::{Host, emit, wait_until},
    ucma_bed::UcmaBed,
    ucma_sim::{Conversation, SimHandle},
};

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "incidents-ucma-secret-0123456789";

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const CAROL: &str = "sip:carol@contoso.com";

/// Level 2 is paged this long after the incident opened, level 3 after [`LEVEL3_SECS`].
const LEVEL2_SECS: u64 = 1;
const LEVEL3_SECS: u64 = 4;

/// Every line the bot said to `user`, in every conversation with them, oldest first.
fn bot_lines(sim: &SimHandle, user: &str) -> Vec<String> {
    sim.conversations_of(user)
        .iter()
        .flat_map(|c: &Conversation| c.lines.iter())
        .filter(|l| l.from == "bridge")
        .map(|l| l.text.clone())
        .collect()
}

/// Waits until `user` received an IM whose text holds `needle`; when it was seen.
fn received(sim: &SimHandle, user: &str, needle: &str) -> Instant {
    wait_until(&format!("{user} to receive `{needle}`"), LONG, || {
        sim.received(user).iter().any(|im| {
            im.body.contains(needle) || im.subject.as_deref().is_some_and(|s| s.contains(needle))
        })
    });
    Instant::now()
}

/// Waits until `done` holds; on time-out fails with the host's log and every conversation.
fn until(host: &Host, sim: &SimHandle, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < LONG,
            "timed out waiting for {what}\nconversations: {:#?}\nhost log:\n{}",
            [ALICE, BOB, CAROL].map(|u| sim.conversations_of(u)),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unanswered_page_escalates_to_level_2_whose_ack_through_ucma_stops_it() {
    let UcmaBed {
        host,
        sim,
        port: control,
        rt: _rt,
        dir: _dir,
    } = UcmaBed::start(
        SECRET,
        &[ALICE, BOB, CAROL],
        &[(ALICE, 0), (BOB, LEVEL2_SECS), (CAROL, LEVEL3_SECS)],
        None,
    );

    let v = emit(
        control,
        "count=1&prefix=repl&subject=Replication%20lag%20on%20db02&severity=critical",
    );
    assert_eq!(v["accepted"], 1, "{v}");
    let opened = Instant::now();

    // Level 1: Alice gets the page, naming the incident and how to answer.
    received(&sim, ALICE, "[#1] Replication lag on db02");
    let page = sim.received(ALICE).into_iter().last().expect("a page");
    let text = format!("{} {}", page.subject.unwrap_or_default(), page.body);
    assert!(
        text.contains("ack 1"),
        "the page says how to answer: {text}"
    );
    assert!(sim.received(BOB).is_empty(), "level 2 paged at once");

    // Nobody answers: level 2 (Bob) after its wait, not before.
    let bob_paged = received(&sim, BOB, "[#1]");
    let inc = host.api("/api/v1/incidents/1");
    let pages = inc["pages"].as_array().cloned().unwrap_or_default();
    assert_eq!(pages.len(), 2, "{inc:#}");
    let waited = pages[1]["at_ms"].as_i64().unwrap_or(0) - inc["opened_ms"].as_i64().unwrap_or(0);
    assert!(
        waited >= (LEVEL2_SECS * 1000) as i64 - 50,
        "level 2 paged {waited} ms after the incident opened: {inc:#}"
    );
    assert_eq!(
        (pages[0]["level"].as_u64(), pages[0]["users"][0].as_str()),
        (Some(1), Some(ALICE))
    );
    assert_eq!(
        (pages[1]["level"].as_u64(), pages[1]["users"][0].as_str()),
        (Some(2), Some(BOB))
    );
    eprintln!(
        "level 2's IM {} ms after the alert was accepted (its wait: {LEVEL2_SECS} s)",
        bob_paged.duration_since(opened).as_millis()
    );

    // Bob answers `ack` in the page's conversation (no number needed there).
    let bob_conversation = sim
        .conversations_of(BOB)
        .into_iter()
        .rev()
        .find(|c| c.open)
        .expect("the page left Bob a conversation");
    let said = Instant::now();
    sim.user_says(BOB, "ack", Some(&bob_conversation.id), false)
        .expect("Bob's conversation is open");

    // The bot confirms in Bob's conversation and tells Alice in hers.
    until(&host, &sim, "the confirmation to Bob", || {
        sim.conversations_of(BOB)
            .iter()
            .find(|c| c.id == bob_conversation.id)
            .is_some_and(|c| {
                c.lines
                    .iter()
                    .any(|l| l.from == "bridge" && l.text.starts_with("#1 acknowledged by"))
            })
    });
    eprintln!(
        "Bob's `ack` confirmed {} ms after he said it",
        said.elapsed().as_millis()
    );
    until(&host, &sim, "Alice told", || {
        bot_lines(&sim, ALICE)
            .iter()
            .any(|l| l.starts_with("#1 acknowledged by"))
    });
    let inc = host.api("/api/v1/incidents/1");
    assert_eq!(inc["state"], "acknowledged", "{inc:#}");
    let by = inc["acked"]["by"].as_str().unwrap_or_default();
    assert!(by.contains("bob"), "acked by Bob: {inc:#}");
    assert!(
        bot_lines(&sim, BOB)
            .iter()
            .chain(bot_lines(&sim, ALICE).iter())
            .all(|l| !l.contains("resolved")),
        "nothing resolved it"
    );

    // Past level 3's due time: Carol was never paged, and the incident stays at level 2.
    let due = opened + Duration::from_secs(LEVEL3_SECS) + Duration::from_millis(1500);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    assert!(
        sim.received(CAROL).is_empty(),
        "level 3 paged after the ack: {:?}",
        sim.received(CAROL)
    );
    let inc = host.api("/api/v1/incidents/1");
    assert_eq!(
        (
            inc["state"].as_str(),
            inc["level"].as_u64(),
            inc["next_due_ms"].as_i64()
        ),
        (Some("acknowledged"), Some(2), None),
        "{inc:#}"
    );
    assert_eq!(
        sim.received(ALICE).len() + sim.received(BOB).len(),
        2,
        "one page each, nobody paged twice"
    );
    drop(host);
}
