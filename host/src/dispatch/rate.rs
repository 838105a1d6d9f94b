//! The per-recipient rate limit (`per_recipient_per_minute`): when the messages of the last
//! minute went to each recipient. Recipients with nothing in the last minute are forgotten at
//! most a minute later, so memory follows the recipients messaged lately, not every recipient
//! ever messaged.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
};

/// The window the limit counts over.
const WINDOW_MS: i64 = 60_000;

#[derive(Debug, Default)]
struct Inner {
    /// Recipient → when its messages of the last minute went (Unix ms), oldest first.
    sent: HashMap<String, VecDeque<i64>>,
    /// When idle recipients were last dropped.
    pruned_ms: i64,
}

/// Messages per recipient over the last minute.
#[derive(Debug, Default)]
pub struct RecipientRate {
    inner: Mutex<Inner>,
}

impl RecipientRate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a message to `user` at `now` against `limit` per minute (0: no limit), or says
    /// when the next one may go.
    pub fn check(&self, user: &str, now: i64, limit: usize) -> Option<i64> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if now - inner.pruned_ms >= WINDOW_MS {
            inner.pruned_ms = now;
            inner
                .sent
                .retain(|_, times| times.back().is_some_and(|t| now - t < WINDOW_MS));
            inner.sent.shrink_to_fit();
        }
        if limit == 0 {
            return None;
        }
        let times = match inner.sent.get_mut(user) {
            Some(times) => times,
            None => inner.sent.entry(user.to_owned()).or_default(),
        };
        while times.front().is_some_and(|t| now - t >= WINDOW_MS) {
            times.pop_front();
        }
        if times.len() >= limit {
            return times.front().map(|t| t + WINDOW_MS);
        }
        times.push_back(now);
        None
    }

    /// How many recipients are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sent
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_minute_and_forgets_idle_recipients() {
        let r = RecipientRate::new();
        assert_eq!(r.check("sip:a@x", 1_000, 2), None);
        assert_eq!(r.check("sip:a@x", 2_000, 2), None);
        assert_eq!(r.check("sip:a@x", 3_000, 2), Some(61_000));
        assert_eq!(
            r.check("sip:a@x", 61_000, 2),
            None,
            "the first left the window"
        );
        for i in 0..10_000 {
            r.check(&format!("sip:u{i}@x"), 62_000, 2);
        }
        assert_eq!(r.len(), 10_001);
        // A minute after the last message to each of them, only the live ones remain.
        r.check("sip:live@x", 121_000, 2);
        assert_eq!(r.len(), 10_001, "only sip:a@x was idle for a minute");
        r.check("sip:live@x", 122_500, 2);
        assert_eq!(r.len(), 10_001, "pruned at most once a minute");
        r.check("sip:live@x", 181_001, 2);
        assert_eq!(
            r.len(),
            1,
            "only the recipient messaged in the last minute is kept"
        );
    }
}
