//! Digests (issue 16 §1): one IM that carries many alerts to one recipient through one sink —
//! a grouped route's group (`group_by`; first after `group_wait_ms`, then at most one update per
//! `group_interval_ms`), or what waited while the recipient's rate limit was reached
//! (`fold_rate_limited`).
//!
//! Every alert keeps its own record. A recipient of a digest *enrolls* on the [`Board`] and waits
//! (its task sleeps as if gated). When the digest is due, its driver *cuts* it: it wakes the
//! enrolled alerts, and each records durably, in its own round, that its send begins (`sending`,
//! with `digest` = the digest's id, the id of its first alert) and then *joins*. The driver sends
//! one message with the alerts that joined (those that did not in time go with the next one) and
//! hands the sink's outcome to each of them, which records it like the outcome of a message of
//! its own: the members of a digest are finished together. After a crash, a member still marked
//! `sending` is uncertain like any other send and goes again marked as a repeat.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{AlertStatus, DeliveryStatus, ErrorKind, Message, PluginError};
use tokio::sync::{Notify, oneshot};

use super::{
    Dispatcher, Finding, Plan, SINK_START_WAIT,
    digest_text::{Item, digest_text},
    port::SinkLookup,
    send::{mark_repeat, render},
};
use crate::{model::StoredAlert, router::Grouping, template::Context};

/// How long a cut waits for its alerts to record that their send begins.
const JOIN_WAIT: Duration = Duration::from_secs(10);
/// How often a cut looks for alerts it waits for whose task ended meanwhile.
const JOIN_CHECK: Duration = Duration::from_millis(250);

/// The attribute naming the digest a message is (its id).
pub const DIGEST_ATTRIBUTE: &str = "digest";

/// One digest stream: a recipient through a sink, for one group of a route or for what waits
/// out the rate limit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DigestKey {
    pub sink: String,
    pub user: String,
    /// The route and the group's `group_by` values; `None` for rate-limit folding.
    pub group: Option<(String, Vec<String>)>,
}

/// Where an enrolled alert stands.
pub enum Stand {
    /// Waiting for the digest to be cut; the task is woken then.
    Wait,
    /// The digest with this id is being cut: record the send and join.
    Mark(u64),
}

/// An alert that joins a cut digest, as the digest tells of it.
pub struct Member {
    pub item: Item,
    /// The alert without its records, for the templates.
    pub alert: StoredAlert,
    /// The route its record for this recipient is on (whose template applies).
    pub route: String,
    pub repeat: bool,
    pub attempts: u32,
}

impl Member {
    pub fn of(alert: &StoredAlert, i: usize) -> Self {
        let r = &alert.recipients[i];
        Self {
            item: Item {
                id: alert.id,
                subject: alert.alert.subject.clone(),
                labels: alert.alert.labels.clone(),
                resolved: alert.alert.status() == AlertStatus::Resolved,
            },
            alert: StoredAlert {
                recipients: Vec::new(),
                ..alert.clone()
            },
            route: r.route.clone(),
            repeat: r.repeat,
            attempts: r.attempts,
        }
    }
}

struct Cut {
    digest: u64,
    /// Alerts woken to join that have neither joined nor withdrawn.
    expected: BTreeMap<u64, Arc<Notify>>,
    joined: Vec<(Member, oneshot::Sender<Finding>)>,
    all_in: Arc<Notify>,
}

struct Entry {
    /// Enrolled alerts and their tasks' wakers.
    waiting: BTreeMap<u64, Arc<Notify>>,
    cut: Option<Cut>,
    /// When the next digest may be cut (Unix ms).
    due_ms: i64,
    /// The labels that make the group (not repeated per alert in the text).
    grouped_labels: Vec<String>,
    /// Between a group's digests; 0 when folding.
    interval_ms: i64,
}

/// The digests being collected.
#[derive(Default)]
pub struct Board {
    entries: Mutex<HashMap<DigestKey, Entry>>,
}

impl Board {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DigestKey, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True if what waits for `user` through `sink` is being folded.
    pub fn folding(&self, sink: &str, user: &str) -> bool {
        self.lock().contains_key(&DigestKey {
            sink: sink.to_owned(),
            user: user.to_owned(),
            group: None,
        })
    }

    /// Enrolls alert `id` (woken through `waker`) in digest `key`; a new digest is first due at
    /// `first_due_ms` and is grouped by `grouping`. Returns where the alert stands, and true if
    /// the digest is new (its driver is to be started).
    pub fn stand(
        &self,
        key: &DigestKey,
        id: u64,
        waker: &Arc<Notify>,
        first_due_ms: i64,
        grouping: Option<&Grouping>,
    ) -> (Stand, bool) {
        let mut entries = self.lock();
        let mut new = false;
        let entry = entries.entry(key.clone()).or_insert_with(|| {
            new = true;
            Entry {
                waiting: BTreeMap::new(),
                cut: None,
                due_ms: first_due_ms,
                grouped_labels: grouping.map_or_else(Vec::new, |g| {
                    g.by.iter()
                        .filter_map(|f| match f {
                            crate::router::GroupField::Label(l) => Some(l.clone()),
                            _ => None,
                        })
                        .collect()
                }),
                interval_ms: grouping.map_or(0, |g| g.interval.as_millis() as i64),
            }
        });
        if let Some(cut) = entry.cut.as_ref().filter(|c| c.expected.contains_key(&id)) {
            return (Stand::Mark(cut.digest), new);
        }
        entry.waiting.insert(id, Arc::clone(waker));
        (Stand::Wait, new)
    }

    /// Alert `id` recorded that its send in digest `key` begins: it is carried if the cut still
    /// expects it; else (it came too late) it is told at once to join the next digest.
    pub fn join(&self, key: &DigestKey, member: Member) -> oneshot::Receiver<Finding> {
        let (tx, rx) = oneshot::channel();
        let mut entries = self.lock();
        let cut = entries
            .get_mut(key)
            .and_then(|e| e.cut.as_mut())
            .filter(|c| c.expected.contains_key(&member.item.id));
        match cut {
            Some(cut) => {
                cut.expected.remove(&member.item.id);
                cut.joined.push((member, tx));
                if cut.expected.is_empty() {
                    cut.all_in.notify_one();
                }
            }
            None => {
                let _ = tx.send(Finding::SinkDown(
                    "the digest left before this alert joined it; it goes with the next one".into(),
                ));
            }
        }
        rx
    }

    /// True if the cut of digest `key` waits for nobody (any more): every alert woken for it
    /// joined, withdrew, or its task ended (finished another way meanwhile: silenced).
    pub fn all_in(&self, key: &DigestKey) -> bool {
        let mut entries = self.lock();
        let Some(cut) = entries.get_mut(key).and_then(|e| e.cut.as_mut()) else {
            return true;
        };
        cut.expected.retain(|_, waker| Arc::strong_count(waker) > 1);
        cut.expected.is_empty()
    }

    /// Alert `id` no longer waits for a digest to `user` through `sink` (offline, expired,
    /// could not record its send): it is neither waited for nor woken.
    pub fn withdraw(&self, id: u64, sink: &str, user: &str) {
        let mut entries = self.lock();
        for (key, entry) in entries.iter_mut() {
            if key.sink != sink || key.user != user {
                continue;
            }
            entry.waiting.remove(&id);
            if let Some(cut) = entry.cut.as_mut()
                && cut.expected.remove(&id).is_some()
                && cut.expected.is_empty()
            {
                cut.all_in.notify_one();
            }
        }
    }
}

/// What the driver does next with a digest.
enum Next {
    Sleep(i64),
    Cut(Arc<Notify>),
    Gone,
}

impl Dispatcher {
    /// Drives digest `key` until nothing waits for it: cuts it when due, sends it, hands the
    /// outcome to its members.
    pub(super) async fn drive_digest(self: Arc<Self>, key: DigestKey) {
        loop {
            let now = self.clock.now_ms();
            match self.next_cut(&key, now) {
                Next::Gone => return,
                Next::Sleep(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now).max(1) as u64);
                    tokio::select! {
                        () = self.shutdown.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Next::Cut(all_in) => {
                    let until = tokio::time::Instant::now() + JOIN_WAIT;
                    loop {
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            _ = tokio::time::timeout(JOIN_CHECK, all_in.notified()) => {}
                        }
                        if self.board.all_in(&key) || tokio::time::Instant::now() >= until {
                            break;
                        }
                    }
                    self.send_digest(&key).await;
                }
            }
        }
    }

    /// Under the board's lock: ends the digest when nothing waits and its interval is over,
    /// sleeps until it is due or the rate limit lets the next message go, or cuts it.
    fn next_cut(&self, key: &DigestKey, now: i64) -> Next {
        let mut entries = self.board.lock();
        let Some(entry) = entries.get_mut(key) else {
            return Next::Gone;
        };
        // An alert whose task ended (finished another way: silenced, all its recipients
        // settled) holds its waker no more: it is not waited for.
        entry
            .waiting
            .retain(|_, waker| Arc::strong_count(waker) > 1);
        if entry.waiting.is_empty() {
            if entry.due_ms <= now {
                entries.remove(key);
                return Next::Gone;
            }
            return Next::Sleep(entry.due_ms);
        }
        if entry.due_ms > now {
            return Next::Sleep(entry.due_ms);
        }
        let limit = self.plan().settings.per_recipient_per_minute as usize;
        if let Some(at) = self.rate.check(&key.user, now, limit) {
            entry.due_ms = at;
            return Next::Sleep(at);
        }
        let waiting = std::mem::take(&mut entry.waiting);
        let digest = waiting.keys().next().copied().unwrap_or_default();
        let all_in = Arc::new(Notify::new());
        entry.cut = Some(Cut {
            digest,
            expected: waiting.clone(),
            joined: Vec::new(),
            all_in: Arc::clone(&all_in),
        });
        for waker in waiting.values() {
            waker.notify_one();
        }
        tracing::debug!(digest, sink = %key.sink, user = %key.user, alerts = waiting.len(), "Digest cut.");
        Next::Cut(all_in)
    }

    /// Sends the cut digest `key` with the alerts that joined and hands each the outcome.
    async fn send_digest(&self, key: &DigestKey) {
        let (cut, grouped_labels) = {
            let mut entries = self.board.lock();
            let Some(entry) = entries.get_mut(key) else {
                return;
            };
            let now = self.clock.now_ms();
            // The next digest of a group waits an interval; folding goes at the next free slot.
            entry.due_ms = now + entry.interval_ms;
            (entry.cut.take(), entry.grouped_labels.clone())
        };
        let Some(mut cut) = cut else { return };
        if cut.joined.is_empty() {
            return;
        }
        cut.joined.sort_by_key(|(m, _)| m.item.id);
        let plan = self.plan();
        let finding = match self.sinks.lookup(&key.sink, SINK_START_WAIT).await {
            SinkLookup::Unknown => Finding::CallError(PluginError::new(
                ErrorKind::PERMANENT,
                format!("no sink `{}` is configured any more", key.sink),
            )),
            SinkLookup::NotRunning => {
                Finding::SinkDown(format!("sink `{}` is not running", key.sink))
            }
            SinkLookup::Running(port) => {
                let message =
                    self.digest_message(&plan, key, cut.digest, &grouped_labels, &cut.joined);
                tracing::info!(digest = cut.digest, sink = %key.sink, user = %key.user, alerts = cut.joined.len(), "Sending a digest.");
                self.deliver(&plan.settings, &key.sink, port.as_ref(), vec![0], &message)
                    .await
                    .pop()
                    .map_or_else(
                        || Finding::SinkDown("the digest had no outcome".into()),
                        |(_, f)| f,
                    )
            }
        };
        let delivered =
            matches!(&finding, Finding::Result(r) if r.status == DeliveryStatus::DELIVERED);
        // An alert that waited out the rate limit alone went as itself, not as a digest.
        if delivered && (key.group.is_some() || cut.joined.len() > 1) {
            self.metrics.digest_sent(cut.joined.len());
        }
        if !delivered {
            // The members retry on their own backoff; the group's interval does not hold them.
            if let Some(entry) = self.board.lock().get_mut(key) {
                entry.due_ms = self.clock.now_ms();
            }
        }
        for (_, tx) in cut.joined {
            let _ = tx.send(finding.clone());
        }
    }

    /// The IM of digest `digest` carrying `joined` (in accept order) to `key.user`.
    fn digest_message(
        &self,
        plan: &Plan,
        key: &DigestKey,
        digest: u64,
        grouped_labels: &[String],
        joined: &[(Member, oneshot::Sender<Finding>)],
    ) -> Message {
        let items: Vec<Item> = joined.iter().map(|(m, _)| m.item.clone()).collect();
        let group = key.group.as_ref().map_or(&[][..], |(_, v)| v.as_slice());
        let templates = &plan.router.templates;
        // The status page's view of the digest (the API's `?digest=` needs the admin token).
        let link = format!(
            "{}/?digest={digest}",
            templates.public_url().trim_end_matches('/')
        );
        let first = &joined[0].0;
        // What waited out the rate limit alone goes as itself.
        let context = if key.group.is_none() && joined.len() == 1 {
            Context::alert(&first.alert)
        } else {
            let (subject, text) = digest_text(group, grouped_labels, &items, &link);
            let alerts: Vec<&StoredAlert> = joined.iter().map(|(m, _)| &m.alert).collect();
            Context::group(subject, text, &alerts)
        };
        let last = items.last().map_or(0, |i| i.id);
        let mut labels = BTreeMap::new();
        for l in grouped_labels {
            if let Some(v) = first.item.labels.get(l) {
                labels.insert(l.clone(), v.clone());
            }
        }
        let mut message = Message {
            alert_id: digest,
            attempt: joined.iter().map(|(m, _)| m.attempts).max().unwrap_or(0) + 1,
            source: first.alert.source.clone(),
            subject: String::new(),
            body: String::new(),
            severity: joined
                .iter()
                .map(|(m, _)| m.alert.alert.severity)
                .max()
                .unwrap_or_default(),
            labels,
            recipients: vec![key.user.clone()],
            // The same digest sent again keeps its key; a digest of other alerts has its own.
            attributes: [
                (
                    "alert_uid".to_owned(),
                    format!("{}-digest-{}-{last}", first.alert.uid, items.len()),
                ),
                (DIGEST_ATTRIBUTE.to_owned(), digest.to_string()),
            ]
            .into(),
        };
        render(templates, &first.route, &key.sink, &context, &mut message);
        if joined.iter().any(|(m, _)| m.repeat) {
            mark_repeat(&mut message);
        }
        message
    }
}
