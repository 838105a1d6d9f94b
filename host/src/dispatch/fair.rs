//! A sink's delivery slots (`sink_concurrency`), handed out fairly between sources: when
//! deliveries wait for a slot, a freed one goes to the next source in turn, so a flood from one
//! source does not make another's alerts wait behind all of it.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;

#[derive(Debug)]
struct State {
    free: usize,
    /// Source → deliveries waiting, oldest first.
    waiting: BTreeMap<String, VecDeque<oneshot::Sender<()>>>,
    /// The source that got the last slot handed over, for the turn.
    last: Option<String>,
}

/// The slots of one sink.
#[derive(Debug)]
pub struct FairSlots {
    state: Mutex<State>,
}

/// One slot; dropping it hands it to the next waiting source, or frees it.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<FairSlots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&mut self.slots.lock());
    }
}

/// A wait for a slot that is given up: a slot already handed to it goes on to the next.
struct Waiting {
    slots: Arc<FairSlots>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            let mut state = self.slots.lock();
            // Under the lock no slot is being handed over: after `close` none can arrive.
            rx.close();
            if rx.try_recv().is_ok() {
                self.slots.release(&mut state);
            }
        }
    }
}

impl FairSlots {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots.max(1),
                waiting: BTreeMap::new(),
                last: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands one slot to the next source in turn that has a live waiter, or frees it.
    fn release(&self, state: &mut State) {
        loop {
            let next = state
                .last
                .as_ref()
                .and_then(|last| {
                    state
                        .waiting
                        .range::<String, _>((
                            std::ops::Bound::Excluded(last),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                })
                .or_else(|| state.waiting.iter().next())
                .map(|(source, _)| source.clone());
            let Some(source) = next else {
                state.free += 1;
                return;
            };
            let queue = state.waiting.get_mut(&source);
            let tx = queue.and_then(VecDeque::pop_front);
            if state.waiting.get(&source).is_some_and(VecDeque::is_empty) {
                state.waiting.remove(&source);
            }
            if let Some(tx) = tx
                && tx.send(()).is_ok()
            {
                state.last = Some(source);
                return;
            }
        }
    }

    /// Waits for a slot for a delivery of an alert from `source`.
    pub async fn acquire(self: &Arc<Self>, source: &str) -> Slot {
        loop {
            let rx = {
                let mut state = self.lock();
                if state.free > 0 && state.waiting.is_empty() {
                    state.free -= 1;
                    return Slot {
                        slots: Arc::clone(self),
                    };
                }
                let (tx, rx) = oneshot::channel();
                state
                    .waiting
                    .entry(source.to_owned())
                    .or_default()
                    .push_back(tx);
                rx
            };
            let mut waiting = Waiting {
                slots: Arc::clone(self),
                rx: Some(rx),
            };
            let handed = match waiting.rx.as_mut() {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            if handed {
                // The slot is ours now: nothing for `Waiting` to pass on.
                waiting.rx = None;
                return Slot {
                    slots: Arc::clone(self),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_next_source_in_turn() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("hook").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // Ten deliveries from the flooding source queue up first, then one from the mailbox.
        for (i, source) in (0..10).map(|i| (i, "hook")).chain([(10, "mail")]) {
            let (slots, tx) = (Arc::clone(&slots), tx.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(source).await;
                tx.send(i).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let mut order = Vec::new();
        while let Ok(i) = rx.try_recv() {
            order.push(i);
        }
        let mail = order.iter().position(|&i| i == 10).unwrap();
        assert!(mail <= 1, "the mailbox waited behind the flood: {order:?}");
        assert_eq!(order.len(), 11);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_its_slot_on() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), slots.acquire("b")).await;
        assert!(gave_up.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), slots.acquire("c")).await;
        assert!(
            again.is_ok(),
            "the slot was lost with the waiter that gave up"
        );
    }
}
