//! Replies and answers through real sockets (issue 14 §4 ucma): a user's reply in a page's
//! conversation reaches the host's `inbound.message/1` and is acknowledged to the bridge only
//! after the host took it, also across a sink restart or a lost ack; `conversation.send/1`
//! answers land in the conversation, or in a new one when it is gone; a bridge without inbound
//! support leaves delivery working and is asked once, not in a loop.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    DeliveryStatus, ErrorKind,
    kit::{Args, Sink as _},
    testing::{Answer, TestHost},
};
use alertbridge_testbed::ucma_sim::{
    Availability, Fault, FaultAction, FaultTarget, SimConfig, SimHandle,
};
use alertbridge_ucma::inbound::INBOUND_MESSAGE;

use super::{Rig, message};

const ALICE: &str = "sip:alice@contoso.com";
/// Short long polls, so a stopped sink's last poll ends soon.
const FAST: &str = "inbound_wait_ms = 1000";

fn alice() -> SimConfig {
    SimConfig::new(super::SECRET).user(ALICE, Availability::Online)
}

fn host() -> TestHost {
    let host = TestHost::new("ocs");
    host.accept_calls(INBOUND_MESSAGE);
    host
}

/// Waits up to 10 s for `done`, polling every 10 ms.
async fn until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn inbound_calls(host: &TestHost) -> Vec<Args> {
    host.calls()
        .into_iter()
        .filter(|(name, _)| name == INBOUND_MESSAGE)
        .map(|(_, args)| args)
        .collect()
}

/// Delivers a page to Alice and returns the conversation the bridge keeps open for it.
async fn page(rig: &Rig) -> String {
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    let conversations = rig.sim.conversations_of(ALICE);
    assert_eq!(conversations.len(), 1, "{conversations:?}");
    assert_eq!(
        results[0].conversation(),
        Some(conversations[0].id.as_str()),
        "the page's conversation goes to the host with the outcome"
    );
    conversations[0].id.clone()
}

fn args(pairs: &[(&str, &str)]) -> Args {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn lines(sim: &SimHandle, conversation: &str) -> Vec<(String, String)> {
    sim.conversations_of(ALICE)
        .into_iter()
        .find(|c| c.id == conversation)
        .map(|c| c.lines.into_iter().map(|l| (l.from, l.text)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_in_the_page_conversation_reaches_the_host_then_is_acked() {
    let host = host();
    let rig = Rig::start_with(alice(), FAST, &host).await;
    let conversation = page(&rig).await;
    // Let the sink's long poll be waiting at the bridge, as in production.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let said = Instant::now();
    let sent = rig
        .sim
        .user_says(
            "sip:Alice@Contoso.com",
            "  ACK 7 \n",
            Some(&conversation),
            false,
        )
        .expect("conversation open");
    until("the host got the reply", || {
        !inbound_calls(&host).is_empty()
    })
    .await;
    let latency = said.elapsed();
    until("the bridge has it acknowledged", || {
        rig.sim.pending_inbound().is_empty()
    })
    .await;
    let calls = inbound_calls(&host);
    assert_eq!(
        calls,
        vec![args(&[
            ("user", ALICE),
            ("text", "ACK 7"),
            ("conversation", &conversation),
            ("id", &sent.id),
        ])],
        "lower-cased sender, trimmed text, the page's conversation, the bridge's id"
    );
    assert_eq!(rig.sim.counters().inbound_acked, 1);
    eprintln!("reply -> host call: {} ms", latency.as_millis());
    assert!(
        latency < Duration::from_secs(1),
        "long poll, not a timer: {latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stopped_before_its_ack_offers_the_reply_again_under_the_same_id() {
    let host = host();
    // The host takes 1.5 s to record the first offer; the sink is stopped meanwhile.
    host.script_calls([Answer::Delay(Duration::from_millis(1500))]);
    let mut rig = Rig::start_with(alice(), FAST, &host).await;
    let conversation = page(&rig).await;
    let sent = rig
        .sim
        .user_says(ALICE, "ack", Some(&conversation), false)
        .expect("open");
    until("the first offer", || inbound_calls(&host).len() == 1).await;
    rig.restart(FAST, &host);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not acknowledged by the stopped instance: still at the bridge, then offered again.
    until("the second offer", || inbound_calls(&host).len() == 2).await;
    until("acknowledged", || rig.sim.pending_inbound().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = inbound_calls(&host);
    assert_eq!(calls.len(), 2, "offered twice, no more: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c["id"] == sent.id && c["conversation"] == conversation),
        "both offers carry the same (conversation, id), which the host dedups by: {calls:?}"
    );
    assert_eq!(rig.sim.counters().inbound_acked, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ack_offers_the_reply_again_and_a_refusing_host_keeps_it_at_the_bridge() {
    let host = host();
    // First offer refused (queue full), second recorded but its ack is refused by the bridge.
    host.script_calls([Answer::Refuse(alertbridge_plugin_api::PluginError::new(
        ErrorKind::TRANSIENT,
        "queue full",
    ))]);
    let rig = Rig::start_with(alice(), FAST, &host).await;
    let conversation = page(&rig).await;
    rig.sim
        .user_says(ALICE, "resolve", Some(&conversation), false)
        .expect("open");
    until("the refused offer", || inbound_calls(&host).len() == 1).await;
    assert_eq!(
        rig.sim.pending_inbound().len(),
        1,
        "kept until the host takes it"
    );
    rig.sim.inject(Fault {
        target: FaultTarget::Inbound,
        action: FaultAction::Status {
            status: 503,
            retry_after_s: None,
        },
        count: 1,
        recipient: None,
        code: None,
    });
    until("acknowledged at last", || {
        rig.sim.pending_inbound().is_empty()
    })
    .await;
    let calls = inbound_calls(&host);
    assert!(
        (2..=3).contains(&calls.len()) && calls.iter().all(|c| c["text"] == "resolve"),
        "refused, then recorded (again if the 503 hit the ack): {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_land_in_the_conversation_and_a_gone_one_is_replaced() {
    let host = host();
    let rig = Rig::start_with(alice(), FAST, &host).await;
    let conversation = page(&rig).await;
    let got = rig
        .sink
        .send_in_conversation(&conversation, ALICE, "#7 acknowledged by Alice")
        .await
        .expect("said");
    assert_eq!(got, conversation);
    // The same answer under the same key (a retry after a lost response): said once.
    let text = "#7 status: acknowledged";
    for _ in 0..2 {
        let got = rig.sink.answer(&conversation, ALICE, text, "n1").await;
        assert_eq!(got.expect("said or replayed"), conversation);
    }
    let said: Vec<_> = lines(&rig.sim, &conversation)
        .into_iter()
        .filter(|(from, _)| from == "bridge")
        .map(|(_, text)| text)
        .collect();
    assert_eq!(said.len(), 3, "the page and two answers: {said:?}");
    assert_eq!(said[1..], ["#7 acknowledged by Alice", text]);

    // Alice closed the window: the next answer starts a new conversation with her.
    assert!(rig.sim.end_conversation(&conversation));
    let before = rig.sim.received(ALICE).len();
    let new = &rig
        .sink
        .send_in_conversation(&conversation, ALICE, "#7 resolved by Bob")
        .await
        .expect("said in a new conversation");
    assert!(!new.is_empty() && *new != conversation, "{new:?}");
    assert_eq!(
        lines(&rig.sim, new),
        vec![("bridge".to_owned(), "#7 resolved by Bob".to_owned())]
    );
    let inbox = rig.sim.received(ALICE);
    assert_eq!(inbox.len(), before + 1);
    assert_eq!(inbox[before].body, "#7 resolved by Bob");
    let c = rig.sim.counters();
    assert_eq!(
        (c.conversation_sends, c.conversations_gone),
        (2, 1),
        "{c:?}"
    );

    // A reply in the new conversation reaches the host with it.
    rig.sim
        .user_says(ALICE, "status", None, false)
        .expect("latest open");
    until("the reply", || !inbound_calls(&host).is_empty()).await;
    assert_eq!(inbound_calls(&host)[0]["conversation"], *new);

    // An unknown capability stays unsupported.
    let e = rig.sink.call("replies/9", Args::new()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::UNSUPPORTED);
}

/// Log lines the sink writes, captured by a minimal subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Captured {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().expect("log").push(text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test(flavor = "current_thread")]
async fn a_bridge_without_inbound_still_delivers_and_is_asked_once() {
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let host = host();
    let rig = Rig::start_with(
        SimConfig {
            inbound: false,
            ..alice()
        },
        FAST,
        &host,
    )
    .await;
    let results = rig
        .sink
        .deliver(message(1, &[ALICE]))
        .await
        .expect("deliver");
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.sim.counters().inbound_polls, 1, "asked once, no loop");
    let said: Vec<String> = logs
        .0
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains("does not relay inbound messages"))
        .cloned()
        .collect();
    assert_eq!(said.len(), 1, "logged once: {said:?}");
    assert!(said[0].contains("not_supported"), "{said:?}");
    // An answer still reaches the user, in a new conversation (the bridge knows none).
    let got = rig
        .sink
        .send_in_conversation("c_x", ALICE, "#1 ok")
        .await
        .expect("answered by a plain send");
    assert_eq!(got, "");
    assert_eq!(
        rig.sim.received(ALICE).last().map(|m| m.body.as_str()),
        Some("#1 ok")
    );
    assert!(inbound_calls(&host).is_empty());
}
