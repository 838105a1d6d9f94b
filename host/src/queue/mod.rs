//! The durable queue: every accepted alert and its recipients' outcomes, kept across crashes.
//!
//! Invariants:
//! - [`Queue::enqueue`] resolves only after the alert is committed to disk; concurrent
//!   enqueues share one commit (group commit), so a burst costs one fsync, not one per alert.
//! - Every enqueue a commit took is handed to the queue's [`OnCommit`] right after that commit,
//!   whether or not anyone still awaits the enqueue: a committed alert is always dispatched.
//! - A dedup key (scoped to its source) seen within the dedup window is taken once: the second
//!   enqueue returns the first alert, marked as a duplicate, and stores nothing.
//! - On restart, [`Queue::unfinished`] returns every alert accepted and not finished.
//! - Finished alerts stay for the admin API until `history_max_alerts` newer ones push them out.
//! - A storage fault (disk full, EFBIG, EIO) never loses an acknowledged alert: the queue turns
//!   unavailable (loud: health, metric, log), refuses new work with "try later", and reopens by
//!   itself with backoff. A damaged or vanished file is refused at start with one line, and
//!   `alertbridge queue check|salvage` say what is wrong and recover what is readable.
//!
//! The trait lets a shared broker backend (for several hosts) replace the embedded one.

#[cfg(test)]
mod contract_tests;
mod dedup;
mod log;
pub mod postgres;
mod redb_queue;
mod salvage;
mod shared;
mod store;
pub mod transfer;
mod writer;

use std::{future::Future, pin::Pin, time::Duration};

use alertbridge_plugin_api::Alert;

pub use self::{
    log::LogQueue,
    postgres::{PgQueue, PgSettings},
    redb_queue::RedbQueue,
    salvage::{CheckReport, SalvageReport, check, salvage},
};
use crate::model::StoredAlert;

/// How the embedded queue behaves; see `[host]` in the README.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    pub dedup_window: Duration,
    /// Keys at most in the dedup index; the oldest are evicted first.
    pub dedup_max_keys: usize,
    pub history_max_alerts: usize,
    /// Start on a fresh queue although the data folder says its queue held data.
    pub accept_empty_queue: bool,
    /// The file is compacted when at least this big and mostly free space.
    pub compact_min_bytes: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(86_400),
            dedup_max_keys: 1_000_000,
            history_max_alerts: 10_000,
            accept_empty_queue: false,
            compact_min_bytes: 16 << 20,
        }
    }
}

/// A boxed future, so the queue can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an enqueue resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The stored alert's id (for a duplicate: the alert seen first).
    pub id: u64,
    /// True if and only if the dedup key was seen within the window and nothing was stored.
    pub duplicate: bool,
}

/// An enqueue a commit took, as handed to [`OnCommit`].
#[derive(Debug)]
pub struct Enqueued {
    /// The alert with its id; for a duplicate, the one submitted (not stored) with the first
    /// alert's id.
    pub alert: StoredAlert,
    pub duplicate: bool,
    /// Accepted now, or taken up from the shared queue (counted apart, not as accepted again).
    pub origin: Origin,
}

/// Where an alert handed to [`OnCommit`] comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// Accepted by this host now: counted in `alertbridge_alerts_accepted_total`.
    #[default]
    Accepted,
    /// This host's own, unfinished from before its restart, taken up again (shared queue).
    Resumed,
    /// Another host's whose lease ran out, taken over (shared queue): counted in
    /// `alertbridge_alerts_taken_over_total` by the queue, where it was accepted already.
    TakenOver,
}

/// Called after each commit for each enqueue in it, on the queue's own thread; it must not
/// block.
pub type OnCommit = Box<dyn Fn(Enqueued) + Send + Sync>;

/// Why the queue could not do something.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the queue at {path}")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error(
        "the queue file {path} is damaged ({detail}); `alertbridge queue check --config FILE` says what is wrong, `alertbridge queue salvage --config FILE` copies every readable alert into a fresh file"
    )]
    Damaged { path: String, detail: String },
    #[error(
        "the queue file {path} {what}, but {marker} says this data folder's queue (id {id:016x}) held data; restore the file, run `alertbridge queue salvage --config FILE`, or start with --accept-empty-queue to begin with an empty queue"
    )]
    Vanished {
        path: String,
        what: &'static str,
        marker: String,
        id: u64,
    },
    #[error("cannot read or write {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("queue unavailable, try later: {reason}")]
    Unavailable { reason: String, retry_after_ms: u64 },
    #[error("queue storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored alert {id} is corrupt")]
    Corrupt {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("the queue is shutting down")]
    Closed,
    /// A save of an alert this host no longer owns: its lease ran out and another host took
    /// it over (shared queue only). Nothing was written; the caller lets go of the alert.
    #[error(
        "alert {id} is now delivered by another host (its lease ran out and another host took it over)"
    )]
    NotOwner { id: u64 },
}

impl QueueError {
    pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }

    /// For a refusal the sender should retry: after how long.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::Unavailable { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }
}

/// Durable storage of alerts and their outcomes.
pub trait Queue: Send + Sync + 'static {
    /// Stores a new alert from `source` (or finds its duplicate). Resolves after commit.
    fn enqueue(&self, source: &str, alert: Alert) -> BoxFuture<'static, Result<Taken, QueueError>>;

    /// Durably records an alert's new state. Resolves after commit. A shared backend answers
    /// [`QueueError::NotOwner`] for an alert another host took over (nothing written); the
    /// embedded one never does.
    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>>;

    /// Records an alert's outcomes after a send: like [`Queue::save`], but a backend may hold
    /// it briefly so that it rides in the next commit instead of paying for one of its own, and
    /// may resolve once it has taken it rather than after that commit (a backend that does
    /// keeps it through a storage fault, like any save). Until the commit a crash leaves the
    /// alert as last saved, whose `sending` marks make those sends uncertain after the restart
    /// — never lost. Later saves of any alert commit with or after it.
    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save(alert)
    }

    /// Alerts accepted and not finished, oldest first.
    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError>;

    /// The newest alerts, newest first.
    fn recent(&self, limit: usize) -> Result<Vec<StoredAlert>, QueueError>;

    /// One alert by id.
    fn get(&self, id: u64) -> Result<Option<StoredAlert>, QueueError>;

    /// Finishes pending writes and closes the storage; later calls answer
    /// [`QueueError::Closed`]. Called once the bridge has stopped everything else.
    fn close(&self) {}
}
