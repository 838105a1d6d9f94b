//! The `ucma` sink: presence in batches and sends in requests no larger than the bridge allows,
//! under idempotency keys; per-recipient results from each request's own answer; health polling,
//! over [`BridgeClient`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    DeliveryStatus, ErrorKind, Health, Message, PluginError, Presence, RecipientResult,
    error_chain,
    kit::{CancellationToken, Host, Setup, Sink},
};
use futures_util::{StreamExt as _, stream};
use tracing::{debug, info, warn};

use crate::{
    client::{BridgeClient, BridgeError},
    config::{Settings, UcmaConfig},
    health::{HealthCell, assess},
    inbound,
    protocol::{
        LimitsDoc, MAX_CONVERSATION_BYTES, MessageDoc, PresenceResult, SayBody, SendBody,
        answer_key, clip, describe, idempotency_key, presence_state, recipient_result,
    },
};

/// How often a send still `running` at the bridge is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What the sink knows of the bridge's advertised limits (§4.1 `limits`).
#[derive(Clone, Copy, Debug)]
enum Known {
    /// No health answer yet.
    NotYet,
    /// The bridge answered without `limits`: the configured sizes are used.
    NotAdvertised,
    Limits(LimitsDoc),
}

/// One `ucma` sink instance.
#[derive(Debug)]
pub struct UcmaSink {
    instance: String,
    settings: Settings,
    client: BridgeClient,
    health: HealthCell,
    limits: Mutex<Known>,
    host: Host,
}

/// How many users go in one presence query, and recipients in one send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    pub presence: usize,
    pub recipients: usize,
}

impl UcmaSink {
    /// Reads and checks the config and builds the HTTP client; no network traffic.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let settings = setup.config::<UcmaConfig>()?.check()?;
        let client = BridgeClient::new(&settings).map_err(|e| {
            PluginError::config(format!("cannot build the HTTP client: {}", error_chain(&e)))
        })?;
        Ok(Self {
            instance: setup.instance,
            settings,
            client,
            health: HealthCell::default(),
            limits: Mutex::new(Known::NotYet),
            host: setup.host,
        })
    }

    /// Says `text` to `user` in `conversation` (§4.7) under a key made with `nonce`; when the
    /// bridge answers that the conversation is gone, starts a new one with a send (§4.3). The
    /// reference actually used (empty when the bridge reports none).
    pub async fn answer(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
        nonce: &str,
    ) -> Result<String, PluginError> {
        let key = answer_key(&self.instance, conversation, user, text, nonce);
        let body = SayBody {
            to: user,
            text,
            content_type: "text/plain",
        };
        // Strings only: serializing cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let gone = if conversation.is_empty() {
            true
        } else {
            let mut said = self.client.say(conversation, &key, bytes.clone()).await;
            if matches!(said, Err(BridgeError::Transport { .. })) {
                // A lost answer: once more under the same key, which the bridge replays.
                said = self.client.say(conversation, &key, bytes).await;
            }
            match said {
                Ok(answer) if matches!(answer.status.as_str(), "delivered" | "sent") => {
                    debug!(conversation = %clip(conversation), user, "Answered in the conversation.");
                    return Ok(answer
                        .conversation
                        .filter(|c| !c.is_empty() && c.len() <= 512)
                        .unwrap_or_else(|| conversation.to_owned()));
                }
                Ok(answer) => {
                    let detail = answer.error.as_ref().map(describe).unwrap_or_default();
                    let retryable = answer.error.as_ref().is_none_or(|e| e.retryable);
                    let kind = if retryable {
                        ErrorKind::TRANSIENT
                    } else {
                        ErrorKind::PERMANENT
                    };
                    return Err(PluginError::new(
                        kind,
                        format!(
                            "the bridge could not say it: {} {detail}",
                            clip(&answer.status)
                        ),
                    ));
                }
                Err(BridgeError::Refused { status: 404, .. }) => true,
                Err(e) => return Err(e.to_plugin_error()),
            }
        };
        debug_assert!(gone);
        info!(conversation = %clip(conversation), user, "The conversation is gone; starting a new one.");
        let message = Message {
            alert_id: 0,
            attempt: 1,
            source: "conversation".into(),
            // The IM is the subject line alone (no body below it), the toast its start.
            subject: text.to_owned(),
            body: String::new(),
            recipients: vec![user.to_owned()],
            attributes: [("alert_uid".to_owned(), format!("answer:{key}"))].into(),
            ..Message::default()
        };
        let to = [user.to_owned()];
        let results = self
            .send(&message, &to)
            .await
            .map_err(|e| e.to_plugin_error())?;
        let (result, conversation) = results.into_iter().next().ok_or_else(|| {
            PluginError::new(
                ErrorKind::TRANSIENT,
                "the bridge did not report the recipient",
            )
        })?;
        match (result.status, conversation) {
            (DeliveryStatus::DELIVERED, Some(c)) => Ok(c),
            (DeliveryStatus::DELIVERED, None) => Ok(String::new()),
            (
                DeliveryStatus::FAILED_PERMANENT
                | DeliveryStatus::NOT_FOUND
                | DeliveryStatus::DECLINED,
                _,
            ) => Err(PluginError::new(ErrorKind::PERMANENT, result.detail)),
            _ => Err(PluginError::new(ErrorKind::TRANSIENT, result.detail)),
        }
    }

    fn config(&self) -> &UcmaConfig {
        &self.settings.config
    }

    /// Polls `/v1/health` every `health_interval_ms` until `shutdown`.
    async fn poll_health(&self, shutdown: &CancellationToken) -> Result<(), PluginError> {
        let interval = Duration::from_millis(self.config().health_interval_ms);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.check_health() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Polls `/v1/health` once and records the result and the advertised limits.
    async fn check_health(&self) {
        let answer = self.client.health().await;
        if let Ok(doc) = &answer {
            self.learn(doc.limits);
        }
        self.health.set(assess(&answer, self.config()));
    }

    fn learn(&self, limits: Option<LimitsDoc>) {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner) = match limits {
            Some(l) => Known::Limits(l),
            None => Known::NotAdvertised,
        };
    }

    /// The batch sizes to use now: the configured ones, lowered to the bridge's advertised
    /// limits (§8: never more than the bridge allows). Asks `/v1/health` first when no answer
    /// has told the limits yet (a delivery before the first poll completed).
    pub async fn sizes(&self) -> Sizes {
        let known = *self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let limits = match known {
            Known::Limits(l) => Some(l),
            Known::NotAdvertised => None,
            Known::NotYet => match self.client.health().await {
                Ok(doc) => {
                    self.learn(doc.limits);
                    doc.limits
                }
                Err(_) => None,
            },
        };
        let c = self.config();
        match limits {
            Some(l) => Sizes {
                presence: c.presence_batch_size.min(l.max_presence_targets).max(1),
                recipients: c.max_recipients_per_message.min(l.max_recipients).max(1),
            },
            None => Sizes {
                presence: c.presence_batch_size,
                recipients: c.max_recipients_per_message,
            },
        }
    }

    /// Asks `/v1/health` for the bridge's limits again, after a `413` said ours are too large
    /// (a bridge reconfigured since the last poll); the sizes to use now.
    async fn relearn(&self) -> Sizes {
        if let Ok(doc) = self.client.health().await {
            self.learn(doc.limits);
        }
        self.sizes().await
    }

    /// The presence of `targets` in queries of `size`: what was answered, and each batch that
    /// failed with its error.
    async fn query(
        &self,
        targets: &[String],
        size: usize,
        asked: &BTreeMap<String, Vec<String>>,
    ) -> (Vec<Presence>, Vec<(Vec<String>, BridgeError)>) {
        let batches: Vec<&[String]> = targets.chunks(size.max(1)).collect();
        let timeout = self.config().presence_timeout_ms;
        let jobs: Vec<_> = batches
            .iter()
            .map(|batch| self.client.presence(batch, timeout))
            .collect();
        let answers = self.concurrently(jobs).await;
        let (mut out, mut failed) = (Vec::new(), Vec::new());
        for (batch, answer) in batches.into_iter().zip(answers) {
            match answer {
                Ok(results) => {
                    let of_batch: BTreeMap<String, Vec<String>> = batch
                        .iter()
                        .filter_map(|t| {
                            let folded = t.to_ascii_lowercase();
                            asked.get(&folded).map(|s| (folded, s.clone()))
                        })
                        .collect();
                    out.extend(presences(results, &of_batch));
                }
                Err(e) => failed.push((batch.to_vec(), e)),
            }
        }
        (out, failed)
    }

    /// One send per request, concurrently; the answers in the same order.
    async fn send_all(
        &self,
        message: &Message,
        requests: &[Vec<String>],
    ) -> Vec<Result<Vec<Outcome>, BridgeError>> {
        let jobs: Vec<_> = requests.iter().map(|to| self.send(message, to)).collect();
        self.concurrently(jobs).await
    }

    /// Sends `message` to `to` (one request) and waits for every recipient to be final, or
    /// for the request timeout.
    async fn send(&self, message: &Message, to: &[String]) -> Result<Vec<Outcome>, BridgeError> {
        let deadline = Instant::now() + self.settings.request_timeout();
        let key = idempotency_key(&self.instance, message, to);
        let body = SendBody::new(
            message,
            to,
            self.config().mode.as_str(),
            self.config().send_timeout_ms,
        );
        // Strings, numbers and booleans only: serializing cannot fail.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut doc = self.client.send(&key, bytes).await?;
        debug!(alert = message.alert_id, key = %key, recipients = to.len(), id = %clip(&doc.id), state = %clip(&doc.state), "Bridge answered a send.");
        while doc.state == "running" && Instant::now() + POLL_INTERVAL < deadline {
            debug!(alert = message.alert_id, id = %clip(&doc.id), "Send still running at the bridge; polling.");
            tokio::time::sleep(POLL_INTERVAL).await;
            doc = self.client.message(&doc.id).await?;
        }
        Ok(results_for(to, &doc))
    }

    /// Runs `jobs` concurrently, bounded by `max_concurrent_requests`, keeping their order.
    async fn concurrently<T, F: Future<Output = T>>(&self, jobs: Vec<F>) -> Vec<T> {
        stream::iter(jobs)
            .buffered(self.config().max_concurrent_requests)
            .collect()
            .await
    }
}

/// A recipient's result and the conversation the bridge keeps open with them (§4.8), if any.
type Outcome = (RecipientResult, Option<String>);

/// One result per requested recipient, from the bridge's document: matched by the URI exactly
/// as sent, else ignoring ASCII case (§4.2: a bridge may compare URIs case-insensitively).
fn results_for(to: &[String], doc: &MessageDoc) -> Vec<Outcome> {
    let exact: HashMap<&str, _> = doc.recipients.iter().map(|r| (r.to.as_str(), r)).collect();
    let folded: HashMap<String, _> = doc
        .recipients
        .iter()
        .map(|r| (r.to.to_ascii_lowercase(), r))
        .collect();
    to.iter()
        .map(|user| {
            let found = exact
                .get(user.as_str())
                .or_else(|| folded.get(&user.to_ascii_lowercase()));
            match found {
                Some(r) => (
                    RecipientResult {
                        user: user.clone(),
                        ..recipient_result(r)
                    },
                    r.conversation
                        .clone()
                        .filter(|c| !c.is_empty() && c.len() <= MAX_CONVERSATION_BYTES),
                ),
                None => (
                    RecipientResult::new(
                        user,
                        DeliveryStatus::FAILED_TRANSIENT,
                        "the bridge did not report this recipient",
                    ),
                    None,
                ),
            }
        })
        .collect()
}

/// A recipient's result carrying the page's conversation reference, for replies in it to reach
/// the incident and the host's answers to go into it (wire key `conversation`).
fn with_conversation((result, conversation): Outcome) -> RecipientResult {
    match conversation {
        Some(c) => result.with_conversation(c),
        None => result,
    }
}

/// Tells answers apart in their keys within this process.
static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// True if `error` is the bridge's `413` with this code (a batch over its limit).
fn refused_as(error: &BridgeError, code: &str) -> bool {
    matches!(error, BridgeError::Refused { status: 413, code: c, .. } if c == code)
}

/// Every recipient of a failed request, failed with that request's error.
fn failed_all(to: &[String], error: &BridgeError) -> Vec<RecipientResult> {
    let status = if error.is_transient() {
        DeliveryStatus::FAILED_TRANSIENT
    } else {
        DeliveryStatus::FAILED_PERMANENT
    };
    let detail = error_chain(error);
    to.iter()
        .map(|user| {
            let result = RecipientResult::new(user, status, detail.clone());
            match error.retry_after() {
                Some(after) => result.retry_after(after),
                None => result,
            }
        })
        .collect()
}

/// Recipients in requests of at most `size`, never two spellings of one URI (ASCII case) in
/// the same request, which a bridge could refuse as duplicates.
pub fn requests(recipients: &[String], size: usize) -> Vec<Vec<String>> {
    let mut out: Vec<(Vec<String>, HashSet<String>)> = Vec::new();
    for r in recipients {
        let folded = r.to_ascii_lowercase();
        let slot = out
            .iter_mut()
            .find(|(to, seen)| to.len() < size.max(1) && !seen.contains(&folded));
        match slot {
            Some((to, seen)) => {
                to.push(r.clone());
                seen.insert(folded);
            }
            None => out.push((vec![r.clone()], HashSet::from([folded]))),
        }
    }
    out.into_iter().map(|(to, _)| to).collect()
}

/// The presences one query's answer gives for `asked` (lower-cased URI → every spelling the
/// host used). Results for targets not asked are ignored; a target whose presence could not be
/// had (a retryable error: `timeout`, `bridge_error`) is left out, so the host treats it as
/// unknown and applies the route's policy for that.
fn presences(results: Vec<PresenceResult>, asked: &BTreeMap<String, Vec<String>>) -> Vec<Presence> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in results {
        let folded = r.target.to_ascii_lowercase();
        let Some(spellings) = asked.get(&folded) else {
            continue;
        };
        if !seen.insert(folded) {
            continue;
        }
        if let Some(e) = r
            .error
            .as_ref()
            .filter(|e| e.retryable || matches!(e.code.as_str(), "timeout" | "bridge_error"))
        {
            debug!(target = %clip(&r.target), error = %describe(e), "The bridge could not tell this presence.");
            continue;
        }
        let state = presence_state(&r.availability, r.availability_value);
        let detail = match (&r.error, &r.activity) {
            (Some(e), _) => describe(e),
            (None, Some(activity)) => format!("{} ({})", clip(&r.availability), clip(activity)),
            (None, None) => clip(&r.availability),
        };
        for user in spellings {
            let mut p = Presence::new(user, state);
            p.detail.clone_from(&detail);
            out.push(p);
        }
    }
    out
}

impl Sink for UcmaSink {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), PluginError> {
        info!(instance = %self.instance, endpoint = %self.settings.endpoint, "UCMA sink started.");
        let listener = self.config().inbound.then(|| {
            let (sink, shutdown) = (Arc::clone(&self), shutdown.clone());
            tokio::spawn(async move {
                let wait = Duration::from_millis(sink.config().inbound_wait_ms);
                inbound::listen(&sink.client, &sink.host, wait, &shutdown).await;
            })
        });
        let result = self.poll_health(&shutdown).await;
        if let Some(listener) = listener {
            let _ = listener.await;
        }
        result
    }

    /// `conversation.send/1`, routed here by the kit with its arguments checked.
    async fn send_in_conversation(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
    ) -> Result<String, PluginError> {
        // One key per call: the sink's own retry of a lost answer replays it at the bridge.
        let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let nonce = format!("{}-{now}-{nonce}", std::process::id());
        self.answer(conversation, user, text, &nonce).await
    }

    async fn presence(&self, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        // One target per URI, compared ignoring ASCII case; its answer goes to every spelling.
        let mut asked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for u in users {
            let spellings = asked.entry(u.to_ascii_lowercase()).or_default();
            if !spellings.contains(&u) {
                spellings.push(u);
            }
        }
        let targets: Vec<String> = asked.values().map(|s| s[0].clone()).collect();
        let size = self.sizes().await.presence;
        let (mut out, mut failed) = self.query(&targets, size, &asked).await;
        if failed
            .iter()
            .any(|(_, e)| refused_as(e, "too_many_targets"))
        {
            let smaller = self.relearn().await.presence;
            if smaller < size {
                let (again, rest): (Vec<_>, Vec<_>) = failed
                    .into_iter()
                    .partition(|(_, e)| refused_as(e, "too_many_targets"));
                let retry: Vec<String> = again.into_iter().flat_map(|(batch, _)| batch).collect();
                info!(
                    targets = retry.len(),
                    size = smaller,
                    "The bridge's presence limit dropped; asking again in smaller queries."
                );
                let (more, more_failed) = self.query(&retry, smaller, &asked).await;
                out.extend(more);
                failed = rest;
                failed.extend(more_failed);
            }
        }
        for (batch, e) in &failed {
            // These users are left out: the host treats their presence as unknown.
            warn!(targets = batch.len(), error = %error_chain(e), "Presence query failed.");
        }
        match failed.into_iter().next() {
            Some((_, e)) if out.is_empty() => Err(e.to_plugin_error()),
            _ => Ok(out),
        }
    }

    async fn deliver(&self, mut message: Message) -> Result<Vec<RecipientResult>, PluginError> {
        // A repeat after a host restart goes out as the first send did, under the same key: the
        // bridge answers it from its idempotency store (§3) if the first reached it, so nobody
        // gets a second IM and no mark is needed.
        message.unmark_repeat();
        let mut recipients = message.recipients.clone();
        recipients.sort();
        recipients.dedup();
        let size = self.sizes().await.recipients;
        let mut batches = requests(&recipients, size);
        let mut answers = self.send_all(&message, &batches).await;
        let too_many = |a: &Result<_, BridgeError>| {
            a.as_ref()
                .is_err_and(|e| refused_as(e, "too_many_recipients"))
        };
        if answers.iter().any(too_many) {
            let smaller = self.relearn().await.recipients;
            if smaller < size {
                // A refused request stored nothing at the bridge (§3): send again, smaller.
                let (mut kept, mut retry) = ((Vec::new(), Vec::new()), Vec::new());
                for (to, answer) in batches.into_iter().zip(answers) {
                    if too_many(&answer) {
                        retry.extend(to);
                    } else {
                        kept.0.push(to);
                        kept.1.push(answer);
                    }
                }
                info!(
                    recipients = retry.len(),
                    size = smaller,
                    "The bridge's recipient limit dropped; sending again in smaller requests."
                );
                let again = requests(&retry, smaller);
                let more = self.send_all(&message, &again).await;
                (batches, answers) = kept;
                batches.extend(again);
                answers.extend(more);
            }
        }
        // Every request refused alike (a wrong secret, say): one error for the delivery, the
        // same for each recipient as their own request's answer.
        let errors: Vec<PluginError> = answers
            .iter()
            .filter_map(|a| a.as_ref().err().map(BridgeError::to_plugin_error))
            .collect();
        if errors.len() == answers.len()
            && let Some(first) = errors.first()
            && errors
                .iter()
                .all(|e| e.kind == first.kind && e.message == first.message)
        {
            return Err(first.clone());
        }
        // Otherwise each recipient's outcome comes from its own request's answer.
        let mut by_user: HashMap<String, RecipientResult> = HashMap::new();
        for (to, answer) in batches.iter().zip(answers) {
            let results = match answer {
                Ok(results) => results.into_iter().map(with_conversation).collect(),
                Err(e) => failed_all(to, &e),
            };
            by_user.extend(results.into_iter().map(|r| (r.user.clone(), r)));
        }
        Ok(message
            .recipients
            .iter()
            .map(|u| match by_user.get(u.as_str()) {
                Some(r) => r.clone(),
                None => RecipientResult::new(u, DeliveryStatus::FAILED_TRANSIENT, "no result"),
            })
            .collect())
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}
