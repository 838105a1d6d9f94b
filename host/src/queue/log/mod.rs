//! The embedded queue as a segment log of its own (`[queue] backend = "log"`): every change is
//! a small record appended to the active segment file, one CRC-framed frame and one
//! `fdatasync` per group commit, instead of a B-tree transaction that rewrites pages.
//!
//! - An accepted alert is one record carrying its document; a save (the `sending` mark, an
//!   outcome) is one record with the new document; history pruning writes a tiny "forgotten"
//!   record. Nothing is rewritten in place.
//! - The writer keeps in memory where each alert's newest document is ([`segments::View`]) and
//!   the dedup index; both are rebuilt by reading the log at start. Readers `pread` documents.
//! - Compaction rewrites the live documents, the dedup keys of the window and the next id into
//!   a new base segment and removes the older segments.
//! - Recovery: a torn last frame (a write whose `fdatasync` never returned, so never
//!   acknowledged) is zeroed; a frame that fails its checksum anywhere else is refused with
//!   one line, like a damaged redb file.
//! - `alertbridge queue check|export|import` work on it ([`tools`]); salvage does not (a start
//!   refuses damage with one line naming the segment and byte).
//! - The group commit, the outcome hold and the fault handling (unavailable, reopen with
//!   backoff) follow the redb writer's ([`super::writer`]); the inbox is shared with it.

mod direct;
mod format;
mod scan;
mod segments;
#[cfg(test)]
mod tests;
mod tools;
mod writer;

use std::{
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use alertbridge_plugin_api::Alert;

use self::segments::{Loc, View};
use super::{
    BoxFuture, OnCommit, Queue, QueueError, QueueOptions, Taken,
    redb_queue::catch_file_size_signal,
    shared::{FaultState, WriterThread, decode},
};
use crate::{metrics::Metrics, model::StoredAlert};

/// What the queue handle and its writer share.
struct State {
    /// `None` while faulted.
    view: Mutex<Option<View>>,
    fault: FaultState,
    metrics: Arc<Metrics>,
}

/// The embedded, crash-safe queue on a segment log.
pub struct LogQueue {
    state: Arc<State>,
    writer: WriterThread,
}

impl Drop for LogQueue {
    fn drop(&mut self) {
        self.close();
    }
}

impl LogQueue {
    /// Opens (or creates) the log in `dir` (see [`segments::open`]) and starts its writer.
    pub fn open_with(
        dir: &Path,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Self, QueueError> {
        catch_file_size_signal();
        let loaded = segments::open(
            dir,
            options.accept_empty_queue,
            options.dedup_window.as_millis() as i64,
            options.dedup_max_keys,
        )?;
        if !loaded.set_aside_now.is_empty() {
            metrics.queue_set_aside_add(loaded.set_aside_now.len() as u64);
        }
        metrics.set_queue_set_aside(loaded.set_aside_total);
        let segments::Loaded {
            log,
            view,
            dedup,
            next_id,
            ..
        } = loaded;
        let state = Arc::new(State {
            view: Mutex::new(Some(view)),
            fault: FaultState::new(Arc::clone(&metrics)),
            metrics,
        });
        let w = writer::LogWriter::new(
            Arc::clone(&state),
            dir.to_owned(),
            options,
            on_commit,
            (log, dedup, next_id),
        );
        let writer = WriterThread::spawn("queue-log-writer", move |inbox| w.run(inbox))?;
        Ok(Self { state, writer })
    }

    /// Reads the documents `pick` chooses from the view, outside the view's lock.
    fn read(
        &self,
        pick: impl FnOnce(&View) -> Vec<(u64, Loc)>,
    ) -> Result<Vec<StoredAlert>, QueueError> {
        let (locs, files) = {
            let guard = self
                .state
                .view
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(view) = guard.as_ref() else {
                return Err(self.state.fault.unavailable().unwrap_or(QueueError::Closed));
            };
            (pick(view), view.files.clone())
        };
        let mut out = Vec::with_capacity(locs.len());
        for (id, loc) in locs {
            let bytes = View::read(&files, loc).map_err(QueueError::storage)?;
            match decode(id, &bytes) {
                Ok(a) => out.push(a),
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "Queue record does not decode; skipped (set aside at the next start).");
                }
            }
        }
        Ok(out)
    }
}

impl Queue for LogQueue {
    fn enqueue(&self, source: &str, alert: Alert) -> BoxFuture<'static, Result<Taken, QueueError>> {
        self.writer.enqueue(&self.state.fault, source, alert)
    }

    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.writer.save(alert, false)
    }

    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.writer.save(alert, true)
    }

    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        self.read(|v| {
            v.docs
                .iter()
                .filter(|(_, l)| !l.finished)
                .map(|(&id, &l)| (id, l))
                .collect()
        })
    }

    fn recent(&self, limit: usize) -> Result<Vec<StoredAlert>, QueueError> {
        self.read(|v| {
            v.docs
                .iter()
                .rev()
                .take(limit)
                .map(|(&id, &l)| (id, l))
                .collect()
        })
    }

    fn get(&self, id: u64) -> Result<Option<StoredAlert>, QueueError> {
        Ok(self
            .read(|v| v.docs.get(&id).map(|&l| (id, l)).into_iter().collect())?
            .pop())
    }

    /// Lets the writer finish what it was given, then answers everything with
    /// [`QueueError::Closed`].
    fn close(&self) {
        self.writer.close();
    }
}
