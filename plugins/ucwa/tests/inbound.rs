//! The sink listens: replies in a page's conversation and conversations people start with the
//! bot reach the host (`inbound.message/1`) through real sockets from the UCWA simulator; the
//! host's answers (`conversation.send/1`) land in the same conversation, or in a new one when it
//! is gone; hostile inbound (huge, HTML, unknown sender, flood) stays bounded.

mod common;

use std::time::{Duration, Instant};

use alertbridge_plugin_api::{
    DeliveryStatus, ErrorKind, PluginError,
    kit::{Args, Sink},
    testing::{Answer, TestHost},
};
use alertbridge_testbed::ucwa_sim::{Reply, SimHandle};
use alertbridge_ucwa::inbound::INBOUND_MESSAGE;
use common::{Running, message, simulator, start_sink_with_host};

const ALICE: &str = "sip:alice@contoso.com";
const DAVE: &str = "sip:dave@contoso.com";

fn listening_host() -> TestHost {
    let host = TestHost::new("lync");
    host.accept_calls(INBOUND_MESSAGE);
    host
}

/// The `inbound.message/1` calls so far.
fn inbound(host: &TestHost) -> Vec<Args> {
    host.calls()
        .into_iter()
        .filter(|(name, _)| name == INBOUND_MESSAGE)
        .map(|(_, args)| args)
        .collect()
}

/// Waits (up to 15 s) until at least `n` inbound calls were made, and returns them.
async fn wait_inbound(host: &TestHost, n: usize) -> Vec<Args> {
    let start = Instant::now();
    loop {
        let calls = inbound(host);
        if calls.len() >= n {
            return calls;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "only {} of {n} inbound calls: {calls:?}",
            calls.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answer(
    running: &Running,
    conversation: &str,
    user: &str,
    text: &str,
) -> Result<String, PluginError> {
    running
        .sink
        .send_in_conversation(conversation, user, text)
        .await
}

/// Delivers a page to Alice and returns the conversation she sees it in.
async fn page_alice(sim: &SimHandle, running: &Running) -> String {
    let results = running
        .sink
        .deliver(message("#42 Disk full", "db01 /var 98%", &[ALICE]))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    let conversation = sim.received("alice@contoso.com")[0].conversation.clone();
    assert_eq!(
        results[0].conversation(),
        Some(conversation.as_str()),
        "the outcome names the page's conversation"
    );
    conversation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_the_pages_conversation_reaches_the_host_and_the_answer_lands_there() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let running = start_sink_with_host(&sim.discover_url(), "", &host);
    let page = page_alice(&sim, &running).await;
    assert_eq!(sim.stats().conversations, 1, "kept open for the reply");

    let said = Instant::now();
    let replied = sim.say(ALICE, "ACK 42").unwrap();
    assert!(!replied.invited, "answered in the page's conversation");
    assert_eq!(replied.conversation, page);
    let calls = wait_inbound(&host, 1).await;
    let reached = said.elapsed();
    let call = &calls[0];
    assert_eq!(call["user"], ALICE);
    assert_eq!(call["text"], "ACK 42");
    assert_eq!(call["conversation"], page);
    assert_eq!(call["name"], "Alice");
    assert!(call["id"].starts_with(&page), "{call:?}");

    let answering = Instant::now();
    let used = answer(&running, &page, ALICE, "#42 acknowledged by Alice")
        .await
        .unwrap();
    assert_eq!(used, page, "the answer went into the same conversation");
    eprintln!(
        "measured: reply -> host call {} ms (20 ms polling), answer -> IM recorded {} ms",
        reached.as_millis(),
        answering.elapsed().as_millis()
    );
    let received = sim.received("alice@contoso.com");
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1].text, "#42 acknowledged by Alice");
    assert_eq!(received[1].conversation, page);
    // Said once: nothing more reaches the host.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(inbound(&host).len(), 1);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_someone_starts_is_accepted_read_and_answered_in() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let running = start_sink_with_host(&sim.discover_url(), "", &host);
    // Once the bot is signed in and available, Dave starts a conversation.
    let start = Instant::now();
    let replied = loop {
        match sim.say(DAVE, "status") {
            Ok(r) => break r,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(replied.invited, "Dave had no conversation: an invitation");
    let calls = wait_inbound(&host, 1).await;
    assert_eq!(calls[0]["user"], DAVE);
    assert_eq!(calls[0]["text"], "status");
    assert_eq!(calls[0]["conversation"], replied.conversation);

    let used = answer(&running, &replied.conversation, DAVE, "no open incidents")
        .await
        .unwrap();
    assert_eq!(used, replied.conversation);
    let received = sim.received("dave@contoso.com");
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].conversation, replied.conversation);
    // A second message in the accepted conversation comes the same way.
    let again = sim.say(DAVE, "ack 7").unwrap();
    assert_eq!(
        (again.invited, again.conversation.as_str()),
        (false, replied.conversation.as_str())
    );
    let calls = wait_inbound(&host, 2).await;
    assert_eq!(calls[1]["text"], "ack 7");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_conversation_falls_back_to_a_new_one() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let running = start_sink_with_host(&sim.discover_url(), "", &host);
    let page = page_alice(&sim, &running).await;

    assert!(sim.hang_up(&page), "Alice closes the window");
    // The sink hears the conversation end; an answer then starts a new one.
    let start = Instant::now();
    let used = loop {
        let used = answer(&running, &page, ALICE, "#42 resolved")
            .await
            .unwrap();
        if used != page || start.elapsed() > Duration::from_secs(10) {
            break used;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(used, page, "a new conversation");
    let last = sim.received("alice@contoso.com").pop().unwrap();
    assert_eq!(
        (last.text.as_str(), last.conversation.as_str()),
        ("#42 resolved", used.as_str())
    );

    // A reference the sink never knew (e.g. from before a restart) also gets a new one.
    let fresh = answer(
        &running,
        "/ucwa/oauth/v1/applications/1/communication/conversations/x",
        DAVE,
        "hello",
    )
    .await
    .unwrap();
    assert!(!fresh.is_empty());
    assert_eq!(sim.received("dave@contoso.com")[0].conversation, fresh);
    // And a reply in the new conversation is read like any other.
    sim.say(DAVE, "ack").unwrap();
    let calls = wait_inbound(&host, 1).await;
    assert_eq!(calls[0]["conversation"], fresh);

    // Bad arguments are refused, not sent.
    let e = answer(&running, &fresh, "not a user", "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::PERMANENT);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_record_yet_gets_the_message_again_in_order() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let busy = PluginError::new(ErrorKind::TRANSIENT, "queue busy");
    host.script_calls([Answer::Refuse(busy.clone()), Answer::Refuse(busy)]);
    let running = start_sink_with_host(&sim.discover_url(), "", &host);
    page_alice(&sim, &running).await;
    sim.say(ALICE, "ack").unwrap();
    sim.say(ALICE, "status").unwrap();
    let calls = wait_inbound(&host, 4).await;
    let texts: Vec<&str> = calls.iter().map(|c| c["text"].as_str()).collect();
    assert_eq!(
        texts,
        ["ack", "ack", "ack", "status"],
        "refused twice, then recorded; order kept"
    );
    assert_eq!(
        calls[0]["id"], calls[2]["id"],
        "the same message id each time"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        inbound(&host).len(),
        4,
        "nothing offered after it was recorded"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_incidents_gets_each_message_once_and_it_is_dropped() {
    let sim = simulator(|_| {}).await;
    let host = TestHost::new("lync");
    let running = start_sink_with_host(&sim.discover_url(), "", &host);
    page_alice(&sim, &running).await;
    sim.say(ALICE, "ack").unwrap();
    sim.say(ALICE, "ack again").unwrap();
    let calls = wait_inbound(&host, 2).await;
    assert_eq!(calls.len(), 2, "each offered once, never again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbound(&host).len(), 2, "UNSUPPORTED is not retried");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inbound_is_bounded_huge_html_unknown_senders_and_floods() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let running = start_sink_with_host(&sim.discover_url(), "max_pending_inbound = 8\n", &host);
    page_alice(&sim, &running).await;

    // Huge: 1 MiB of text reaches the host as at most 4 KiB.
    sim.say(ALICE, &"ü".repeat(512 * 1024)).unwrap();
    // HTML: markup and scripts go, text stays.
    sim.reply(
        ALICE,
        &Reply {
            text: "<div><b>ack</b> 42<script>alert(1)</script></div>".into(),
            html: true,
            ..Reply::default()
        },
    )
    .unwrap();
    // A sender that is no SIP user never reaches the host.
    sim.say("<script>alert(1)</script>", "resolve 42").unwrap();
    let calls = wait_inbound(&host, 2).await;
    assert!(
        calls[0]["text"].len() <= 4096 && calls[0]["text"].len() > 4000,
        "{}",
        calls[0]["text"].len()
    );
    assert_eq!(calls[1]["text"], "ack 42");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inbound(&host).len(), 2, "the unknown sender was dropped");

    // Flood while the host cannot record: what waits is bounded, drops are logged.
    let busy = PluginError::new(ErrorKind::TRANSIENT, "queue busy");
    host.script_calls((0..5).map(|_| Answer::Refuse(busy.clone())));
    for i in 0..300 {
        sim.say(ALICE, &format!("flood {i}")).unwrap();
    }
    // The refusals are used up after ~8 s of back-off at most; then what was kept arrives.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let flood: Vec<Args> = inbound(&host).into_iter().skip(2).collect();
    let distinct: std::collections::BTreeSet<&str> =
        flood.iter().map(|c| c["id"].as_str()).collect();
    assert!(
        distinct.len() <= 8 + 8 + 1,
        "at most the pending list and the hand-over channel (8 each) plus one in flight: {}",
        distinct.len()
    );
    assert!(!distinct.is_empty());
    assert!(flood.iter().all(|c| c["text"].starts_with("flood ")));
    // The sink still listens after the flood.
    sim.say(ALICE, "ack").unwrap();
    let start = Instant::now();
    while !inbound(&host).iter().any(|c| c["text"] == "ack") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not listening any more"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_conversations_expire_and_are_stopped() {
    let sim = simulator(|_| {}).await;
    let host = listening_host();
    let running = start_sink_with_host(&sim.discover_url(), "conversation_keep_secs = 1\n", &host);
    page_alice(&sim, &running).await;
    assert_eq!(sim.stats().conversations, 1);
    let start = Instant::now();
    while sim.stats().conversations > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(900));
    running.stop().await;
}
