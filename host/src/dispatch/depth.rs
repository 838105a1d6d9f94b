//! Queue depth per source: what `max_queue_depth` and each source's share of it (`[[source]]
//! max_queued`) are checked against.
//!
//! A submit *reserves* a place before its alert goes to the queue, so the many submits of one
//! batch that are in flight together cannot all pass the check and overshoot it; the place is
//! given back when the submit is answered. A committed alert holds a place of its own from the
//! commit until it finishes. Between the commit and the answer an alert holds both — for a
//! moment the count errs high, never low, so the limits hold. One source filling its share is
//! refused; the others keep theirs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

/// Why a submit was refused for lack of room.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("queue full ({depth} alerts waiting)")]
    Total { depth: usize, limit: usize },
    #[error(
        "source `{name}` has {depth} alerts waiting, its share of the queue (max_queued {limit})"
    )]
    Share {
        name: String,
        depth: usize,
        limit: usize,
    },
}

/// Places taken by one source, or by all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    /// Submits not yet answered.
    pending: usize,
    /// Committed alerts not yet finished.
    queued: usize,
}

impl Count {
    fn depth(self) -> usize {
        self.pending + self.queued
    }
}

#[derive(Debug, Default)]
struct State {
    limit: usize,
    /// Source → its share; a source without one is held by `limit` only.
    shares: HashMap<String, usize>,
    counts: HashMap<String, Count>,
    total: Count,
}

/// The depth ledger shared by ingest and the dispatcher.
#[derive(Debug, Default)]
pub struct Depth {
    state: Mutex<State>,
}

/// A place reserved for one submit; dropping it gives the place back.
#[derive(Debug)]
pub struct Reservation {
    depth: Arc<Depth>,
    source: Arc<str>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.depth.with(&self.source, |c| {
            c.pending = c.pending.saturating_sub(1);
        });
    }
}

impl Depth {
    /// A ledger with `limit` places in all and the given shares.
    pub fn new(limit: usize, shares: impl IntoIterator<Item = (String, usize)>) -> Self {
        let depth = Self::default();
        depth.set_limits(limit, shares);
        depth
    }

    /// Puts new limits in force (a reload); places already taken stay taken.
    pub fn set_limits(&self, limit: usize, shares: impl IntoIterator<Item = (String, usize)>) {
        let mut s = self.lock();
        s.limit = limit;
        s.shares = shares.into_iter().collect();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `f` to `source`'s count and the total alike.
    fn with(&self, source: &str, f: impl Fn(&mut Count)) {
        let mut s = self.lock();
        f(&mut s.total);
        match s.counts.get_mut(source) {
            Some(c) => f(c),
            None => {
                let mut c = Count::default();
                f(&mut c);
                s.counts.insert(source.to_owned(), c);
            }
        }
    }

    /// Reserves a place for one submit from `source`, or says why there is none.
    /// No allocation once `source` has a count: this runs for every submit.
    pub fn reserve(self: &Arc<Self>, source: &Arc<str>) -> Result<Reservation, Full> {
        let mut s = self.lock();
        let total = s.total.depth();
        if total >= s.limit {
            return Err(Full::Total {
                depth: total,
                limit: s.limit,
            });
        }
        let mine = s.counts.get(&**source).copied().unwrap_or_default().depth();
        if let Some(&share) = s.shares.get(&**source)
            && mine >= share
        {
            return Err(Full::Share {
                name: source.to_string(),
                depth: mine,
                limit: share,
            });
        }
        // Under the same lock as the check: a batch in flight cannot overshoot.
        s.total.pending += 1;
        match s.counts.get_mut(&**source) {
            Some(c) => c.pending += 1,
            None => {
                let c = Count {
                    pending: 1,
                    ..Count::default()
                };
                s.counts.insert(source.to_string(), c);
            }
        }
        drop(s);
        Ok(Reservation {
            depth: Arc::clone(self),
            source: Arc::clone(source),
        })
    }

    /// An alert from `source` is committed (or resumed at start) and waits for its outcomes.
    pub fn queued(&self, source: &str) {
        self.with(source, |c| c.queued += 1);
    }

    /// An alert from `source` has finished.
    pub fn finished(&self, source: &str) {
        self.with(source, |c| c.queued = c.queued.saturating_sub(1));
    }

    /// Places taken by `source` (submits in flight and unfinished alerts).
    pub fn of(&self, source: &str) -> usize {
        self.lock()
            .counts
            .get(source)
            .copied()
            .unwrap_or_default()
            .depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_hold_places_until_answered_and_shares_are_separate() {
        let d = Arc::new(Depth::new(
            5,
            [("hook".to_owned(), 3), ("mail".to_owned(), 2)],
        ));
        let (hook, admin_name): (Arc<str>, Arc<str>) = ("hook".into(), "admin".into());
        let batch: Vec<_> = (0..3).map(|_| d.reserve(&hook).unwrap()).collect();
        assert_eq!(
            d.reserve(&hook).unwrap_err(),
            Full::Share {
                name: "hook".into(),
                depth: 3,
                limit: 3
            },
            "a batch in flight cannot overshoot its share"
        );
        let mail = d
            .reserve(&"mail".into())
            .expect("the other source keeps its share");
        // Commits land before the answers: the count errs high for a moment.
        for _ in 0..3 {
            d.queued("hook");
        }
        assert_eq!(d.of("hook"), 6);
        drop(batch);
        assert_eq!(d.of("hook"), 3);
        d.queued("mail");
        drop(mail);
        let admin = d
            .reserve(&admin_name)
            .expect("a source without a share has the rest");
        assert_eq!(
            d.reserve(&admin_name).unwrap_err(),
            Full::Total { depth: 5, limit: 5 }
        );
        drop(admin);
        d.finished("hook");
        assert_eq!(d.of("hook"), 2);
        assert!(d.reserve(&hook).is_ok(), "a finished alert frees its place");
    }
}
