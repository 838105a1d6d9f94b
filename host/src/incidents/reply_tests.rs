//! Reply tests against a real engine (memory store): ack in the page's conversation tells the
//! others and stops the levels, `ack N` from a new conversation, refusal for someone not paged,
//! a responder may act, several open incidents ask for the number, already resolved, unknown
//! number, dedup by (conversation, id); the news goes to each person through the sink that
//! reached them (a reply and a resolve from the source), kept across a restart; on a shared
//! store, a reply reads the open incidents only.

use std::sync::Arc;

use alertbridge_plugin_api::Alert;

use super::*;
use crate::incidents::{
    BoxFuture, Clock, EscalationPolicy, IncidentState, Level, MemoryIncidents, PageRequest, Pager,
    PagerError,
};

struct AllReachable;

impl Pager for AllReachable {
    fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>> {
        let n = req.users.len();
        Box::pin(async move { Ok(n) })
    }
}

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const DAVE: &str = "sip:dave@contoso.com";
const ERIN: &str = "sip:erin@contoso.com";

fn level(user: &str, after_secs: u64) -> Level {
    Level {
        groups: vec![],
        users: vec![user.into()],
        after_secs,
    }
}

fn ops() -> EscalationPolicy {
    EscalationPolicy {
        name: "ops".into(),
        repeat: 0,
        ack_timeout_secs: 0,
        levels: vec![
            level(ALICE, 0),
            level(BOB, 300),
            level("sip:carol@contoso.com", 900),
        ],
    }
}

fn engine() -> Engine {
    engine_on(Arc::new(MemoryIncidents::default()))
}

fn engine_on(store: Arc<dyn crate::incidents::IncidentStore>) -> Engine {
    Engine::open(
        store,
        Arc::new(AllReachable),
        vec![ops()],
        Clock::starting_at(1_800_000_000_000),
    )
    .unwrap()
}

/// Opens an incident paged to alice then bob, each in their own conversation.
async fn paged_to_alice_and_bob(e: &Engine, n: u64) -> IncidentId {
    let mut a = Alert::new(format!("disk full {n}"));
    a.dedup_key = Some(format!("k{n}"));
    let id = e
        .open_or_join(n, "am", &a, "r", "ops", false)
        .await
        .unwrap()
        .id;
    e.escalate_now(id, "timer").await.unwrap();
    e.set_conversation(id, ALICE, &format!("conv-alice-{n}"))
        .await
        .unwrap();
    e.set_conversation(id, BOB, &format!("conv-bob-{n}"))
        .await
        .unwrap();
    id
}

fn msg(user: &str, conv: &str, text: &str, name: Option<&str>) -> InboundReply {
    InboundReply {
        user: user.into(),
        text: text.into(),
        conversation: conv.into(),
        name: name.map(str::to_owned),
        id: None,
    }
}

#[tokio::test]
async fn ack_in_the_pages_conversation_tells_both_and_stops_the_levels() {
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    let r = Replies::new(e.clone(), []);
    let h = r
        .handle(&msg(BOB, "conv-bob-1", " Ack! ", Some("Bob Example")))
        .await
        .unwrap();
    let want = format!("{id} acknowledged by Bob Example — escalation stopped");
    assert_eq!(h.answer.text, want);
    assert_eq!(h.answer.conversation.as_deref(), Some("conv-bob-1"));
    assert_eq!(h.tell.len(), 1);
    assert_eq!(h.tell[0].user, ALICE);
    assert_eq!(h.tell[0].conversation.as_deref(), Some("conv-alice-1"));
    assert_eq!(h.tell[0].text, want);
    let inc = e.get(id).await.unwrap();
    assert_eq!(inc.state, IncidentState::Acknowledged);
    assert!(inc.next.is_none(), "no level 3 after the ack");
    // again: no news, only the sender hears
    let h = r.handle(&msg(BOB, "conv-bob-1", "a", None)).await.unwrap();
    assert_eq!(
        h.answer.text,
        format!("{id} was already acknowledged by Bob Example")
    );
    assert!(h.tell.is_empty());
}

#[tokio::test]
async fn ack_with_a_number_in_a_new_conversation() {
    let e = engine();
    let _one = paged_to_alice_and_bob(&e, 1).await;
    let two = paged_to_alice_and_bob(&e, 2).await;
    let r = Replies::new(e.clone(), []);
    // bare ack with two open: ask which
    let h = r.handle(&msg(ALICE, "fresh", "ack", None)).await.unwrap();
    assert!(
        h.answer.text.contains("several open incidents"),
        "{}",
        h.answer.text
    );
    assert_eq!(e.get(two).await.unwrap().state, IncidentState::Open);
    let h = r
        .handle(&msg(ALICE, "fresh", &format!("ack #{}", two.0), None))
        .await
        .unwrap();
    assert_eq!(h.incident, Some(two));
    assert_eq!(e.get(two).await.unwrap().state, IncidentState::Acknowledged);
    assert_eq!(
        e.get(two)
            .await
            .unwrap()
            .conversations
            .get(ALICE)
            .map(String::as_str),
        Some("fresh"),
        "the new conversation now belongs to the incident"
    );
    // a bare `resolve` in that conversation now means that incident
    let h = r.handle(&msg(ALICE, "fresh", "r", None)).await.unwrap();
    assert_eq!(h.answer.text, format!("{two} resolved by {ALICE}"));
    let h = r
        .handle(&msg(ALICE, "fresh", "resolve 2", None))
        .await
        .unwrap();
    assert_eq!(h.answer.text, format!("{two} is already resolved"));
    let h = r
        .handle(&msg(ALICE, "fresh", "ack 43", None))
        .await
        .unwrap();
    assert_eq!(h.answer.text, "no open incident 43");
}

/// A shared store (several hosts): the incident of a reply's conversation is found among the
/// open ones; every incident is never read.
#[tokio::test]
async fn a_reply_on_a_shared_store_reads_the_open_incidents_only() {
    let asked = crate::incidents::tests::Asked::default();
    let e = engine_on(Arc::new(asked.clone()));
    let one = paged_to_alice_and_bob(&e, 1).await;
    let two = paged_to_alice_and_bob(&e, 2).await;
    e.resolve(one, "alice").await.unwrap();
    let r = Replies::new(e.clone(), []);
    let h = r
        .handle(&msg(BOB, "conv-bob-2", "ack", None))
        .await
        .unwrap();
    assert_eq!(h.incident, Some(two), "{}", h.answer.text);
    assert_eq!(e.get(two).await.unwrap().state, IncidentState::Acknowledged);
    assert!(asked.asked(&crate::incidents::store::Query::Open));
    assert!(!asked.asked_for_all());
}

#[tokio::test]
async fn someone_not_paged_is_refused_a_responder_is_not() {
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    let r = Replies::new(e.clone(), [ERIN.to_owned()]);
    let h = r.handle(&msg(DAVE, "d", "resolve 1", None)).await.unwrap();
    assert!(h.answer.text.contains("not paged"), "{}", h.answer.text);
    assert!(h.tell.is_empty());
    assert_eq!(e.get(id).await.unwrap().state, IncidentState::Open);
    let h = r.handle(&msg(ERIN, "e", "resolve 1", None)).await.unwrap();
    assert_eq!(h.answer.text, format!("{id} resolved by {ERIN}"));
    assert_eq!(h.tell.len(), 2, "alice and bob told");
    assert!(e.get(id).await.unwrap().is_resolved());
}

#[tokio::test]
async fn the_same_message_id_is_applied_once() {
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    let r = Replies::new(e.clone(), []);
    let mut m = msg(BOB, "conv-bob-1", "esc", None);
    m.id = Some("m1".into());
    let mut events = e.subscribe();
    let h = r.handle(&m).await.unwrap();
    assert!(!h.duplicate);
    assert_eq!(e.get(id).await.unwrap().level(), 3);
    let h = r.handle(&m).await.unwrap();
    assert!(h.duplicate);
    let mut escalations = 0;
    while let Ok(ev) = events.try_recv() {
        if matches!(ev, crate::incidents::IncidentEvent::Escalated { .. }) {
            escalations += 1;
        }
    }
    assert_eq!(escalations, 1);
    // another id in the same conversation is a new message
    m.id = Some("m2".into());
    let h = r.handle(&m).await.unwrap();
    assert!(!h.duplicate);
    assert!(
        h.answer.text.contains("every level was paged"),
        "{}",
        h.answer.text
    );
}

#[tokio::test]
async fn help_status_and_noise() {
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    let r = Replies::new(e.clone(), []);
    let h = r.handle(&msg(BOB, "c", "hello?", None)).await.unwrap();
    assert_eq!(h.answer.text, USAGE);
    let h = r.handle(&msg(BOB, "c", "status", None)).await.unwrap();
    assert!(
        h.answer
            .text
            .starts_with(&format!("{id} disk full 1 — open")),
        "{}",
        h.answer.text
    );
    let h = r.handle(&msg(DAVE, "c", "status", None)).await.unwrap();
    assert_eq!(h.answer.text, "you have no open incident");
    let h = r.handle(&msg(DAVE, "c", "ack", None)).await.unwrap();
    assert!(h.answer.text.starts_with("you have no open incident"));
}

#[tokio::test]
async fn silence_2h_silences_alerts_like_the_incidents_and_tells_the_others() {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use crate::{
        model::StoredAlert,
        queue::{Queue, RedbQueue},
        silences::{MemorySilences, Silences, like::QueueSilenceLike},
    };

    let dir = tempfile::tempdir().unwrap();
    let queue: Arc<dyn Queue> = Arc::new(
        RedbQueue::open(dir.path(), Duration::from_secs(60), 100, Box::new(|_| {})).unwrap(),
    );
    let mut a = Alert::new("Disk full on db01");
    a.labels.insert("host".into(), "db01".into());
    a.labels.insert("alertname".into(), "DiskFull".into());
    let taken = queue.enqueue("am", a.clone()).await.unwrap();
    let e = engine();
    let id = e
        .open_or_join(taken.id, "am", &a, "r", "ops", false)
        .await
        .unwrap()
        .id;
    e.escalate_now(id, "timer").await.unwrap();
    e.set_conversation(id, ALICE, "conv-alice").await.unwrap();
    e.set_conversation(id, BOB, "conv-bob").await.unwrap();
    let silences = Arc::new(Silences::open(Arc::new(MemorySilences::default())).unwrap());
    let created = Arc::new(AtomicUsize::new(0));
    let r = Replies::new(e.clone(), []);
    let counted = Arc::clone(&created);
    r.set_silencer(Arc::new(QueueSilenceLike {
        silences: Arc::clone(&silences),
        queue,
        created: Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        }),
    }));

    // Someone not paged may not; a bad duration is usage.
    let h = r
        .handle(&msg(DAVE, "c", &format!("silence {} 2h", id.0), None))
        .await
        .unwrap();
    assert!(
        h.answer.text.contains("you were not paged"),
        "{}",
        h.answer.text
    );
    let h = r
        .handle(&msg(BOB, "conv-bob", "silence 2 hours", None))
        .await
        .unwrap();
    assert_eq!(h.answer.text, USAGE);
    assert!(silences.list().is_empty());

    // Bob, paged, in his conversation: the silence is made from the alert's labels.
    let h = r
        .handle(&msg(BOB, "conv-bob", "Silence 2h", Some("Bob Jones")))
        .await
        .unwrap();
    let made = silences.list();
    assert_eq!(made.len(), 1);
    let s = &made[0];
    assert_eq!(s.matchers.labels, a.labels);
    assert_eq!(s.ends_ms - s.starts_ms, 2 * 3600 * 1000);
    assert_eq!(s.author, "Bob Jones");
    assert!(s.comment.contains("Disk full on db01"), "{}", s.comment);
    assert_eq!(
        created.load(Ordering::Relaxed),
        1,
        "queued alerts looked at again"
    );
    assert!(
        h.answer
            .text
            .starts_with(&format!("Bob Jones silenced alerts like {id} until "))
            && h.answer
                .text
                .contains("(silence 1: alertname = DiskFull, host = db01)")
            && h.answer.text.contains(&format!("{id} itself stays open")),
        "{}",
        h.answer.text
    );
    assert_eq!(h.answer.conversation.as_deref(), Some("conv-bob"));
    assert_eq!(h.tell.len(), 1);
    assert_eq!(
        (h.tell[0].user.as_str(), h.tell[0].conversation.as_deref()),
        (ALICE, Some("conv-alice"))
    );
    // The next alert like it is silenced; the incident itself is unchanged.
    let next = StoredAlert::new(9, "am", a, 0);
    assert_eq!(
        silences
            .silencing(&next, crate::model::now_ms())
            .map(|x| x.id),
        Some(1)
    );
    assert_eq!(e.get(id).await.unwrap().state, IncidentState::Open);
}

/// One message said: (sink instance, user, conversation, text).
type Said = (String, String, Option<String>, String);

/// A [`Speaker`] that records every message said.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<Said>>);

impl crate::incidents::reply_send::Speaker for Recorder {
    fn say(
        &self,
        instance: &str,
        say: &Say,
    ) -> BoxFuture<'static, Result<String, alertbridge_plugin_api::PluginError>> {
        self.0.lock().unwrap().push((
            instance.to_owned(),
            say.user.clone(),
            say.conversation.clone(),
            say.text.clone(),
        ));
        let used = say.conversation.clone().unwrap_or_else(|| "new".into());
        Box::pin(async move { Ok(used) })
    }
}

impl Recorder {
    /// Waits (briefly) for `n` messages and answers them.
    async fn wait_for(&self, n: usize) -> Vec<Said> {
        for _ in 0..200 {
            if self.0.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // a little longer: nothing more may come
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.0.lock().unwrap().clone()
    }
}

/// Alice reached through sink `ocs`, Bob through sink `lync`, on the paged incident.
async fn reached_on_two_sinks(e: &Engine, id: IncidentId) {
    e.set_reached(id, ALICE, "ocs", Some("conv-alice"))
        .await
        .unwrap();
    e.set_reached(id, BOB, "lync", Some("conv-bob"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_reply_tells_each_other_person_through_the_sink_that_reached_them() {
    use crate::incidents::reply_send::ReplyService;
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    reached_on_two_sinks(&e, id).await;
    let rec = Arc::new(Recorder::default());
    let svc = ReplyService::new(Arc::new(Replies::new(e.clone(), [])), rec.clone());
    svc.take("lync", msg(BOB, "conv-bob", "ack", Some("Bob")))
        .await
        .unwrap();
    let sent = rec.wait_for(2).await;
    let text = format!("{id} acknowledged by Bob — escalation stopped");
    assert_eq!(
        sent,
        vec![
            (
                "lync".into(),
                BOB.into(),
                Some("conv-bob".into()),
                text.clone()
            ),
            ("ocs".into(), ALICE.into(), Some("conv-alice".into()), text),
        ],
        "Bob answered on his sink, Alice told once on hers"
    );
}

#[tokio::test]
async fn news_from_the_source_goes_to_each_person_through_their_sink() {
    use crate::incidents::reply_send::{ReplyService, tell_changes_via};
    let e = engine();
    let id = paged_to_alice_and_bob(&e, 1).await;
    reached_on_two_sinks(&e, id).await;
    // Carol is on the incident's pages but no sink is recorded for her (an incident stored
    // before sinks were kept): the route's sink speaks to her.
    let carol = "sip:carol@contoso.com";
    e.escalate_now(id, "timer").await.unwrap();
    let rec = Arc::new(Recorder::default());
    let svc = Arc::new(ReplyService::new(
        Arc::new(Replies::new(e.clone(), [])),
        rec.clone(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(tell_changes_via(
        svc,
        Arc::new(|route: &str| (route == "r").then(|| "route-first".to_owned())),
        stop.clone(),
    ));
    tokio::task::yield_now().await;
    e.resolve_by_key("k1", "Alertmanager").await.unwrap();
    let mut sent = rec.wait_for(3).await;
    sent.sort();
    let text = format!("{id} resolved (by Alertmanager)");
    assert_eq!(
        sent,
        vec![
            (
                "lync".into(),
                BOB.into(),
                Some("conv-bob".into()),
                text.clone()
            ),
            (
                "ocs".into(),
                ALICE.into(),
                Some("conv-alice".into()),
                text.clone()
            ),
            ("route-first".into(), carol.into(), None, text),
        ]
    );
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn the_sink_that_reached_someone_is_kept_across_a_restart_and_old_records_load() {
    use crate::incidents::{Incident, RedbIncidents};
    let dir = tempfile::tempdir().unwrap();
    let open = || engine_on(Arc::new(RedbIncidents::open(dir.path()).unwrap()));
    let e = open();
    let id = paged_to_alice_and_bob(&e, 1).await;
    reached_on_two_sinks(&e, id).await;
    drop(e);
    let inc = open().get(id).await.unwrap();
    assert_eq!(inc.sinks.get(ALICE).map(String::as_str), Some("ocs"));
    assert_eq!(inc.sinks.get(BOB).map(String::as_str), Some("lync"));
    // an incident stored before the sinks were kept still loads, with none recorded
    let mut json: serde_json::Value = serde_json::to_value(&inc).unwrap();
    json.as_object_mut().unwrap().remove("sinks");
    let old: Incident = serde_json::from_value(json).unwrap();
    assert!(old.sinks.is_empty());
    assert_eq!(old.conversations, inc.conversations);
}
