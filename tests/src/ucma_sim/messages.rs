//! Sends (§3, §4.3): the idempotency store's decisions, one simulated call per recipient with
//! its scripted SIP outcome, and waiting for the calls to end.

use std::{sync::Arc, time::Duration};

use super::{
    state::{Inner, KeyRecord, MessageRecord, Outcome, ReceivedIm, State, User},
    wire::{MessageDoc, RecipientDoc, RecipientError, SendRequest, is_sip_uri, now_unix, rfc3339},
};

/// What a send under a key turned into.
#[derive(Debug)]
pub enum Submitted {
    /// Every recipient was already final: the stored document, nothing sent.
    Replay(MessageDoc),
    /// Calls were placed (all recipients for a new key, the retryable ones for a known key).
    Started { id: String },
}

/// Why a send under a key was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The key was used with a different body.
    Conflict,
    /// The key's message is still running.
    InProgress,
}

/// What to do for one recipient.
enum Plan {
    /// Final without a call.
    Now(RecipientDoc),
    /// Place a call that ends with this outcome.
    Call(Outcome),
}

impl State {
    /// Admits a send under `key` and starts its calls.
    pub fn submit(
        self: &Arc<Self>,
        key: &str,
        body_hash: Vec<u8>,
        request: SendRequest,
    ) -> Result<Submitted, Refused> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let known = inner
            .keys
            .get(key)
            .map(|k| (k.body_hash == body_hash, k.message_id.clone()));
        let (id, indices) =
            match known.and_then(|(same, id)| inner.messages.get(&id).map(|m| (same, id, m))) {
                Some((false, ..)) => {
                    inner.counters.conflicts += 1;
                    return Err(Refused::Conflict);
                }
                Some((true, _, record)) if *record.pending.borrow() > 0 => {
                    inner.counters.in_progress += 1;
                    return Err(Refused::InProgress);
                }
                Some((true, id, record)) => {
                    let retry: Vec<usize> = (0..record.doc.recipients.len())
                        .filter(|&i| !record.doc.recipients[i].is_final())
                        .collect();
                    if retry.is_empty() {
                        inner.counters.replays += 1;
                        return Ok(Submitted::Replay(record.doc.clone()));
                    }
                    inner.counters.retries += 1;
                    (id, retry)
                }
                None => {
                    let id = format!("m_{:010}_{:04x}", inner.next_id, rand::random::<u16>());
                    inner.next_id += 1;
                    inner.counters.sends += 1;
                    let doc = MessageDoc {
                        id: id.clone(),
                        state: "running",
                        created_at: rfc3339(now_unix()),
                        recipients: request.to.iter().map(|to| pending(to)).collect(),
                    };
                    let (pending, _) = tokio::sync::watch::channel(0);
                    let record = MessageRecord {
                        doc,
                        request,
                        pending,
                    };
                    let n = record.doc.recipients.len();
                    inner.messages.insert(id.clone(), record);
                    inner.keys.insert(
                        key.to_owned(),
                        KeyRecord {
                            body_hash,
                            message_id: id.clone(),
                        },
                    );
                    (id, (0..n).collect())
                }
            };
        let calls = plan_calls(inner, &id, &indices);
        drop(guard);
        for (i, outcome) in calls {
            let state = Arc::clone(self);
            let id = id.clone();
            tokio::spawn(async move {
                // The timer has millisecond ticks: a zero delay must not wait for one.
                if outcome.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(outcome.delay_ms)).await;
                }
                state.complete(&id, i, outcome);
            });
        }
        Ok(Submitted::Started { id })
    }

    /// Waits until every recipient of message `id` is final or `limit` passed, and returns its
    /// document as it then is.
    pub async fn wait_final(&self, id: &str, limit: Duration) -> Option<MessageDoc> {
        let rx = self.lock().messages.get(id).map(|m| m.pending.subscribe());
        if let Some(mut rx) = rx {
            // A timeout leaves recipients pending, which the answer then says.
            let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
        }
        self.message(id)
    }

    /// Ends one call of message `id` with `outcome`.
    fn complete(&self, id: &str, index: usize, outcome: Outcome) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(record) = inner.messages.get_mut(id) else {
            return;
        };
        let Some(slot) = record.doc.recipients.get_mut(index) else {
            return;
        };
        let page = record.request.mode.as_deref() == Some("page");
        let now = rfc3339(now_unix());
        slot.sip_status = Some(outcome.sip_status);
        slot.completed_at = Some(now.clone());
        if outcome.sip_status == 200 {
            slot.status = if page { "sent" } else { "delivered" };
            slot.error = None;
            let request = &record.request;
            let im = ReceivedIm {
                message_id: id.to_owned(),
                subject: request.subject.clone(),
                toast: request.toast.clone(),
                body: request.body.clone(),
                content_type: request
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
                importance: request
                    .importance
                    .clone()
                    .unwrap_or_else(|| "normal".into()),
                mode: request.mode.clone().unwrap_or_else(|| "session".into()),
                at: now,
            };
            if !page && inner.talk.supported {
                // A delivered session IM leaves its call open for replies (§4.8).
                let conversation = inner.talk.open(&slot.to, "bridge", &im.body, &im.at);
                slot.conversation = Some(conversation);
            }
            inner
                .users
                .entry(slot.to.clone())
                .or_default()
                .inbox
                .push(im);
            inner.counters.delivered += 1;
        } else {
            slot.status = "failed";
            slot.error = Some(RecipientError::from_sip(outcome.sip_status));
        }
        record.pending.send_modify(|n| *n = n.saturating_sub(1));
        if *record.pending.borrow() == 0 {
            record.doc.state = "completed";
        }
    }
}

fn pending(to: &str) -> RecipientDoc {
    RecipientDoc {
        to: to.to_owned(),
        status: "pending",
        presence_before: None,
        sip_status: None,
        completed_at: None,
        error: None,
        conversation: None,
    }
}

/// Decides each listed recipient's fate, marks the calls pending, and returns the calls to place.
fn plan_calls(inner: &mut Inner, id: &str, indices: &[usize]) -> Vec<(usize, Outcome)> {
    let Some(record) = inner.messages.get_mut(id) else {
        return Vec::new();
    };
    let mut calls = Vec::new();
    for &i in indices {
        let Some(to) = record.request.to.get(i).cloned() else {
            continue;
        };
        let user = super::state::user_key(&inner.users, &to).and_then(|k| inner.users.get_mut(&k));
        let availability = user.as_ref().and_then(|u| u.availability);
        let mut doc = pending(&to);
        if !record.request.skip_if.is_empty() {
            doc.presence_before = availability;
        }
        match plan(&record.request, &to, user) {
            Plan::Now(mut now) => {
                now.presence_before = doc.presence_before;
                doc = now;
            }
            Plan::Call(outcome) => calls.push((i, outcome)),
        }
        record.doc.recipients[i] = doc;
    }
    inner.counters.calls += calls.len() as u64;
    record.pending.send_modify(|n| *n += calls.len());
    record.doc.state = if *record.pending.borrow() > 0 {
        "running"
    } else {
        "completed"
    };
    calls
}

fn plan(request: &SendRequest, to: &str, user: Option<&mut User>) -> Plan {
    let now = || Some(rfc3339(now_unix()));
    if !is_sip_uri(to) {
        let error = RecipientError::other("invalid_uri", "not a sip:user@host URI", false);
        return Plan::Now(RecipientDoc {
            status: "failed",
            completed_at: now(),
            error: Some(error),
            ..pending(to)
        });
    }
    let Some(user) = user else {
        return Plan::Call(Outcome::sip(404));
    };
    if let Some(a) = user.availability
        && request
            .skip_if
            .iter()
            .any(|s| s.eq_ignore_ascii_case(a.name()))
    {
        let error = RecipientError::other(
            "skipped_presence",
            &format!("recipient is {}", a.name()),
            false,
        );
        return Plan::Now(RecipientDoc {
            status: "skipped",
            completed_at: now(),
            error: Some(error),
            ..pending(to)
        });
    }
    if let Some(outcome) = user.script.pop_front() {
        return Plan::Call(outcome);
    }
    match user.availability {
        None => Plan::Call(Outcome::sip(404)),
        Some(super::wire::Availability::Offline) => Plan::Call(Outcome::sip(480)),
        Some(_) => Plan::Call(Outcome::sip(200)),
    }
}
