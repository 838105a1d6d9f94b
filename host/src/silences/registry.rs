//! [`Silences`]: every silence in memory with its compiled matcher, in front of the store.
//! Changes commit to the store before they show; the dispatcher asks [`Silences::silencing`]
//! at the start of each round of an alert.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use super::{
    KEEP_EXPIRED_MS, MAX_EXPIRED, MAX_LIVE_PATTERNS, MAX_SILENCES, NewSilence, Silence,
    SilenceError, SilenceState, SilenceStore,
};
use crate::{model::StoredAlert, router::Matcher};

/// The active silence an alert matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Silenced {
    pub id: u64,
    /// Until (Unix ms).
    pub ends_ms: i64,
}

struct Entry {
    silence: Silence,
    matcher: Matcher,
}

/// The silences of this host.
pub struct Silences {
    store: Arc<dyn SilenceStore>,
    entries: RwLock<BTreeMap<u64, Entry>>,
    /// One change at a time: the limit check, the commit and the insert go together.
    change: tokio::sync::Mutex<()>,
}

impl Silences {
    /// Loads every stored silence (see [`load`] for damaged ones).
    pub fn open(store: Arc<dyn SilenceStore>) -> Result<Self, SilenceError> {
        let entries = load(store.as_ref())?;
        tracing::info!(silences = entries.len(), "Silences loaded.");
        Ok(Self {
            store,
            entries: RwLock::new(entries),
            change: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-reads the store: silences other hosts made or expired in a shared store show here.
    pub async fn refresh(&self) -> Result<(), SilenceError> {
        let _one = self.change.lock().await;
        // A shared store waits for its database: not on the host's async threads.
        let store = Arc::clone(&self.store);
        let entries = tokio::task::spawn_blocking(move || load(store.as_ref()))
            .await
            .map_err(SilenceError::storage)??;
        *self.write() = entries;
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks `req` at `now`, stores it and puts it in force. At most [`MAX_SILENCES`] may be
    /// pending or active at once.
    pub async fn create(&self, req: &NewSilence, now: i64) -> Result<Silence, SilenceError> {
        let (draft, matcher) = req.check(now)?;
        let _one = self.change.lock().await;
        let (live, patterns) = self
            .read()
            .values()
            .filter(|e| e.silence.state(now) != SilenceState::Expired)
            .fold((0, 0), |(n, p), e| {
                (n + 1, p + e.silence.matchers.patterns())
            });
        if live >= MAX_SILENCES {
            return Err(SilenceError::TooMany {
                limit: MAX_SILENCES,
            });
        }
        let more = draft.matchers.patterns();
        if patterns + more > MAX_LIVE_PATTERNS {
            return Err(SilenceError::TooManyPatterns {
                live: patterns,
                more,
                limit: MAX_LIVE_PATTERNS,
            });
        }
        let silence = self.store.create(draft).await?;
        tracing::info!(silence = silence.id, author = %silence.author, matchers = %matcher.describe(), starts_ms = silence.starts_ms, ends_ms = silence.ends_ms, "Silence created.");
        self.write().insert(
            silence.id,
            Entry {
                silence: silence.clone(),
                matcher,
            },
        );
        Ok(silence)
    }

    /// Expires silence `id` at `now` (its end moves to now).
    pub async fn expire(&self, id: u64, now: i64) -> Result<Silence, SilenceError> {
        let _one = self.change.lock().await;
        let mut silence = self
            .read()
            .get(&id)
            .map(|e| e.silence.clone())
            .ok_or(SilenceError::Unknown(id))?;
        if silence.state(now) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired(id));
        }
        silence.ends_ms = now;
        silence.starts_ms = silence.starts_ms.min(now);
        silence.expired_ms = Some(now);
        self.store.save(&silence).await?;
        if let Some(e) = self.write().get_mut(&id) {
            e.silence = silence.clone();
        }
        tracing::info!(silence = id, "Silence expired.");
        Ok(silence)
    }

    /// Every silence, newest first.
    pub fn list(&self) -> Vec<Silence> {
        self.read()
            .values()
            .rev()
            .map(|e| e.silence.clone())
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<Silence> {
        self.read().get(&id).map(|e| e.silence.clone())
    }

    /// What the matchers of `silence` say in words (as the status page shows a route's).
    pub fn describe(&self, id: u64) -> Option<String> {
        self.read().get(&id).map(|e| e.matcher.describe())
    }

    /// The active silence `alert` matches at `now`, if any: of several, the one that ends
    /// last (then the oldest).
    pub fn silencing(&self, alert: &StoredAlert, now: i64) -> Option<Silenced> {
        self.read()
            .values()
            .filter(|e| e.silence.state(now) == SilenceState::Active && e.matcher.matches(alert))
            .map(|e| Silenced {
                id: e.silence.id,
                ends_ms: e.silence.ends_ms,
            })
            .max_by_key(|s| (s.ends_ms, std::cmp::Reverse(s.id)))
    }

    /// Forgets silences expired longer than [`KEEP_EXPIRED_MS`] ago, and the oldest expired
    /// ones beyond [`MAX_EXPIRED`]. Returns how many went.
    pub async fn prune(&self, now: i64) -> Result<usize, SilenceError> {
        let _one = self.change.lock().await;
        let mut expired: Vec<(i64, u64)> = self
            .read()
            .values()
            .filter(|e| e.silence.state(now) == SilenceState::Expired)
            .map(|e| (e.silence.ends_ms, e.silence.id))
            .collect();
        expired.sort_unstable();
        let over = expired.len().saturating_sub(MAX_EXPIRED);
        let gone: Vec<u64> = expired
            .iter()
            .enumerate()
            .filter(|&(i, &(ends, _))| i < over || now - ends > KEEP_EXPIRED_MS)
            .map(|(_, &(_, id))| id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        self.store.remove(gone.clone()).await?;
        let mut entries = self.write();
        for id in &gone {
            entries.remove(id);
        }
        tracing::debug!(pruned = gone.len(), "Expired silences pruned.");
        Ok(gone.len())
    }

    /// Prunes every `every` until the task is dropped; with a store shared between hosts,
    /// also re-reads it every [`super::REFRESH_EVERY`].
    pub async fn prune_every(self: Arc<Self>, every: Duration) {
        let shared = self.store.shared();
        let mut tick = tokio::time::interval(if shared {
            super::REFRESH_EVERY.min(every)
        } else {
            every
        });
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tick.tick().await;
            if shared && let Err(e) = self.refresh().await {
                tracing::warn!(error = %crate::error_chain(&e), "Could not re-read the shared silences; trying again later.");
            }
            if last_prune.is_some_and(|t| t.elapsed() < every) {
                continue;
            }
            last_prune = Some(tokio::time::Instant::now());
            if let Err(e) = self.prune(crate::model::now_ms()).await {
                tracing::warn!(error = %crate::error_chain(&e), "Could not prune expired silences; trying again later.");
            }
        }
    }
}

/// Every readable silence in `store` with its compiled matcher. A damaged record, or one whose
/// matchers no longer compile, is logged and left out (it stays in the store).
fn load(store: &dyn SilenceStore) -> Result<BTreeMap<u64, Entry>, SilenceError> {
    let (stored, damaged) = store.load()?;
    for e in &damaged {
        tracing::error!(error = %crate::error_chain(e), "A stored silence cannot be read; it is left out.");
    }
    let mut entries = BTreeMap::new();
    for silence in stored {
        match silence.matchers.compile() {
            Ok(matcher) => {
                entries.insert(silence.id, Entry { silence, matcher });
            }
            Err(e) => {
                tracing::error!(silence = silence.id, error = %e, "A stored silence's matchers do not compile; it is left out.");
            }
        }
    }
    Ok(entries)
}
