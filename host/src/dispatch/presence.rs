//! A short-lived cache of what each sink said about its users' presence, so a burst of alerts
//! to the same people asks the sink once.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{
    PresenceState,
    abi::SinkBox,
    abi_stable::std_types::{RResult, RString, RVec},
};

/// One sink's answers: user → (state, when asked).
type Answers = HashMap<String, (PresenceState, Instant)>;

/// Presence answers per (sink, user), valid for `ttl`.
#[derive(Default)]
pub struct PresenceCache {
    /// sink → user → (state, when asked).
    entries: Mutex<HashMap<String, Answers>>,
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
    /// them, if it failed) are left out: the caller treats them as unknown and tries to deliver.
    pub async fn get(
        &self,
        name: &str,
        sink: &SinkBox,
        users: Vec<String>,
        ttl: Duration,
        timeout: Duration,
    ) -> HashMap<String, PresenceState> {
        let mut out = HashMap::new();
        if users.is_empty() {
            return out;
        }
        if self.cached(name, &users, ttl, &mut out).is_empty() {
            return out;
        }
        let lock = {
            let mut f = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
            std::sync::Arc::clone(f.entry(name.to_owned()).or_default())
        };
        let _guard = lock.lock().await;
        let missing = self.cached(name, &users, ttl, &mut out);
        if missing.is_empty() {
            return out;
        }
        let ask: RVec<RString> = missing.iter().map(|u| RString::from(u.as_str())).collect();
        match tokio::time::timeout(timeout, sink.presence(ask)).await {
            Ok(RResult::ROk(list)) => {
                let now = Instant::now();
                let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                let of_sink = entries.entry(name.to_owned()).or_default();
                if of_sink.len() > 100_000 {
                    of_sink.retain(|_, (_, at)| at.elapsed() < ttl);
                }
                for p in list.iter() {
                    let user = p.user.to_string();
                    of_sink.insert(user.clone(), (p.state, now));
                    if missing.contains(&user) {
                        out.insert(user, p.state);
                    }
                }
            }
            Ok(RResult::RErr(e)) => {
                tracing::warn!(sink = name, kind = %e.kind, error = %e.message, "Presence query failed; delivering without it.");
            }
            Err(_) => tracing::warn!(
                sink = name,
                timeout_ms = timeout.as_millis() as u64,
                "Presence query timed out; delivering without it."
            ),
        }
        out
    }
}
