//! Resolves that arrive before their incident opened: a resolved alert whose firing alert is
//! still in flight (accepted and queued, not yet routed to the engine) finds no incident. It is
//! remembered here (dedup key → when, by whom), bounded in count and kept [`KEEP_MS`]; the
//! firing alert accepted before it then opens its incident already resolved and pages nobody.
//! A firing alert accepted after it is a new problem and opens normally.
//!
//! Pure bookkeeping: the engine commits each change to the store before applying it here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How long a resolve that found no incident is remembered (10 minutes).
pub const KEEP_MS: i64 = 10 * 60 * 1000;
/// At most this many are remembered; beyond it the oldest is forgotten.
pub const MAX: usize = 1024;

/// A resolve that found no incident with its dedup key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyResolve {
    pub key: String,
    /// The source that resolved it ("Alertmanager").
    pub by: String,
    /// Unix ms (engine clock) the resolve arrived.
    pub at_ms: i64,
}

impl EarlyResolve {
    fn live(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.at_ms) < KEEP_MS
    }
}

/// What a change does to the stored records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub put: Option<EarlyResolve>,
    pub delete: Vec<String>,
}

/// The remembered resolves, by dedup key.
#[derive(Debug, Default)]
pub struct EarlyResolves {
    map: BTreeMap<String, EarlyResolve>,
}

impl EarlyResolves {
    pub fn new(list: Vec<EarlyResolve>) -> Self {
        Self {
            map: list.into_iter().map(|r| (r.key.clone(), r)).collect(),
        }
    }

    /// The change that remembers `r`: it replaces an older one with its key, and forgets the
    /// expired ones and, past [`MAX`], the oldest.
    pub fn remember(&self, r: EarlyResolve, now_ms: i64) -> Change {
        let mut delete: Vec<String> = self
            .map
            .values()
            .filter(|e| !e.live(now_ms) && e.key != r.key)
            .map(|e| e.key.clone())
            .collect();
        let kept = self.map.len() - delete.len() + usize::from(!self.map.contains_key(&r.key));
        if kept > MAX {
            let mut live: Vec<&EarlyResolve> = self
                .map
                .values()
                .filter(|e| e.live(now_ms) && e.key != r.key)
                .collect();
            live.sort_by_key(|e| e.at_ms);
            delete.extend(live.iter().take(kept - MAX).map(|e| e.key.clone()));
        }
        Change {
            put: Some(r),
            delete,
        }
    }

    /// For a firing alert with dedup key `key` accepted at `accepted_ms`: the remembered
    /// resolve that applies to it (arrived at or after its acceptance, not expired), and the
    /// change that consumes the remembered one (applied or stale).
    pub fn take(&self, key: &str, accepted_ms: i64, now_ms: i64) -> (Option<EarlyResolve>, Change) {
        let Some(r) = self.map.get(key) else {
            return (None, Change::default());
        };
        let applies = r.live(now_ms) && r.at_ms >= accepted_ms;
        let change = Change {
            put: None,
            delete: vec![key.to_owned()],
        };
        (applies.then(|| r.clone()), change)
    }

    /// Applies a change the store committed.
    pub fn apply(&mut self, change: Change) {
        for k in &change.delete {
            self.map.remove(k);
        }
        if let Some(r) = change.put {
            self.map.insert(r.key.clone(), r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: &str, at_ms: i64) -> EarlyResolve {
        EarlyResolve {
            key: key.into(),
            by: "Alertmanager".into(),
            at_ms,
        }
    }

    #[test]
    fn bounded_in_count_and_time_and_consumed_once() {
        let mut m = EarlyResolves::default();
        for i in 0..MAX as i64 + 5 {
            let c = m.remember(r(&format!("k{i}"), i), i);
            m.apply(c);
        }
        assert_eq!(m.map.len(), MAX);
        assert!(m.map.contains_key(&format!("k{}", MAX + 4)));
        assert!(!m.map.contains_key("k4"), "the oldest are forgotten");
        // Expired ones go when another is remembered.
        let c = m.remember(r("new", KEEP_MS + 10_000), KEEP_MS + 10_000);
        assert_eq!(c.delete.len(), MAX);
        m.apply(c);
        assert_eq!(m.map.len(), 1);
        // Applies to a firing alert accepted before it, not after; consumed either way.
        let now = KEEP_MS + 10_000;
        assert_eq!(m.take("new", now - 1, now).0, Some(r("new", now)));
        assert_eq!(m.take("new", now + 1, now + 2).0, None);
        assert_eq!(m.take("new", now - 1, now + KEEP_MS).0, None, "expired");
        let (_, c) = m.take("new", now + 1, now + 2);
        m.apply(c);
        assert_eq!(m.take("new", now - 1, now).0, None);
        assert_eq!(m.map.len(), 0);
    }
}
