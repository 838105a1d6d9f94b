//! The simulated bridge's shared state: users with their presence, scripted outcomes and inbox;
//! health; injected faults; counters. The idempotency store and message records live here too
//! and are driven by `messages.rs`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    config::{Limits, SimConfig},
    inbound::Talk,
    wire::{Availability, MessageDoc, SendRequest},
};

/// What `/v1/health` reports (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Down,
}

/// What a user's next call ends with: a final SIP status (200 = the IM is delivered) after a
/// delay. A delay longer than the request's `timeout_ms` leaves the recipient `pending` in the
/// answer, as a UCMA operation that overruns its timeout does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub sip_status: u16,
    #[serde(default)]
    pub delay_ms: u64,
}

impl Outcome {
    pub fn sip(sip_status: u16) -> Self {
        Self {
            sip_status,
            delay_ms: 0,
        }
    }

    pub fn delayed(sip_status: u16, delay_ms: u64) -> Self {
        Self {
            sip_status,
            delay_ms,
        }
    }
}

/// One IM a user received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceivedIm {
    pub message_id: String,
    pub subject: Option<String>,
    pub toast: Option<String>,
    pub body: String,
    pub content_type: String,
    pub importance: String,
    pub mode: String,
    pub at: String,
}

/// Which endpoint a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    Health,
    Presence,
    Messages,
    /// `GET /v1/inbound` and `POST /v1/inbound/ack`.
    Inbound,
    /// `POST /v1/conversations/{id}/messages`.
    Conversations,
    Any,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultAction {
    /// Answer with this request-level error (401, 413, 429, 503, ...) instead of processing.
    Status {
        status: u16,
        retry_after_s: Option<u64>,
    },
    /// Process a send normally, then close the connection without answering.
    DropAfterSend,
}

/// A fault for the next `count` matching requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub target: FaultTarget,
    pub action: FaultAction,
    pub count: u32,
    /// Only requests that name this user (a send's `to`, a query's `targets`) match.
    #[serde(default)]
    pub recipient: Option<String>,
    /// The error code of a `status` fault (default: the usual code of the status, §6).
    #[serde(default)]
    pub code: Option<String>,
}

impl Fault {
    /// The next request to `target` gets `status` (with `Retry-After` when given).
    pub fn status(target: FaultTarget, status: u16, retry_after_s: Option<u64>) -> Self {
        Self {
            target,
            action: FaultAction::Status {
                status,
                retry_after_s,
            },
            count: 1,
            recipient: None,
            code: None,
        }
    }

    /// Only for requests naming `uri`.
    pub fn for_recipient(mut self, uri: &str) -> Self {
        self.recipient = Some(uri.to_owned());
        self
    }

    /// With this error code.
    pub fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// For the next `count` matching requests.
    pub fn times(mut self, count: u32) -> Self {
        self.count = count;
        self
    }
}

/// What the bridge did, for tests to assert on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Every `/v1` request.
    pub requests: u64,
    pub unauthorized: u64,
    pub health_checks: u64,
    pub presence_queries: u64,
    /// Sends processed for the first time under their key.
    pub sends: u64,
    /// Calls placed, one per recipient attempt.
    pub calls: u64,
    pub delivered: u64,
    /// Sends answered from the idempotency store without a call.
    pub replays: u64,
    /// Sends under a known key that re-attempted retryable recipients.
    pub retries: u64,
    pub conflicts: u64,
    pub in_progress: u64,
    pub faults: u64,
    pub dropped: u64,
    /// `GET /v1/inbound` answered (200 or 404 `not_supported`).
    pub inbound_polls: u64,
    /// Messages acknowledged by `POST /v1/inbound/ack`.
    pub inbound_acked: u64,
    /// Inbound messages dropped because the buffer was full (oldest first).
    pub inbound_dropped: u64,
    /// Answers said into an open conversation (`POST /v1/conversations/{id}/messages`).
    pub conversation_sends: u64,
    /// Answers refused because their conversation was gone (`404 conversation_gone`).
    pub conversations_gone: u64,
}

#[derive(Debug, Default)]
pub(super) struct User {
    pub availability: Option<Availability>,
    pub script: VecDeque<Outcome>,
    pub inbox: Vec<ReceivedIm>,
}

/// A message and what is still running for it.
#[derive(Debug)]
pub(super) struct MessageRecord {
    pub doc: MessageDoc,
    pub request: SendRequest,
    pub pending: watch::Sender<usize>,
}

#[derive(Debug)]
pub(super) struct KeyRecord {
    pub body_hash: Vec<u8>,
    pub message_id: String,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub users: BTreeMap<String, User>,
    pub health: HealthStatus,
    pub faults: Vec<Fault>,
    pub counters: Counters,
    pub keys: HashMap<String, KeyRecord>,
    pub messages: HashMap<String, MessageRecord>,
    pub next_id: u64,
    /// The limits in force (the config's, unless changed while running).
    pub limits: Limits,
    /// Conversations and the inbound buffer (§4.5–§4.8).
    pub talk: Talk,
}

/// The whole simulated bridge.
#[derive(Debug)]
pub struct State {
    pub config: SimConfig,
    pub started: Instant,
    inner: Mutex<Inner>,
    /// Woken when an inbound message arrives, for long polls.
    pub(super) arrived: tokio::sync::Notify,
}

impl State {
    pub fn new(config: SimConfig) -> Self {
        let users = config
            .users
            .iter()
            .map(|(uri, a)| {
                (
                    uri.clone(),
                    User {
                        availability: Some(*a),
                        ..User::default()
                    },
                )
            })
            .collect();
        let inner = Inner {
            users,
            health: HealthStatus::Ok,
            faults: Vec::new(),
            counters: Counters::default(),
            keys: HashMap::new(),
            messages: HashMap::new(),
            next_id: 1,
            limits: config.limits,
            talk: Talk::new(config.inbound, config.max_inbound_pending),
        };
        Self {
            config,
            started: Instant::now(),
            inner: Mutex::new(inner),
            arrived: tokio::sync::Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets a user's presence, adding the user if unknown.
    pub fn set_presence(&self, uri: &str, availability: Availability) {
        self.lock()
            .users
            .entry(uri.to_owned())
            .or_default()
            .availability = Some(availability);
    }

    /// A user's presence; `None` for a user the bridge does not know.
    pub fn presence(&self, uri: &str) -> Option<Availability> {
        let inner = self.lock();
        let key = user_key(&inner.users, uri)?;
        inner.users.get(&key).and_then(|u| u.availability)
    }

    /// Queues outcomes for a user's next calls (after they run out: 200, or 480 when offline).
    pub fn script(&self, uri: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        self.lock()
            .users
            .entry(uri.to_owned())
            .or_default()
            .script
            .extend(outcomes);
    }

    /// Every IM the user received, oldest first.
    pub fn received(&self, uri: &str) -> Vec<ReceivedIm> {
        self.lock()
            .users
            .get(uri)
            .map(|u| u.inbox.clone())
            .unwrap_or_default()
    }

    /// Every user with presence and inbox.
    pub fn users(&self) -> Vec<(String, Option<Availability>, Vec<ReceivedIm>)> {
        self.lock()
            .users
            .iter()
            .map(|(k, u)| (k.clone(), u.availability, u.inbox.clone()))
            .collect()
    }

    pub fn counters(&self) -> Counters {
        self.lock().counters
    }

    pub fn health(&self) -> HealthStatus {
        self.lock().health
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// Changes the limits, as a bridge reconfigured and restarted between two health polls.
    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    pub fn set_health(&self, status: HealthStatus) {
        self.lock().health = status;
    }

    /// Injects a fault for the next `fault.count` matching requests.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Takes one use of the first fault for `target` (and, if it names one, a user in `named`)
    /// that `wanted` accepts; returns its action and error code.
    pub fn take_fault(
        &self,
        target: FaultTarget,
        named: &[String],
        wanted: impl Fn(&FaultAction) -> bool,
    ) -> Option<(FaultAction, Option<String>)> {
        let mut inner = self.lock();
        let i = inner.faults.iter().position(|f| {
            (f.target == target || f.target == FaultTarget::Any)
                && f.count > 0
                && wanted(&f.action)
                && f.recipient.as_ref().is_none_or(|r| named.contains(r))
        })?;
        let fault = &mut inner.faults[i];
        fault.count -= 1;
        let taken = (fault.action, fault.code.clone());
        if fault.count == 0 {
            inner.faults.remove(i);
        }
        inner.counters.faults += 1;
        Some(taken)
    }

    /// Bumps a counter.
    pub fn count(&self, bump: impl FnOnce(&mut Counters)) {
        bump(&mut self.lock().counters);
    }

    /// The message document as it is now, if known.
    pub fn message(&self, id: &str) -> Option<MessageDoc> {
        self.lock().messages.get(id).map(|m| m.doc.clone())
    }

    /// Calls still running.
    pub fn calls_in_flight(&self) -> usize {
        self.lock()
            .messages
            .values()
            .map(|m| *m.pending.borrow())
            .sum()
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The key of the user `uri` names: exactly, else ignoring ASCII case (§4.2: SIP URIs compare
/// case-insensitively).
pub(super) fn user_key(users: &BTreeMap<String, User>, uri: &str) -> Option<String> {
    if users.contains_key(uri) {
        return Some(uri.to_owned());
    }
    users.keys().find(|k| k.eq_ignore_ascii_case(uri)).cloned()
}
