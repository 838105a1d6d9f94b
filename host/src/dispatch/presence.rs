//! A short-lived cache of what each sink said about its users' presence, so a burst of alerts
//! to the same people asks the sink once; and what a user whose presence could not be had
//! counts as (the route's `offline.unknown`).

use std::{
    collections::{HashMap, HashSet},
    ops::Deref,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{ErrorKind, PresenceState};
// tokio's instant: the same as std's in service, and paused with the clock in tests.
use tokio::time::Instant;

use super::port::SinkPort;
use crate::router::{Router, UnknownPresence};

/// What one presence look-up learned: the state of each user the sink told about, and why the
/// others could not be had.
#[derive(Debug, Default)]
pub struct Answers {
    states: HashMap<String, PresenceState>,
    /// The sink's error or the time-out, when the call failed.
    failure: Option<Unheard>,
}

/// Why a user's presence could not be had, and whether asking again may help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unheard {
    pub why: String,
    /// The call timed out, or failed with a transient error, or the sink left the user out;
    /// false for a permanent or config error (a refused batch, a rejected secret).
    pub transient: bool,
}

impl Deref for Answers {
    type Target = HashMap<String, PresenceState>;

    fn deref(&self) -> &Self::Target {
        &self.states
    }
}

impl Answers {
    /// Why `user`'s presence could not be had, or `None` if the sink told it (as any state,
    /// `unknown` included: the sink asked and its server had no state to give).
    pub fn unheard(&self, user: &str) -> Option<Unheard> {
        if self.states.contains_key(user) {
            return None;
        }
        Some(self.failure.clone().unwrap_or_else(|| Unheard {
            why: "the sink did not report this user".to_owned(),
            transient: true,
        }))
    }
}

/// True if route `route` counts a recipient whose presence could not be had as not reachable
/// (`offline.unknown = "offline"`, the default), so its offline policy applies; false if it
/// delivers to them (`"deliver"`).
pub fn unknown_is_offline(router: &Router, route: &str) -> bool {
    router
        .route(route)
        .is_none_or(|r| r.unknown_presence == UnknownPresence::Offline)
}

/// One sink's answers: user → (state, when asked).
type Cached = HashMap<String, (PresenceState, Instant)>;

/// Presence answers per (sink, user), valid for `ttl`.
#[derive(Default)]
pub struct PresenceCache {
    /// sink → user → (state, when asked).
    entries: Mutex<HashMap<String, Cached>>,
    /// One fetch per sink at a time; the others then find the cache filled.
    fetching: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl PresenceCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn cached(
        &self,
        sink: &str,
        users: &[String],
        ttl: Duration,
        out: &mut HashMap<String, PresenceState>,
    ) -> Vec<String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let of_sink = entries.get(sink);
        let mut missing = Vec::new();
        for u in users {
            match of_sink.and_then(|e| e.get(u)) {
                Some((state, at)) if at.elapsed() < ttl => {
                    out.insert(u.clone(), *state);
                }
                _ => missing.push(u.clone()),
            }
        }
        missing
    }

    /// The presence of `users` through `sink`. Users the sink could not tell about (or all of
    /// them, if it failed) are left out, with the reason: [`Answers::unheard`].
    pub async fn get(
        &self,
        name: &str,
        sink: &dyn SinkPort,
        users: Vec<String>,
        ttl: Duration,
        timeout: Duration,
    ) -> Answers {
        let mut answers = Answers::default();
        let out = &mut answers.states;
        if users.is_empty() {
            return answers;
        }
        if self.cached(name, &users, ttl, out).is_empty() {
            return answers;
        }
        let lock = {
            let mut f = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
            std::sync::Arc::clone(f.entry(name.to_owned()).or_default())
        };
        let _guard = lock.lock().await;
        let missing = self.cached(name, &users, ttl, out);
        if missing.is_empty() {
            return answers;
        }
        match sink.presence(&missing, timeout).await {
            Ok(list) => {
                let now = Instant::now();
                let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                let of_sink = entries.entry(name.to_owned()).or_default();
                if of_sink.len() > 100_000 {
                    of_sink.retain(|_, (_, at)| at.elapsed() < ttl);
                }
                // A set, not a scan per answer: linear in the recipients asked about.
                let wanted: HashSet<&str> = missing.iter().map(String::as_str).collect();
                for p in list {
                    if wanted.contains(p.user.as_str()) {
                        out.insert(p.user.clone(), p.state);
                    }
                    of_sink.insert(p.user, (p.state, now));
                }
            }
            Err(e) => {
                // A time-out is the handle's TRANSIENT error, with its own message.
                tracing::warn!(sink = name, kind = %e.kind, error = %e.message, "Presence query failed; each route's offline.unknown decides.");
                answers.failure = Some(Unheard {
                    why: format!("presence query failed: {}", e.message),
                    transient: !matches!(e.kind, ErrorKind::PERMANENT | ErrorKind::CONFIG),
                });
            }
        }
        answers
    }
}
