//! Conversations and inbound messages (§4.5–§4.8): the calls the simulated bridge keeps open
//! after a delivered page, what users say in them or in conversations they start, the bounded
//! buffer of unacknowledged messages the client long-polls, and answers into a conversation.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use serde::Serialize;

use super::{
    state::State,
    wire::{InboundMessage, now_unix, rfc3339},
};

/// Largest text a user can say (the bridge cuts longer, §4.5).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// One line said in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// `bridge` (the bot) or the user's URI.
    pub from: String,
    pub text: String,
    pub at: String,
}

/// One conversation (an `InstantMessagingCall` with one user).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub id: String,
    pub user: String,
    /// Who started it: `bridge` (a page) or `user` (an incoming call).
    pub started_by: &'static str,
    /// False once ended (the user closed the window, or `POST /control/conversations/{id}/end`).
    pub open: bool,
    pub lines: Vec<Line>,
}

/// Why an answer into a conversation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// Unknown, ended, or with someone else: `404 conversation_gone`.
    Gone,
}

/// Why an ack was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckError {
    /// `up_to` is past every cursor handed out.
    Ahead { last: u64 },
}

/// Conversations and the inbound buffer.
#[derive(Debug)]
pub struct Talk {
    pub supported: bool,
    pub max_pending: usize,
    pub conversations: BTreeMap<String, Conversation>,
    pub pending: VecDeque<InboundMessage>,
    /// The last cursor handed to a message (0: none yet).
    pub last_cursor: u64,
    next_conversation: u64,
    /// Idempotency store of answers: key → (body hash, answer document).
    pub answers: HashMap<String, (Vec<u8>, serde_json::Value)>,
}

impl Talk {
    pub fn new(supported: bool, max_pending: usize) -> Self {
        Self {
            supported,
            max_pending: max_pending.max(1),
            conversations: BTreeMap::new(),
            pending: VecDeque::new(),
            last_cursor: 0,
            next_conversation: 1,
            answers: HashMap::new(),
        }
    }

    /// Opens a conversation with `user` whose first line is `text` said by `by`; its id.
    pub fn open(&mut self, user: &str, by: &str, text: &str, at: &str) -> String {
        let id = format!(
            "c_{:010}_{:04x}",
            self.next_conversation,
            rand::random::<u16>()
        );
        self.next_conversation += 1;
        let started_by = if by == "bridge" { "bridge" } else { "user" };
        self.conversations.insert(
            id.clone(),
            Conversation {
                id: id.clone(),
                user: user.to_owned(),
                started_by,
                open: true,
                lines: vec![Line {
                    from: by.to_owned(),
                    text: text.to_owned(),
                    at: at.to_owned(),
                }],
            },
        );
        id
    }

    /// The open conversation `id` with `user` (ignoring ASCII case), if any.
    pub fn open_with(&mut self, id: &str, user: &str) -> Option<&mut Conversation> {
        self.conversations
            .get_mut(id)
            .filter(|c| c.open && c.user.eq_ignore_ascii_case(user))
    }
}

impl State {
    /// `user` says `text`: in conversation `conversation` if given (it must be open and with
    /// `user`), else in a new one when `new`, else in the user's latest open conversation or a
    /// new one. Queues the inbound message (dropping the oldest past the bound) and wakes long
    /// polls. `None` if the named conversation is gone.
    pub fn user_says(
        &self,
        user: &str,
        text: &str,
        name: Option<&str>,
        conversation: Option<&str>,
        new: bool,
    ) -> Option<InboundMessage> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let talk = &mut inner.talk;
        let at = rfc3339(now_unix());
        let mut text = text.to_owned();
        if text.len() > MAX_TEXT_BYTES {
            const MARK: &str = "\n[truncated]";
            let mut cut = MAX_TEXT_BYTES - MARK.len();
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(MARK);
        }
        let latest = || {
            talk.conversations
                .values()
                .rev()
                .find(|c| c.open && c.user.eq_ignore_ascii_case(user))
                .map(|c| c.id.clone())
        };
        let existing = match conversation {
            Some(id) => Some(talk.open_with(id, user)?.id.clone()),
            None if new => None,
            None => latest(),
        };
        let (id, kind) = match existing {
            Some(id) => {
                let c = talk.conversations.get_mut(&id)?;
                c.lines.push(Line {
                    from: user.to_owned(),
                    text: text.clone(),
                    at: at.clone(),
                });
                let kind = if c.started_by == "bridge" {
                    "reply"
                } else {
                    "new"
                };
                (id, kind)
            }
            None => (talk.open(user, user, &text, &at), "new"),
        };
        talk.last_cursor += 1;
        let message = InboundMessage {
            cursor: talk.last_cursor,
            id: format!("in_{:010}", talk.last_cursor),
            from: user.to_owned(),
            name: name.map(str::to_owned),
            text,
            conversation: id,
            kind,
            received_at: at,
        };
        talk.pending.push_back(message.clone());
        while talk.pending.len() > talk.max_pending {
            talk.pending.pop_front();
            inner.counters.inbound_dropped += 1;
        }
        drop(guard);
        self.arrived.notify_waiters();
        Some(message)
    }

    /// Unacknowledged messages after `after`, oldest first, at most `limit`; waits up to `wait`
    /// for one when there is none.
    pub async fn inbound(&self, after: u64, limit: usize, wait: Duration) -> Vec<InboundMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = self.arrived.notified();
            let found: Vec<InboundMessage> = self
                .lock()
                .talk
                .pending
                .iter()
                .filter(|m| m.cursor > after)
                .take(limit)
                .cloned()
                .collect();
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Acknowledges every message up to cursor `up_to`; how many were still pending.
    pub fn ack(&self, up_to: u64) -> Result<usize, AckError> {
        let mut inner = self.lock();
        let last = inner.talk.last_cursor;
        if up_to > last {
            return Err(AckError::Ahead { last });
        }
        let before = inner.talk.pending.len();
        inner.talk.pending.retain(|m| m.cursor > up_to);
        let acked = before - inner.talk.pending.len();
        inner.counters.inbound_acked += acked as u64;
        Ok(acked)
    }

    /// The bridge says `text` to `to` in open conversation `id`.
    pub fn say(&self, id: &str, to: &str, text: &str) -> Result<(), Gone> {
        let mut inner = self.lock();
        let at = rfc3339(now_unix());
        let Some(c) = inner.talk.open_with(id, to) else {
            inner.counters.conversations_gone += 1;
            return Err(Gone::Gone);
        };
        c.lines.push(Line {
            from: "bridge".to_owned(),
            text: text.to_owned(),
            at,
        });
        inner.counters.conversation_sends += 1;
        Ok(())
    }

    /// Ends conversation `id` (the user closed the window); false if unknown.
    pub fn end_conversation(&self, id: &str) -> bool {
        match self.lock().talk.conversations.get_mut(id) {
            Some(c) => {
                c.open = false;
                true
            }
            None => false,
        }
    }

    /// Every conversation with `user` (ignoring ASCII case), oldest first.
    pub fn conversations_of(&self, user: &str) -> Vec<Conversation> {
        self.lock()
            .talk
            .conversations
            .values()
            .filter(|c| c.user.eq_ignore_ascii_case(user))
            .cloned()
            .collect()
    }

    /// Every conversation, oldest first.
    pub fn conversations(&self) -> Vec<Conversation> {
        self.lock().talk.conversations.values().cloned().collect()
    }

    /// Unacknowledged inbound messages, oldest first.
    pub fn pending_inbound(&self) -> Vec<InboundMessage> {
        self.lock().talk.pending.iter().cloned().collect()
    }

    /// Turns inbound support on or off while running.
    pub fn set_inbound(&self, supported: bool) {
        self.lock().talk.supported = supported;
    }

    pub fn inbound_supported(&self) -> bool {
        self.lock().talk.supported
    }
}
