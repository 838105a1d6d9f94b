//! Per-recipient order: every (source, sink, user) has a *lane* of the alerts from that source
//! that still owe that user a message through that sink, in the order they joined (accept
//! order: alerts join when they are taken up, oldest first). Only an alert at the head of a lane
//! may send to that user, so one source's IMs to one recipient go out one at a time and in
//! accept order, and a crash can catch at most one per source in flight. Sources have lanes of
//! their own so that a flood from one cannot hold up another's alerts (issue 12 §3). An alert
//! leaves a lane once its record for that user is final; the next alert in the lane is then
//! woken.
//!
//! Only the send is gated: presence, holds, skips and expiry still apply to alerts behind the
//! head, so a queue of alerts to an offline user is held (and skipped) together, not one
//! `max_wait` after another.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::Notify;

#[derive(Default)]
struct Inner {
    /// source → sink → user → alert ids, head first.
    lanes: HashMap<String, HashMap<String, HashMap<String, VecDeque<u64>>>>,
    /// Alert id → the notifier its task waits on.
    wakers: HashMap<u64, Arc<Notify>>,
}

/// The lanes of every recipient with an unfinished alert.
#[derive(Default)]
pub struct Lanes {
    inner: Mutex<Inner>,
}

impl Lanes {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers alert `id` from `source` (its task woken through `waker`) and puts it at the
    /// back of the lane of each `(sink, user)` in `members`.
    pub fn enter<'a>(
        &self,
        id: u64,
        source: &str,
        waker: Arc<Notify>,
        members: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut inner = self.lock();
        inner.wakers.insert(id, waker);
        for (sink, user) in members {
            join(&mut inner, id, source, sink, user);
        }
    }

    /// Puts alert `id` from `source` at the back of the lane of `(sink, user)` (a recipient
    /// added later, by a fallback route).
    pub fn join(&self, id: u64, source: &str, sink: &str, user: &str) {
        join(&mut self.lock(), id, source, sink, user);
    }

    /// True if alert `id` from `source` may send to `user` through `sink` now: it heads that
    /// lane (or is not in it, which only a recipient never entered can be).
    pub fn is_head(&self, id: u64, source: &str, sink: &str, user: &str) -> bool {
        let inner = self.lock();
        inner
            .lanes
            .get(source)
            .and_then(|sinks| sinks.get(sink))
            .and_then(|users| users.get(user))
            .and_then(VecDeque::front)
            .is_none_or(|&head| head == id)
    }

    /// Takes alert `id` from `source` out of the lane of `(sink, user)`; if that makes another
    /// alert the head, wakes its task.
    pub fn leave(&self, id: u64, source: &str, sink: &str, user: &str) {
        let mut inner = self.lock();
        let Some(sinks) = inner.lanes.get_mut(source) else {
            return;
        };
        let Some(users) = sinks.get_mut(sink) else {
            return;
        };
        let Some(lane) = users.get_mut(user) else {
            return;
        };
        let next = if lane.front() == Some(&id) {
            lane.pop_front();
            lane.front().copied()
        } else {
            if let Some(at) = lane.iter().position(|&a| a == id) {
                lane.remove(at);
            }
            None
        };
        if lane.is_empty() {
            users.remove(user);
            if users.is_empty() {
                sinks.remove(sink);
                if sinks.is_empty() {
                    inner.lanes.remove(source);
                }
            }
        }
        if let Some(waker) = next.and_then(|n| inner.wakers.get(&n)) {
            waker.notify_one();
        }
    }

    /// Wakes the task of every alert taken up and not ended, so each runs a round now (a
    /// silence was created: alerts already queued are looked at again at once). A round sends
    /// only to recipients that are due, so waking early sends nothing early.
    pub fn wake_all(&self) {
        for waker in self.lock().wakers.values() {
            waker.notify_one();
        }
    }

    /// Wakes every alert behind the head of the lane of `(sink, user)` from `source` (what
    /// waits there is being folded into a digest and is to enroll in it).
    pub fn wake_behind(&self, source: &str, sink: &str, user: &str) {
        let inner = self.lock();
        let lane = inner
            .lanes
            .get(source)
            .and_then(|sinks| sinks.get(sink))
            .and_then(|users| users.get(user));
        for id in lane.into_iter().flatten().skip(1) {
            if let Some(waker) = inner.wakers.get(id) {
                waker.notify_one();
            }
        }
    }

    /// The notifier alert `id`'s task waits on.
    pub fn waker(&self, id: u64) -> Option<Arc<Notify>> {
        self.lock().wakers.get(&id).cloned()
    }

    /// Forgets alert `id`'s task (it ended).
    pub fn forget(&self, id: u64) {
        self.lock().wakers.remove(&id);
    }

    /// Recipients with a lane (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let inner = self.lock();
        inner
            .lanes
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }
}

fn join(inner: &mut Inner, id: u64, source: &str, sink: &str, user: &str) {
    let sinks = match inner.lanes.get_mut(source) {
        Some(sinks) => sinks,
        None => inner.lanes.entry(source.to_owned()).or_default(),
    };
    let users = match sinks.get_mut(sink) {
        Some(users) => users,
        None => sinks.entry(sink.to_owned()).or_default(),
    };
    match users.get_mut(user) {
        Some(lane) => lane.push_back(id),
        None => {
            users.insert(user.to_owned(), VecDeque::from([id]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_head_sends_and_leaving_wakes_the_next() {
        let lanes = Lanes::new();
        let (w1, w2, w3) = (
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
            Arc::new(Notify::new()),
        );
        lanes.enter(1, "mail", w1, [("lync", "a"), ("lync", "b")]);
        lanes.enter(2, "mail", Arc::clone(&w2), [("lync", "a")]);
        lanes.enter(3, "mail", Arc::clone(&w3), [("lync", "a"), ("ocs", "a")]);
        lanes.enter(4, "hook", Arc::new(Notify::new()), [("lync", "a")]);
        assert!(lanes.is_head(1, "mail", "lync", "a"));
        assert!(!lanes.is_head(2, "mail", "lync", "a"));
        assert!(!lanes.is_head(3, "mail", "lync", "a"));
        assert!(lanes.is_head(3, "mail", "ocs", "a"), "lanes are per sink");
        assert!(lanes.is_head(4, "hook", "lync", "a"), "and per source");
        assert!(lanes.is_head(9, "mail", "lync", "nobody"));

        // Leaving from the middle wakes nobody and keeps the order.
        lanes.leave(3, "mail", "lync", "a");
        lanes.leave(1, "mail", "lync", "a");
        assert!(lanes.is_head(2, "mail", "lync", "a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), w2.notified())
            .await
            .expect("the new head is woken");
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), w3.notified())
                .await
                .is_err(),
            "an alert that left is not woken"
        );
        lanes.leave(2, "mail", "lync", "a");
        lanes.leave(1, "mail", "lync", "b");
        lanes.leave(3, "mail", "ocs", "a");
        lanes.leave(4, "hook", "lync", "a");
        lanes.forget(1);
        assert_eq!(lanes.len(), 0, "empty lanes are dropped");
    }
}
