//! Replies (issue 14 §2): an inbound IM from a sink — find the incident it is about, check the
//! sender may act on it, apply it through the [`Engine`] (committed before we answer), and say
//! what to tell the sender (in their conversation) and the others paged for it.
//!
//! Which incident: the number given, else the incident this conversation belongs to, else the
//! sender's only open incident (several: ask for the number). Who may act: the people paged for
//! it, or a configured responder (`[incidents] responders`, expanded to users by the host).
//! A message the sink names with an `id` is applied once per (conversation, id).

use std::{
    collections::{BTreeSet, HashSet, VecDeque},
    sync::{Mutex, RwLock},
};

use super::{
    Engine, Incident, IncidentError, IncidentId,
    commands::{self, Command, USAGE},
};

/// How many (conversation, id) pairs are remembered for dedup.
const DEDUP_CAPACITY: usize = 4096;

/// An inbound message as the host got it (already checked and bounded by the kit's contract).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundReply {
    /// Sender SIP URI, lower-cased `sip:` form.
    pub user: String,
    pub text: String,
    pub conversation: String,
    /// The sender's display name, if the sink knows it.
    pub name: Option<String>,
    /// The sink's message id, for dedup.
    pub id: Option<String>,
}

impl InboundReply {
    fn who(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.user)
    }
}

/// A message to send: to `user`, in `conversation` if known (else the sink starts one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Say {
    pub user: String,
    pub conversation: Option<String>,
    pub text: String,
}

/// What handling a reply came to: the answer to the sender, and what to tell the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// The incident acted on, if any.
    pub incident: Option<IncidentId>,
    /// To the sender, in the conversation the reply came in.
    pub answer: Say,
    /// To the others paged for the incident (their own conversations where known).
    pub tell: Vec<Say>,
    /// The same (conversation, id) was handled before: nothing applied again, nothing to send.
    pub duplicate: bool,
}

/// The reply could not be recorded: the sink keeps it and offers it again.
#[derive(Debug, thiserror::Error)]
#[error("the reply was not recorded")]
pub struct ReplyError(#[source] pub IncidentError);

/// The (conversation, id) pairs handled, oldest first in the queue.
type Seen = (HashSet<(String, String)>, VecDeque<(String, String)>);

/// Handles replies against one engine.
pub struct Replies {
    engine: Engine,
    responders: RwLock<BTreeSet<String>>,
    seen: Mutex<Seen>,
    /// (incident, by) of changes this side is applying: the event watcher leaves them to us.
    acting: Mutex<Vec<(IncidentId, String)>>,
    /// Makes the silences of `silence 2h` replies, once the host has silences.
    silencer: std::sync::OnceLock<std::sync::Arc<dyn crate::silences::like::SilenceLike>>,
}

impl Replies {
    /// `responders`: users (SIP URIs) who may act on any incident.
    pub fn new(engine: Engine, responders: impl IntoIterator<Item = String>) -> Self {
        Self {
            engine,
            responders: RwLock::new(lowered(responders)),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
            acting: Mutex::new(Vec::new()),
            silencer: std::sync::OnceLock::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Replaces the responders (a reload).
    pub fn set_responders(&self, responders: impl IntoIterator<Item = String>) {
        *self.responders.write().unwrap_or_else(|e| e.into_inner()) = lowered(responders);
    }

    fn is_responder(&self, user: &str) -> bool {
        self.responders
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(user)
    }

    /// Applies one reply. `Ok` only once its effect is committed; `Err` = not recorded.
    pub async fn handle(&self, msg: &InboundReply) -> Result<Handled, ReplyError> {
        let key = msg
            .id
            .as_ref()
            .map(|id| (msg.conversation.clone(), id.clone()));
        if let Some(k) = &key
            && self.was_seen(k)
        {
            tracing::debug!(user = %msg.user, conversation = %msg.conversation, "reply seen before");
            return Ok(Handled {
                incident: None,
                answer: self.say(msg, String::new()),
                tell: Vec::new(),
                duplicate: true,
            });
        }
        let out = self.apply(msg).await?;
        if let Some(k) = key {
            self.remember(k);
        }
        Ok(out)
    }

    fn acting_mark(&self, id: IncidentId, by: &str, on: bool) {
        let mut a = self.acting.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            a.push((id, by.to_owned()));
            if a.len() > 1024 {
                a.remove(0);
            }
        } else if let Some(i) = a.iter().position(|(i, b)| *i == id && b == by) {
            a.remove(i);
        }
    }

    /// Whether an ack/resolve event (incident, by) came from a reply (whose people are told by
    /// the reply itself); takes the mark.
    pub fn take_acting(&self, id: IncidentId, by: &str) -> bool {
        let mut a = self.acting.lock().unwrap_or_else(|e| e.into_inner());
        match a.iter().position(|(i, b)| *i == id && b == by) {
            Some(i) => {
                a.remove(i);
                true
            }
            None => false,
        }
    }

    /// What to tell everyone paged for `id` about a change made elsewhere (a resolved alert
    /// from its source, the admin API), in their conversations where known.
    pub async fn news_for_all(&self, id: IncidentId, text: &str) -> Vec<Say> {
        let Some(inc) = self.engine.get(id).await else {
            return Vec::new();
        };
        inc.paged_users()
            .into_iter()
            .map(|u| Say {
                conversation: inc.conversations.get(&u).cloned(),
                user: u,
                text: text.to_owned(),
            })
            .collect()
    }

    fn was_seen(&self, k: &(String, String)) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.0.contains(k)
    }

    fn remember(&self, k: (String, String)) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0.insert(k.clone()) {
            seen.1.push_back(k);
            while seen.1.len() > DEDUP_CAPACITY {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
        }
    }

    fn say(&self, msg: &InboundReply, text: String) -> Say {
        Say {
            user: msg.user.clone(),
            conversation: Some(msg.conversation.clone()),
            text,
        }
    }

    fn answer(&self, msg: &InboundReply, incident: Option<IncidentId>, text: String) -> Handled {
        Handled {
            incident,
            answer: self.say(msg, text),
            tell: Vec::new(),
            duplicate: false,
        }
    }

    async fn apply(&self, msg: &InboundReply) -> Result<Handled, ReplyError> {
        let cmd = commands::parse(&msg.text);
        match cmd {
            Command::Help | Command::Usage => return Ok(self.answer(msg, None, USAGE.into())),
            Command::Status => return Ok(self.answer(msg, None, self.status(msg).await)),
            Command::Ack(_) | Command::Resolve(_) | Command::Escalate(_) => {}
            Command::Silence(..) => {}
        }
        let inc = match self.find(msg, cmd.id()).await {
            Ok(inc) => inc,
            Err(text) => return Ok(self.answer(msg, cmd.id(), text)),
        };
        let id = inc.id;
        if !inc.was_paged(&msg.user) && !self.is_responder(&msg.user) {
            tracing::info!(incident = id.0, user = %msg.user, "reply refused: not paged for it");
            return Ok(self.answer(
                msg,
                Some(id),
                format!("{id}: you were not paged for it, so you cannot change it"),
            ));
        }
        let who = msg.who().to_owned();
        if let Command::Silence(_, duration_ms) = cmd {
            return self.silence(msg, &inc, &who, duration_ms).await;
        }
        self.acting_mark(id, &who, true);
        let result = match cmd {
            Command::Ack(_) => self.engine.ack(id, &who).await.map(|(inc, changed)| {
                if changed {
                    (
                        inc,
                        Outcome::News(format!("{id} acknowledged by {who} — escalation stopped")),
                    )
                } else {
                    let by = inc
                        .acked
                        .as_ref()
                        .map_or("someone", |m| m.by.as_str())
                        .to_owned();
                    (
                        inc,
                        Outcome::Quiet(format!("{id} was already acknowledged by {by}")),
                    )
                }
            }),
            Command::Resolve(_) => self
                .engine
                .resolve(id, &who)
                .await
                .map(|inc| (inc, Outcome::News(format!("{id} resolved by {who}")))),
            _ => self
                .engine
                .escalate_now(id, &who)
                .await
                .map(|(inc, paged)| {
                    if paged {
                        let level = inc.level();
                        (
                            inc,
                            Outcome::News(format!("{id} escalated by {who} — level {level} paged")),
                        )
                    } else {
                        (
                            inc,
                            Outcome::Quiet(format!("{id}: every level was paged already")),
                        )
                    }
                }),
        };
        // An ack or resolve that changed the incident emitted an event the watcher takes (and
        // leaves to us); anything else emitted none of those.
        let emitted = matches!(&result, Ok((_, Outcome::News(_))))
            && matches!(cmd, Command::Ack(_) | Command::Resolve(_));
        if !emitted {
            self.acting_mark(id, &who, false);
        }
        let (inc, news) = match result {
            Ok(r) => r,
            Err(IncidentError::Unknown(id)) => {
                return Ok(self.answer(msg, Some(id), format!("no open incident {}", id.0)));
            }
            Err(IncidentError::AlreadyResolved(id)) => {
                return Ok(self.answer(msg, Some(id), format!("{id} is already resolved")));
            }
            Err(e) => return Err(ReplyError(e)),
        };
        // The sender's conversation now belongs to this incident (a later bare `resolve`).
        self.engine
            .set_conversation(id, &msg.user, &msg.conversation)
            .await
            .map_err(ReplyError)?;
        let news = match news {
            Outcome::News(t) => t,
            Outcome::Quiet(t) => return Ok(self.answer(msg, Some(id), t)),
        };
        tracing::info!(incident = id.0, user = %msg.user, news = %news, "reply applied");
        Ok(self.news(msg, &inc, news))
    }

    /// `news` as the sender's answer, and for everyone else paged for `inc` in their own
    /// conversation.
    pub(super) fn news(&self, msg: &InboundReply, inc: &Incident, news: String) -> Handled {
        let tell = inc
            .paged_users()
            .into_iter()
            .filter(|u| *u != msg.user)
            .map(|u| Say {
                conversation: inc.conversations.get(&u).cloned(),
                user: u,
                text: news.clone(),
            })
            .collect();
        Handled {
            incident: Some(inc.id),
            answer: self.say(msg, news),
            tell,
            duplicate: false,
        }
    }

    /// The incident a reply is about, or the answer saying why there is none.
    async fn find(&self, msg: &InboundReply, id: Option<IncidentId>) -> Result<Incident, String> {
        if let Some(id) = id {
            return match self.engine.get(id).await {
                Some(inc) => Ok(inc),
                None => Err(format!("no open incident {}", id.0)),
            };
        }
        let open = self.engine.open_incidents().await;
        if let Some(inc) = open
            .into_iter()
            .find(|i| i.conversations.get(&msg.user) == Some(&msg.conversation))
        {
            return Ok(inc);
        }
        let mut mine = self.engine.open_for_user(&msg.user).await;
        match mine.len() {
            0 => Err("you have no open incident — say `ack N` with its number".into()),
            1 => Ok(mine.remove(0)),
            _ => Err(format!(
                "you have several open incidents ({}) — say which, e.g. `ack {}`",
                list_ids(&mine),
                mine[0].id.0
            )),
        }
    }

    async fn status(&self, msg: &InboundReply) -> String {
        let mine = self.engine.open_for_user(&msg.user).await;
        if mine.is_empty() {
            return "you have no open incident".into();
        }
        let lines: Vec<String> = mine
            .iter()
            .map(|i| {
                format!(
                    "{} {} — {}, level {}",
                    i.id,
                    i.title,
                    i.state.name(),
                    i.level()
                )
            })
            .collect();
        lines.join("\n")
    }
}

fn lowered(users: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    users.into_iter().map(|u| u.to_ascii_lowercase()).collect()
}

fn list_ids(incs: &[Incident]) -> String {
    incs.iter()
        .map(|i| i.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an applied command came to.
enum Outcome {
    /// A change: told to the sender and the others paged.
    News(String),
    /// No change: told to the sender only.
    Quiet(String),
}

#[path = "reply_silence.rs"]
mod silence;

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
