//! An in-memory [`Queue`]: what the dispatcher saved is what a restart would find. Saves can be
//! made to fail, as a queue whose disk is full does, or be refused for an alert another host
//! took over, as the shared queue refuses them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use alertbridge_plugin_api::Alert;

use crate::{
    model::StoredAlert,
    queue::{BoxFuture, Queue, QueueError, Taken},
};

/// Saves at one instant of virtual time beyond which a round must be spinning.
const SPIN_LIMIT: usize = 20_000;

#[derive(Default)]
pub struct MemQueue {
    alerts: Mutex<BTreeMap<u64, StoredAlert>>,
    saves: AtomicUsize,
    failing: AtomicBool,
    /// Alerts "another host" took over: their saves answer [`QueueError::NotOwner`].
    taken_over: Mutex<BTreeSet<u64>>,
    /// The virtual instant of the last save, and how many saves came at it.
    spin: Mutex<Option<(tokio::time::Instant, usize)>>,
}

impl MemQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, StoredAlert>> {
        self.alerts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a new alert (ids from 1, in accept order).
    pub fn insert(&self, source: &str, alert: Alert, now: i64) -> StoredAlert {
        let mut alerts = self.lock();
        let id = alerts.keys().next_back().map_or(1, |last| last + 1);
        let stored = StoredAlert::new(id, source, alert, now);
        alerts.insert(id, stored.clone());
        stored
    }

    /// The alert as last saved.
    pub fn stored(&self, id: u64) -> Option<StoredAlert> {
        self.lock().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<StoredAlert> {
        self.lock().values().cloned().collect()
    }

    /// A copy of what is stored now, as a restart after a crash would find it.
    pub fn snapshot(&self) -> Self {
        Self {
            alerts: Mutex::new(self.lock().clone()),
            ..Self::default()
        }
    }

    /// From now on, saves fail (`true`) or succeed.
    pub fn fail_saves(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// From now on, saves of alert `id` are refused as another host's (nothing is written), as
    /// the shared queue refuses them once another host took the alert over.
    pub fn take_over(&self, id: u64) {
        self.taken_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id);
    }

    /// A dispatcher that saves round after round without time moving never lets the paused
    /// clock advance, so the test would hang instead of failing: end it loudly. (The panic
    /// would only end the dispatcher's task, and the test would wait on.)
    fn check_spin(&self) {
        let now = tokio::time::Instant::now();
        let mut spin = self.spin.lock().unwrap_or_else(PoisonError::into_inner);
        let count = match *spin {
            Some((at, n)) if at == now => n + 1,
            _ => 1,
        };
        *spin = Some((now, count));
        if count > SPIN_LIMIT {
            eprintln!(
                "the dispatcher saved {count} times without time moving: a round spins; aborting the test"
            );
            std::process::abort();
        }
    }

    /// How many saves succeeded.
    pub fn saves(&self) -> usize {
        self.saves.load(Ordering::SeqCst)
    }
}

impl Queue for MemQueue {
    fn enqueue(&self, source: &str, alert: Alert) -> BoxFuture<'static, Result<Taken, QueueError>> {
        let id = self.insert(source, alert, crate::model::now_ms()).id;
        Box::pin(std::future::ready(Ok(Taken {
            id,
            duplicate: false,
        })))
    }

    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.check_spin();
        let taken_over = self
            .taken_over
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&alert.id);
        let answer = if taken_over {
            Err(QueueError::NotOwner { id: alert.id })
        } else if self.failing.load(Ordering::SeqCst) {
            Err(QueueError::Unavailable {
                reason: "disk full (test)".into(),
                retry_after_ms: 1000,
            })
        } else {
            self.saves.fetch_add(1, Ordering::SeqCst);
            self.lock().insert(alert.id, alert.clone());
            Ok(())
        };
        Box::pin(std::future::ready(answer))
    }

    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        Ok(self
            .lock()
            .values()
            .filter(|a| !a.is_finished())
            .cloned()
            .collect())
    }

    fn recent(&self, limit: usize) -> Result<Vec<StoredAlert>, QueueError> {
        Ok(self.lock().values().rev().take(limit).cloned().collect())
    }

    fn get(&self, id: u64) -> Result<Option<StoredAlert>, QueueError> {
        Ok(self.stored(id))
    }
}
