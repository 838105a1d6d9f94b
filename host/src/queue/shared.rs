//! What the queue handle ([`super::redb_queue`]) and its writer thread ([`super::writer`])
//! share: the database slot, the fault that closed it, and how a stored record decodes. Both
//! import it from here, so neither imports the other's internals.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use redb::Database;

use super::QueueError;
use crate::{metrics::Metrics, model::StoredAlert};

/// Why the queue is down, and when the writer tries to reopen it next.
pub(super) struct Fault {
    pub reason: String,
    pub retry_at: Instant,
}

/// What the queue handle and its writer thread share.
pub(super) struct Shared {
    /// `None` while faulted. Reads hold the read lock for their whole transaction, so the
    /// writer's write lock (to close, reopen or compact the file) has it to itself.
    pub db: RwLock<Option<Database>>,
    pub fault: Mutex<Option<Fault>>,
    /// True while `fault` is set: the enqueue path checks it without taking the lock.
    pub down: AtomicBool,
    pub dir: PathBuf,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The refusal while faulted, if faulted.
    pub(super) fn unavailable(&self) -> Option<QueueError> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        let f = self.fault.lock().unwrap_or_else(PoisonError::into_inner);
        f.as_ref().map(|f| QueueError::Unavailable {
            reason: f.reason.clone(),
            retry_after_ms: f
                .retry_at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1000, 60_000) as u64,
        })
    }
}

/// Decodes the stored record `bytes` of alert `id`.
pub(super) fn decode(id: u64, bytes: &[u8]) -> Result<StoredAlert, QueueError> {
    let mut alert: StoredAlert =
        serde_json::from_slice(bytes).map_err(|source| QueueError::Corrupt { id, source })?;
    alert.id = id;
    Ok(alert)
}
