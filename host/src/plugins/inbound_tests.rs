//! The host's answer to `inbound.message/1` through the real `HostFfi::call`: `recorded=1` only
//! once the engine committed (a store that fails → TRANSIENT, nothing applied, the answer not
//! sent), the sender's confirmation sent in the same conversation after the record, arguments
//! checked, and `UNSUPPORTED` when the host keeps no incidents.

use futures::future::BoxFuture;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    Alert, ErrorKind, FfiPairs, PluginError,
    abi_stable::std_types::{RResult, RStr, RString, Tuple2},
    kit::calls,
};

use crate::{
    incidents::{
        BoxFuture as IncFuture, Clock, Engine, EscalationPolicy, IncidentState, Level,
        MemoryIncidents, PageRequest, Pager, PagerError,
    },
    incidents::{
        reply::{InboundReply, Replies, Say},
        reply_send::{ReplyService, Speaker, tell_changes},
    },
    plugins::host_api::{HostHandle, set_inbound_port},
};

struct AllReachable;

impl Pager for AllReachable {
    fn page(&self, req: PageRequest) -> IncFuture<'static, Result<usize, PagerError>> {
        let n = req.users.len();
        Box::pin(async move { Ok(n) })
    }
}

/// A store that can be told to fail.
#[derive(Default)]
struct Flaky {
    inner: MemoryIncidents,
    fail: AtomicBool,
}

impl crate::incidents::IncidentStore for Flaky {
    fn load(&self) -> Result<Vec<crate::incidents::Incident>, crate::incidents::IncidentError> {
        self.inner.load()
    }
    fn save(
        &self,
        incident: &crate::incidents::Incident,
    ) -> IncFuture<'static, Result<(), crate::incidents::IncidentError>> {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(crate::incidents::IncidentError::storage(
                    std::io::Error::other("disk gone"),
                ))
            });
        }
        self.inner.save(incident)
    }
}

/// Records what was said, and when.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, Say, Instant)>>);

impl Speaker for Arc<Recorder> {
    fn say(&self, instance: &str, say: &Say) -> BoxFuture<'static, Result<String, PluginError>> {
        self.0
            .lock()
            .unwrap()
            .push((instance.to_owned(), say.clone(), Instant::now()));
        let used = say.conversation.clone().unwrap_or_else(|| "new".into());
        Box::pin(async move { Ok(used) })
    }
}

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";

fn pairs(kv: &[(&str, &str)]) -> FfiPairs {
    kv.iter()
        .map(|(k, v)| Tuple2(RString::from(*k), RString::from(*v)))
        .collect()
}

async fn call(kv: &[(&str, &str)]) -> Result<Vec<(String, String)>, (ErrorKind, String)> {
    let host = HostHandle::boxed("ucwa", None);
    match host
        .call(RStr::from_str(calls::INBOUND_MESSAGE), pairs(kv))
        .await
    {
        RResult::ROk(p) => Ok(p
            .iter()
            .map(|Tuple2(k, v)| (k.to_string(), v.to_string()))
            .collect()),
        RResult::RErr(e) => Err((e.kind, e.message.to_string())),
    }
}

#[tokio::test]
async fn inbound_is_recorded_before_the_answer_and_refused_when_the_store_fails() {
    // No incidents: UNSUPPORTED.
    set_inbound_port(None);
    let e = call(&[("user", BOB), ("text", "ack"), ("conversation", "c")])
        .await
        .unwrap_err();
    assert_eq!(e.0, ErrorKind::UNSUPPORTED);

    let store = Arc::new(Flaky::default());
    let engine = Engine::open(
        Arc::clone(&store) as _,
        Arc::new(AllReachable),
        vec![EscalationPolicy {
            name: "ops".into(),
            repeat: 0,
            ack_timeout_secs: 0,
            levels: vec![
                Level {
                    groups: vec![],
                    users: vec![ALICE.into()],
                    after_secs: 0,
                },
                Level {
                    groups: vec![],
                    users: vec![BOB.into()],
                    after_secs: 300,
                },
            ],
        }],
        Clock::system(),
    )
    .unwrap();
    let id = engine
        .open_or_join(1, "am", &Alert::new("disk full"), "r", "ops", false)
        .await
        .unwrap()
        .id;
    engine.escalate_now(id, "timer").await.unwrap();
    engine.set_conversation(id, ALICE, "conv-a").await.unwrap();
    let said = Arc::new(Recorder::default());
    let service = ReplyService::new(
        Arc::new(Replies::new(engine.clone(), [])),
        Arc::new(Arc::clone(&said)),
    );
    set_inbound_port(Some(Arc::new(service)));

    // Bad arguments: PERMANENT, nothing applied.
    let e = call(&[("user", "bob"), ("text", "ack"), ("conversation", "c")])
        .await
        .unwrap_err();
    assert_eq!(e.0, ErrorKind::PERMANENT, "{}", e.1);
    let big = "c".repeat(513);
    let e = call(&[("user", BOB), ("text", "ack"), ("conversation", &big)])
        .await
        .unwrap_err();
    assert_eq!(e.0, ErrorKind::PERMANENT, "{}", e.1);

    // The store fails: TRANSIENT, not applied, nothing said.
    store.fail.store(true, Ordering::SeqCst);
    let e = call(&[
        ("user", BOB),
        ("text", "ack"),
        ("conversation", "conv-b"),
        ("id", "m1"),
    ])
    .await
    .unwrap_err();
    assert_eq!(e.0, ErrorKind::TRANSIENT, "{}", e.1);
    assert_eq!(engine.get(id).await.unwrap().state, IncidentState::Open);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        said.0.lock().unwrap().is_empty(),
        "nothing said before a record"
    );

    // Offered again (same id) once the store is back: recorded, then both told.
    store.fail.store(false, Ordering::SeqCst);
    let t0 = Instant::now();
    let ok = call(&[
        ("user", BOB),
        ("text", "ack"),
        ("conversation", "conv-b"),
        ("id", "m1"),
        ("name", "Bob Example"),
    ])
    .await
    .unwrap();
    assert_eq!(ok, vec![("recorded".to_owned(), "1".to_owned())]);
    assert_eq!(
        engine.get(id).await.unwrap().state,
        IncidentState::Acknowledged
    );
    for _ in 0..100 {
        if said.0.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let said = said.0.lock().unwrap().clone();
    assert_eq!(said.len(), 2, "{said:?}");
    let want = format!("{id} acknowledged by Bob Example — escalation stopped");
    assert_eq!(said[0].0, "ucwa");
    assert_eq!(
        (said[0].1.user.as_str(), said[0].1.conversation.as_deref()),
        (BOB, Some("conv-b"))
    );
    assert_eq!(said[0].1.text, want);
    assert_eq!(
        (said[1].1.user.as_str(), said[1].1.conversation.as_deref()),
        (ALICE, Some("conv-a"))
    );
    assert_eq!(said[1].1.text, want);
    eprintln!(
        "reply → confirmation handed to the sink: {:?}",
        said[0].2 - t0
    );

    // The same message again: recorded, not applied or said again.
    let ok = call(&[
        ("user", BOB),
        ("text", "ack"),
        ("conversation", "conv-b"),
        ("id", "m1"),
    ])
    .await
    .unwrap();
    assert_eq!(ok, vec![("recorded".to_owned(), "1".to_owned())]);
    set_inbound_port(None);
}

#[tokio::test]
async fn a_resolve_from_the_source_tells_everyone_paged_a_reply_is_not_told_twice() {
    let engine = Engine::open(
        Arc::new(MemoryIncidents::default()),
        Arc::new(AllReachable),
        vec![EscalationPolicy {
            name: "ops".into(),
            repeat: 0,
            ack_timeout_secs: 0,
            levels: vec![
                Level {
                    groups: vec![],
                    users: vec![ALICE.into()],
                    after_secs: 0,
                },
                Level {
                    groups: vec![],
                    users: vec![BOB.into()],
                    after_secs: 300,
                },
            ],
        }],
        Clock::system(),
    )
    .unwrap();
    let open = |n: u64| {
        let engine = engine.clone();
        async move {
            let mut a = Alert::new("disk full");
            a.dedup_key = Some(format!("am:{n}"));
            let id = engine
                .open_or_join(n, "am", &a, "r", "ops", false)
                .await
                .unwrap()
                .id;
            engine.escalate_now(id, "timer").await.unwrap();
            id
        }
    };
    let one = open(1).await;
    let two = open(2).await;
    engine.set_conversation(one, BOB, "conv-b").await.unwrap();
    let said = Arc::new(Recorder::default());
    let service = Arc::new(ReplyService::new(
        Arc::new(Replies::new(engine.clone(), [])),
        Arc::new(Arc::clone(&said)),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(tell_changes(
        Arc::clone(&service),
        "ucwa".into(),
        stop.clone(),
    ));
    tokio::task::yield_now().await;
    engine
        .resolve_by_key("am:1", "Alertmanager")
        .await
        .unwrap()
        .unwrap();
    // A reply resolving #2: the reply tells both; the watcher must not tell them again.
    service
        .take(
            "ucwa",
            InboundReply {
                user: ALICE.into(),
                text: format!("r {}", two.0),
                conversation: "conv-a2".into(),
                name: None,
                id: None,
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got: Vec<(String, Option<String>, String)> = said
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s, _)| (s.user.clone(), s.conversation.clone(), s.text.clone()))
        .collect();
    got.sort();
    let by_source = format!("{one} resolved (by Alertmanager)");
    let by_alice = format!("{two} resolved by {ALICE}");
    assert_eq!(
        got,
        vec![
            (ALICE.into(), None, by_source.clone()),
            (ALICE.into(), Some("conv-a2".into()), by_alice.clone()),
            (BOB.into(), None, by_alice),
            (BOB.into(), Some("conv-b".into()), by_source),
        ]
    );
    stop.cancel();
    task.await.unwrap();
}
