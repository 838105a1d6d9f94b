//! The embedded queue on redb: callers encode documents on their own threads and hand them to
//! one writer thread ([`super::writer`]) that batches every pending command into one write
//! transaction (group commit); reads use read transactions.
//!
//! Dedup lookups go to an index in the writer's memory ([`super::dedup`]), rebuilt from the
//! `dedup_log` table on open: the log is written in id order (appends to the B-tree's last
//! page) and pruned from its start, so a commit rewrites a few pages instead of one per random
//! key. The key hash is the first 128 bits of SHA-256 over the source and the key: no sender
//! can craft a key that collides with another's and so suppress its alert.
//!
//! While the file is unusable (a write failed: disk full, EFBIG, EIO) the database is closed
//! and [`Shared::fault`] says why; every call answers [`QueueError::Unavailable`] at once until
//! the writer has reopened it.

use std::{
    path::Path,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use alertbridge_plugin_api::Alert;
use redb::ReadableTable;

use super::{
    BoxFuture, OnCommit, Queue, QueueError, QueueOptions, Taken,
    shared::{FaultState, Shared, WriterThread, decode},
    store::{self, ALERTS},
    writer::Writer,
};
use crate::{metrics::Metrics, model::StoredAlert};

/// The embedded, crash-safe queue.
pub struct RedbQueue {
    shared: Arc<Shared>,
    writer: WriterThread,
}

impl Drop for RedbQueue {
    fn drop(&mut self) {
        self.close();
    }
}

impl RedbQueue {
    /// Opens (or creates) the queue in `dir` with default options and metrics of its own.
    pub fn open(
        dir: &Path,
        dedup_window: Duration,
        history_max: usize,
        on_commit: OnCommit,
    ) -> Result<Self, QueueError> {
        let options = QueueOptions {
            dedup_window,
            history_max_alerts: history_max,
            ..QueueOptions::default()
        };
        Self::open_with(dir, &options, Arc::new(Metrics::default()), on_commit)
    }

    /// Opens (or creates) the queue in `dir`, checking the file (see [`store::open_checked`]),
    /// and starts its writer thread.
    pub fn open_with(
        dir: &Path,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Self, QueueError> {
        catch_file_size_signal();
        let path = store::file_path(dir);
        let db = store::open_checked(dir, options.accept_empty_queue, true)?;
        let loaded = store::load(
            &db,
            options.dedup_window.as_millis() as i64,
            options.dedup_max_keys,
            &path,
            true,
        )?;
        if !loaded.set_aside_now.is_empty() {
            metrics.queue_set_aside_add(loaded.set_aside_now.len() as u64);
        }
        metrics.set_queue_set_aside(loaded.set_aside_total);
        metrics.set_queue_fault(None);
        let shared = Arc::new(Shared {
            db: RwLock::new(Some(db)),
            fault: FaultState::new(Arc::clone(&metrics)),
            dir: dir.to_owned(),
            metrics,
        });
        let writer = Writer::new(Arc::clone(&shared), options, on_commit, loaded);
        let writer = WriterThread::spawn("queue-writer", move |inbox| writer.run(inbox))?;
        Ok(Self { shared, writer })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<u64, &[u8]>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let guard = self
            .shared
            .db
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_ref() else {
            return Err(self.shared.unavailable().unwrap_or(QueueError::Closed));
        };
        let txn = db.begin_read().map_err(QueueError::storage)?;
        let table = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        f(&table)
    }
}

/// A write past RLIMIT_FSIZE raises SIGXFSZ, whose default action kills the process; with a
/// handler installed (tokio's stays for the life of the process) the write fails with EFBIG
/// instead, which the queue handles like any other storage fault.
pub(super) fn catch_file_size_signal() {
    const SIGXFSZ: i32 = 25;
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ));
    }
}

/// The dedup table's key for `key` from `source`.
pub(super) fn dedup_hash(source: &str, key: &str) -> u128 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update((source.len() as u64).to_be_bytes())
        .chain_update(source)
        .chain_update(key)
        .finalize();
    let mut first = [0; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Logs a record that stopped decoding after the open (it is set aside on the next start).
fn skip_corrupt(e: &QueueError) {
    tracing::error!(error = %crate::error_chain(e), "Queue record does not decode; skipped (set aside at the next start).");
}

impl Queue for RedbQueue {
    fn enqueue(&self, source: &str, alert: Alert) -> BoxFuture<'static, Result<Taken, QueueError>> {
        self.writer.enqueue(&self.shared.fault, source, alert)
    }

    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.writer.save(alert, false)
    }

    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.writer.save(alert, true)
    }

    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(QueueError::storage)? {
                let (k, v) = entry.map_err(QueueError::storage)?;
                match decode(k.value(), v.value()) {
                    Ok(alert) if !alert.is_finished() => out.push(alert),
                    Ok(_) => {}
                    Err(e) => skip_corrupt(&e),
                }
            }
            Ok(out)
        })
    }

    fn recent(&self, limit: usize) -> Result<Vec<StoredAlert>, QueueError> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(QueueError::storage)?.rev().take(limit) {
                let (k, v) = entry.map_err(QueueError::storage)?;
                match decode(k.value(), v.value()) {
                    Ok(alert) => out.push(alert),
                    Err(e) => skip_corrupt(&e),
                }
            }
            Ok(out)
        })
    }

    fn get(&self, id: u64) -> Result<Option<StoredAlert>, QueueError> {
        self.read(|t| match t.get(id).map_err(QueueError::storage)? {
            Some(v) => decode(id, v.value()).map(Some),
            None => Ok(None),
        })
    }

    /// Lets the writer finish what it was given and closes the file cleanly (so the next open
    /// needs no repair), then answers everything with [`QueueError::Closed`].
    fn close(&self) {
        self.writer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::queue::contract_tests::contract_tests!(|dir, options, metrics, on_commit| {
        RedbQueue::open_with(dir, options, metrics, on_commit).map(|q| Box::new(q) as _)
    });

    #[test]
    fn dedup_hashes_keep_source_and_key_apart() {
        assert_ne!(dedup_hash("ab", "c"), dedup_hash("a", "bc"));
        assert_eq!(dedup_hash("a", "bc"), dedup_hash("a", "bc"));
    }
}
