//! The dedup index in the writer's memory: key hash → the first alert that had it, bounded in
//! time (the dedup window) and in size (`dedup_max_keys`, oldest evicted first).
//!
//! Keys arrive in acceptance order, so a FIFO of insertions is also an age order: eviction and
//! expiry both pop from its front. An entry of the FIFO whose key was taken again later (after
//! its window) no longer matches the map and is skipped.

use std::collections::{HashMap, VecDeque};

/// What the index holds for one key: the alert id and when it was accepted (Unix ms).
pub(super) type Seen = (u64, i64);

/// Bounded key → first-alert index.
pub(super) struct DedupIndex {
    map: HashMap<u128, Seen>,
    /// Insertion order: (key, alert id), oldest first.
    order: VecDeque<(u128, u64)>,
    max_keys: usize,
    /// Keys pushed out by the size bound since the last [`DedupIndex::take_evicted`].
    evicted: u64,
}

impl DedupIndex {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_keys: max_keys.max(1),
            evicted: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, key: &u128) -> Option<Seen> {
        self.map.get(key).copied()
    }

    /// Records `key` for alert `id`; returns what it replaced, for [`DedupIndex::restore`].
    pub(super) fn insert(&mut self, key: u128, seen: Seen) -> Option<Seen> {
        let before = self.map.insert(key, seen);
        self.order.push_back((key, seen.0));
        while self.map.len() > self.max_keys {
            if !self.pop_oldest() {
                break;
            }
            self.evicted += 1;
        }
        before
    }

    /// Takes back an insert of a commit that failed.
    pub(super) fn restore(&mut self, key: u128, before: Option<Seen>) {
        match before {
            Some(v) => {
                self.map.insert(key, v);
            }
            None => {
                self.map.remove(&key);
            }
        }
    }

    /// Drops the oldest live entry; false if there is none.
    fn pop_oldest(&mut self) -> bool {
        while let Some((key, id)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|&(live, _)| live == id) {
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    /// Drops entries accepted before `cutoff` (Unix ms), and gives memory back once the index
    /// has shrunk well below what it once held.
    pub(super) fn expire(&mut self, cutoff: i64) {
        while let Some(&(key, id)) = self.order.front() {
            match self.map.get(&key) {
                Some(&(live, at)) if live == id => {
                    if at >= cutoff {
                        break;
                    }
                    self.map.remove(&key);
                }
                // Stale: the key was evicted, expired or taken again since.
                _ => {}
            }
            self.order.pop_front();
        }
        if self.map.capacity() > 1024 && self.map.capacity() > 4 * self.map.len() {
            self.map.shrink_to_fit();
        }
        if self.order.capacity() > 1024 && self.order.capacity() > 4 * self.order.len() {
            self.order.shrink_to_fit();
        }
    }

    /// Every live key with what it holds, oldest first.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u128, Seen)> + '_ {
        self.order.iter().filter_map(|&(key, id)| {
            self.map
                .get(&key)
                .filter(|&&(live, _)| live == id)
                .map(|&seen| (key, seen))
        })
    }

    /// How many keys the size bound pushed out since the last call.
    pub(super) fn take_evicted(&mut self) -> u64 {
        std::mem::take(&mut self.evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_key_goes_first_when_full() {
        let mut d = DedupIndex::new(3);
        for (i, key) in [10u128, 11, 12, 13].into_iter().enumerate() {
            d.insert(key, (i as u64 + 1, i as i64));
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(&10), None, "the oldest key was evicted");
        assert_eq!(d.get(&13), Some((4, 3)));
        assert_eq!(d.take_evicted(), 1);
        assert_eq!(d.take_evicted(), 0);
    }

    #[test]
    fn a_key_taken_again_is_not_evicted_by_its_stale_fifo_entry() {
        let mut d = DedupIndex::new(2);
        d.insert(1, (1, 0));
        d.insert(2, (2, 0));
        // Key 1 is taken again after its window: its old FIFO entry is stale.
        d.insert(1, (3, 10));
        // Now full (keys 1 and 2); one more evicts key 2, the oldest live one.
        d.insert(4, (4, 11));
        assert_eq!(d.get(&2), None);
        assert_eq!(d.get(&1), Some((3, 10)));
        assert_eq!(d.get(&4), Some((4, 11)));
    }

    #[test]
    fn expiry_drops_old_keys_and_gives_memory_back() {
        let mut d = DedupIndex::new(1_000_000);
        for i in 0..100_000u64 {
            d.insert(u128::from(i), (i, i as i64));
        }
        let full = d.map.capacity();
        d.expire(99_990);
        assert_eq!(d.len(), 10);
        assert!(d.map.capacity() < full / 100, "{}", d.map.capacity());
        assert_eq!(d.get(&99_995), Some((99_995, 99_995)));
    }
}
