//! The reply service: the host's answer to `inbound.message/1` ([`InboundPort`]). It applies the
//! reply through [`Replies`] (committed), answers the sink `recorded`, then — after the record —
//! says the answer to the sender in their conversation and tells the others paged, through the
//! sink the reply came from (`conversation.send/1`), retrying transient failures with backoff.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{ErrorKind, PluginError, kit::Backoff};
use futures::future::BoxFuture;

use super::{
    IncidentId,
    reply::{InboundReply, Replies, Say},
};

/// How long one `conversation.send/1` may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts per message on transient failures (1 s, 2 s, 4 s ... between them).
const SEND_ATTEMPTS: u32 = 6;

/// Sends a message in a conversation through a sink instance; answers the conversation used.
pub trait Speaker: Send + Sync + 'static {
    fn say(&self, instance: &str, say: &Say) -> BoxFuture<'static, Result<String, PluginError>>;
}

/// Takes inbound messages (replies) from sinks: the incidents' reply service. `Ok` only once
/// the reply and its effect are durably recorded.
pub trait InboundPort: Send + Sync + 'static {
    fn inbound(
        &self,
        instance: &str,
        message: InboundReply,
    ) -> BoxFuture<'static, Result<(), PluginError>>;
}

/// [`Replies`] behind `inbound.message/1`.
pub struct ReplyService {
    replies: Arc<Replies>,
    speaker: Arc<dyn Speaker>,
    /// The host's runtime: a sink's call arrives on the sink's own thread, where no host
    /// runtime runs, so the work is spawned here and the sink only waits for its end.
    rt: tokio::runtime::Handle,
}

impl ReplyService {
    /// Must be called within the host's tokio runtime (the work of each reply runs on it).
    pub fn new(replies: Arc<Replies>, speaker: Arc<dyn Speaker>) -> Self {
        Self {
            replies,
            speaker,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Applies `message` (committed when this answers `Ok`) and starts sending the answers.
    pub async fn take(&self, instance: &str, message: InboundReply) -> Result<(), PluginError> {
        let handled = self.replies.handle(&message).await.map_err(|e| {
            tracing::warn!(instance, user = %message.user, error = %e, "reply not recorded");
            PluginError::new(ErrorKind::TRANSIENT, e.to_string())
        })?;
        if handled.duplicate {
            return Ok(());
        }
        // The others are told through the sink that reached each of them (their own system),
        // else through the one the reply came from.
        let reached = match handled.incident {
            Some(id) => self
                .replies
                .engine()
                .get(id)
                .await
                .map(|inc| inc.sinks)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let speaker = Arc::clone(&self.speaker);
        let replies = Arc::clone(&self.replies);
        let instance = instance.to_owned();
        tokio::spawn(async move {
            // The sender first: the confirmation is what they wait for.
            send(
                &*speaker,
                &replies,
                &instance,
                handled.incident,
                &handled.answer,
            )
            .await;
            for say in &handled.tell {
                let via = reached.get(&say.user).unwrap_or(&instance);
                send(&*speaker, &replies, via, handled.incident, say).await;
            }
        });
        Ok(())
    }
}

impl InboundPort for ReplyService {
    fn inbound(
        &self,
        instance: &str,
        message: InboundReply,
    ) -> BoxFuture<'static, Result<(), PluginError>> {
        let me = Self {
            replies: Arc::clone(&self.replies),
            speaker: Arc::clone(&self.speaker),
            rt: self.rt.clone(),
        };
        let instance = instance.to_owned();
        // Polled by the sink's thread: it only waits on the join handle's waker.
        let job = self
            .rt
            .spawn(async move { me.take(&instance, message).await });
        Box::pin(async move {
            job.await.unwrap_or_else(|e| {
                Err(PluginError::new(
                    ErrorKind::TRANSIENT,
                    format!("the reply was not handled: {e}"),
                ))
            })
        })
    }
}

/// Sends one message, retrying transient failures; remembers a new conversation it went to.
async fn send(
    speaker: &dyn Speaker,
    replies: &Replies,
    instance: &str,
    incident: Option<IncidentId>,
    say: &Say,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).jitter(0.0);
    for attempt in 1..=SEND_ATTEMPTS {
        match speaker.say(instance, say).await {
            Ok(used) => {
                tracing::info!(instance, user = %say.user, conversation = %used, "reply answer sent");
                if let Some(id) = incident
                    && say.conversation.as_deref() != Some(used.as_str())
                    && let Err(e) = replies
                        .engine()
                        .set_reached(id, &say.user, instance, Some(&used))
                        .await
                {
                    tracing::warn!(incident = id.0, error = %e, "conversation not remembered");
                }
                return;
            }
            Err(e) if e.kind == ErrorKind::TRANSIENT && attempt < SEND_ATTEMPTS => {
                tracing::debug!(instance, user = %say.user, attempt, error = %e, "answer not sent yet");
                tokio::time::sleep(backoff.next()).await;
            }
            Err(e) => {
                tracing::warn!(instance, user = %say.user, error = %e, "answer dropped");
                return;
            }
        }
    }
}

/// Tells everyone paged when an incident is acknowledged or resolved other than by a reply (a
/// resolved alert from its source, the admin API), through sink `instance`, until `shutdown`.
pub async fn tell_changes(
    service: Arc<ReplyService>,
    instance: String,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tell_changes_via(
        service,
        Arc::new(move |_: &str| Some(instance.clone())),
        shutdown,
    )
    .await;
}

/// Which sink instance speaks for an incident, by its route's name, to those paged for whom no
/// sink is recorded (None: they are not told).
pub type SinkFor = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// As [`tell_changes`]: each person through the sink that reached them, else the sink
/// `sink_for` picks for the incident's route.
pub async fn tell_changes_via(
    service: Arc<ReplyService>,
    sink_for: SinkFor,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use super::IncidentEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut events = service.replies.engine().subscribe();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        let (id, by, what) = match event {
            Ok(IncidentEvent::Acknowledged { id, by }) => (id, by, "acknowledged"),
            Ok(IncidentEvent::Resolved { id, by }) => (id, by, "resolved"),
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        if service.replies.take_acting(id, &by) {
            continue; // a reply: its own answer told them
        }
        let (route, reached) = match service.replies.engine().get(id).await {
            Some(inc) => (inc.route, inc.sinks),
            None => continue,
        };
        let text = format!("{id} {what} (by {by})");
        // Each person through the sink that reached them; the route's sink for anyone without
        // one (incidents stored before the sink was kept).
        let fallback = sink_for(&route);
        let mut says = Vec::new();
        for say in service.replies.news_for_all(id, &text).await {
            match reached.get(&say.user).or(fallback.as_ref()) {
                Some(via) => says.push((via.clone(), say)),
                None => tracing::warn!(
                    incident = id.0,
                    route,
                    user = %say.user,
                    "no sink to tell them through"
                ),
            }
        }
        // Told one after the other, so a slow sink does not hold up the next change's news.
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            for (via, say) in says {
                send(&*service.speaker, &service.replies, &via, Some(id), &say).await;
            }
        });
    }
}

// Tested through the FFI host handle in `plugins/inbound_tests.rs` (FFI types live there only).
