//! The queue's writer thread: group commits, pruning, compaction, and what happens when a
//! write fails.
//!
//! A commit costs an fsync whatever it carries, so the writer makes each one carry as much as
//! it may: every command waiting is taken into one transaction, and an *outcome* save (a
//! recipient's result, after the send) does not get a commit of its own — it is held until the
//! next commit that must happen anyway (an enqueue, a `sending` mark), and at the latest for
//! [`HOLD_OUTCOMES`]; nobody waits for it, and no thread is woken for it while the writer is
//! busy (see [`super::shared::Inbox`]). Holding loses nothing a caller was promised: an
//! outcome lost to a crash leaves the `sending` mark committed before the send, which the
//! dispatcher treats as uncertain after a restart; one a failed commit did not take is kept for
//! the reopen like any save. Commands keep their order: a held outcome is always committed with
//! or before any later command.
//!
//! A failed commit (disk full, EFBIG, EIO) answers its enqueues "queue unavailable, try later"
//! — nothing in it was acknowledged — keeps its saves, closes the file (redb refuses everything
//! after an I/O error) and marks the queue down. The writer then reopens the file with backoff;
//! once it is back, the kept saves are written first and any alert the failed commit did make
//! durable (its fsync failed after the data was written) is handed on like any other.

use std::{
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::Backoff;
use redb::{Durability, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use super::{
    Enqueued, OnCommit, QueueError, QueueOptions, Taken,
    dedup::{DedupIndex, Seen},
    shared::{Cmd, HOLD_OUTCOMES, Inbox, Next, Shared, decode},
    store::{self, ALERTS, DEDUP_LOG, Loaded, META},
};
use crate::model::{StoredAlert, now_ms};

/// How often old history and dedup entries are pruned (and compaction considered).
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// First and longest wait between attempts to reopen a failed queue file.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(10);
/// A reopened file that fails again within this time does not reset the backoff.
const STAYED_UP: Duration = Duration::from_secs(60);

enum Reply {
    Enqueued(
        oneshot::Sender<Result<Taken, QueueError>>,
        Box<StoredAlert>,
        Taken,
    ),
    Saved(
        Option<oneshot::Sender<Result<(), QueueError>>>,
        u64,
        Vec<u8>,
    ),
    /// An enqueue the failed commit did not take.
    Refused(oneshot::Sender<Result<Taken, QueueError>>),
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    window_ms: i64,
    history_max: usize,
    dedup_max_keys: usize,
    compact_min_bytes: u64,
    on_commit: OnCommit,
    /// Every committed `dedup_log` entry within the window and the size bound, plus the
    /// current batch's.
    dedup: DedupIndex,
    /// The next id as of the last commit known to have succeeded.
    next_id: u64,
    /// Saves not yet committed because the file failed; newest per alert.
    unsaved: BTreeMap<u64, Vec<u8>>,
    /// The wait before the next reopen attempt, while faulted.
    backoff: Backoff,
    /// When the file was last reopened after a fault.
    reopened_at: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        options: &QueueOptions,
        on_commit: OnCommit,
        loaded: Loaded,
    ) -> Self {
        let writer = Self {
            shared,
            window_ms: options.dedup_window.as_millis() as i64,
            history_max: options.history_max_alerts,
            dedup_max_keys: options.dedup_max_keys.max(1),
            compact_min_bytes: options.compact_min_bytes,
            on_commit,
            dedup: loaded.dedup,
            next_id: loaded.next_id,
            unsaved: BTreeMap::new(),
            backoff: Backoff::new(REOPEN_FIRST, REOPEN_MAX),
            reopened_at: None,
        };
        writer.publish_sizes();
        writer
    }

    pub(super) fn run(mut self, inbox: &Inbox) {
        let mut last_prune = Instant::now();
        // After a commit the writer wakes by itself within the hold time for a while, so the
        // outcomes that follow ride in the next commit without waking it.
        let mut linger: Option<Instant> = None;
        loop {
            let retry_at = self.shared.fault.retry_at();
            // Pruning also runs without traffic, so a quiet queue shrinks too.
            let until = retry_at.unwrap_or_else(|| {
                let prune_at = last_prune + PRUNE_EVERY;
                linger.map_or(prune_at, |l| l.min(prune_at))
            });
            let batch = match inbox.next(until) {
                Next::Batch(batch) => batch,
                Next::Timeout if retry_at.is_some() => {
                    self.reopen();
                    continue;
                }
                Next::Timeout => {
                    linger = None;
                    if last_prune.elapsed() >= PRUNE_EVERY {
                        last_prune = Instant::now();
                        if self.commit(Vec::new(), true) {
                            self.maybe_compact();
                        }
                    }
                    continue;
                }
                Next::Closed => break,
            };
            if let Some(e) = self.shared.unavailable() {
                self.refuse(batch, &e);
                continue;
            }
            let prune = last_prune.elapsed() >= PRUNE_EVERY;
            if prune {
                last_prune = Instant::now();
            }
            if self.commit(batch, prune) && prune {
                self.maybe_compact();
            }
            linger = Some(Instant::now() + HOLD_OUTCOMES);
        }
        // A clean close: the next open needs no repair (which verifies every page).
        drop(
            self.shared
                .db
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        // Saves that never made it stay for the next start's resume; say so.
        if !self.unsaved.is_empty() {
            tracing::error!(
                alerts = self.unsaved.len(),
                "Queue closed with outcomes it could not record; those alerts are redone after the next start."
            );
        }
    }

    /// Answers a batch while the queue is down; saves are kept for the reopen.
    fn refuse(&mut self, batch: Vec<Cmd>, e: &QueueError) {
        let again = || match e {
            QueueError::Unavailable {
                reason,
                retry_after_ms,
            } => QueueError::Unavailable {
                reason: reason.clone(),
                retry_after_ms: *retry_after_ms,
            },
            _ => QueueError::Closed,
        };
        for cmd in batch {
            match cmd {
                Cmd::Enqueue { reply, .. } => drop(reply.send(Err(again()))),
                Cmd::Save { id, json, reply } => {
                    self.unsaved.insert(id, json);
                    if let Some(reply) = reply {
                        drop(reply.send(Err(again())));
                    }
                }
            }
        }
    }

    /// Applies a batch in one transaction and answers every command after the commit; true if
    /// it committed.
    fn commit(&mut self, batch: Vec<Cmd>, prune: bool) -> bool {
        let mut replies = Vec::with_capacity(batch.len());
        // What this batch did to the dedup index, to take back if the commit fails.
        let mut undo = Vec::new();
        let unsaved = std::mem::take(&mut self.unsaved);
        let shared = Arc::clone(&self.shared);
        let guard = shared.db.read().unwrap_or_else(PoisonError::into_inner);
        let mut rest = batch.into_iter();
        // redb asserts on some states of a failing file: a panic is a storage fault too.
        let result = catch_unwind(AssertUnwindSafe(|| -> Result<u64, QueueError> {
            let db = guard.as_ref().ok_or(QueueError::Closed)?;
            let mut txn = db.begin_write().map_err(QueueError::storage)?;
            txn.set_durability(Durability::Immediate);
            let next_id = {
                let mut meta = txn.open_table(META).map_err(QueueError::storage)?;
                let mut t = Tables {
                    alerts: txn.open_table(ALERTS).map_err(QueueError::storage)?,
                    dedup_log: txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?,
                    next_id: self.next_id,
                };
                for (id, json) in &unsaved {
                    t.alerts
                        .insert(*id, json.as_slice())
                        .map_err(QueueError::storage)?;
                }
                // On an error every command is still answered: the one that failed with its
                // reply in `replies`, the ones after it from `rest`.
                for cmd in rest.by_ref() {
                    match cmd {
                        Cmd::Enqueue {
                            dedup,
                            alert,
                            json,
                            reply,
                        } => match self.enqueue(&mut t, &mut undo, dedup, alert.accepted_ms, &json)
                        {
                            Ok(taken) => replies.push(Reply::Enqueued(reply, alert, taken)),
                            Err(e) => {
                                replies.push(Reply::Refused(reply));
                                return Err(e);
                            }
                        },
                        Cmd::Save { id, json, reply } => {
                            let saved = t.alerts.insert(id, json.as_slice()).map(drop);
                            replies.push(Reply::Saved(reply, id, json));
                            saved.map_err(QueueError::storage)?;
                        }
                    }
                }
                if t.next_id != self.next_id {
                    meta.insert("next_id", t.next_id)
                        .map_err(QueueError::storage)?;
                }
                if prune {
                    self.prune(&mut t)?;
                }
                t.next_id
            };
            txn.commit().map_err(QueueError::storage)?;
            Ok(next_id)
        }))
        .unwrap_or_else(|p| Err(store::panicked(&*p)));
        drop(guard);
        match result {
            Ok(next_id) => {
                self.next_id = next_id;
                let evicted = self.dedup.take_evicted();
                if evicted > 0 {
                    self.shared.metrics.dedup_evicted(evicted);
                }
                self.shared.metrics.set_dedup_keys(self.dedup.len() as u64);
                for r in replies {
                    match r {
                        Reply::Enqueued(tx, mut alert, taken) => {
                            alert.id = taken.id;
                            (self.on_commit)(Enqueued {
                                alert: *alert,
                                duplicate: taken.duplicate,
                                origin: super::Origin::Accepted,
                            });
                            drop(tx.send(Ok(taken)));
                        }
                        Reply::Saved(Some(tx), ..) => drop(tx.send(Ok(()))),
                        Reply::Saved(None, ..) => {}
                        Reply::Refused(tx) => drop(tx.send(Err(QueueError::Closed))),
                    }
                }
                true
            }
            Err(e) => {
                for (key, before) in undo.into_iter().rev() {
                    self.dedup.restore(key, before);
                }
                self.unsaved = unsaved;
                let commands = replies.len() + rest.len();
                let refusal = self.fail(&e);
                tracing::error!(error = %crate::error_chain(&e), commands, "Queue commit failed; nothing in it was acknowledged. The queue is down until it can be reopened.");
                for r in replies {
                    match r {
                        Reply::Enqueued(tx, ..) | Reply::Refused(tx) => {
                            drop(tx.send(Err(refusal())));
                        }
                        Reply::Saved(tx, id, json) => {
                            self.unsaved.insert(id, json);
                            if let Some(tx) = tx {
                                drop(tx.send(Err(refusal())));
                            }
                        }
                    }
                }
                for cmd in rest {
                    match cmd {
                        Cmd::Enqueue { reply, .. } => drop(reply.send(Err(refusal()))),
                        Cmd::Save { id, json, reply } => {
                            self.unsaved.insert(id, json);
                            if let Some(reply) = reply {
                                drop(reply.send(Err(refusal())));
                            }
                        }
                    }
                }
                false
            }
        }
    }

    /// Marks the queue down after `e`: closes the file and schedules a reopen. Returns the
    /// refusal to answer with.
    fn fail(&mut self, e: &QueueError) -> impl Fn() -> QueueError + use<> {
        let reason = crate::error_chain(e);
        // redb refuses everything after an I/O error until the file is opened again.
        let closed = self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(closed);
        // A file that reopens but fails again soon (a disk still full: the reopen itself needs
        // no new space) keeps backing off; one that stayed up a while starts over.
        if self.reopened_at.is_none_or(|at| at.elapsed() >= STAYED_UP) {
            self.backoff.reset();
        }
        let wait = self.backoff.next();
        let retry_at = Instant::now() + wait;
        self.set_fault(reason.clone(), retry_at);
        let retry_after_ms = wait.as_millis().max(1000) as u64;
        move || QueueError::Unavailable {
            reason: reason.clone(),
            retry_after_ms,
        }
    }

    /// Down (a fall from up is counted once: `fail` comes only from up).
    fn set_fault(&self, reason: String, retry_at: Instant) {
        self.shared.fault.set(reason, retry_at);
    }

    /// One attempt to reopen the file after a fault.
    fn reopen(&mut self) {
        let path = store::file_path(&self.shared.dir);
        let opened = store::probe_room(&self.shared.dir)
            .and_then(|()| store::open_checked(&self.shared.dir, false, false))
            .and_then(|db| {
                let loaded = store::load(&db, self.window_ms, self.dedup_max_keys, &path, false)?;
                Ok((db, loaded))
            });
        let (db, loaded) = match opened {
            Ok(x) => x,
            Err(e) => {
                let wait = self.backoff.next();
                let reason = crate::error_chain(&e);
                tracing::warn!(error = %reason, retry_in_ms = wait.as_millis() as u64, "Queue still unavailable.");
                self.set_fault(reason, Instant::now() + wait);
                return;
            }
        };
        // Alerts the failed commit made durable although it reported an error: nobody was
        // told they were taken, but they are queued, so they are delivered.
        let committed_unseen: Vec<StoredAlert> = if loaded.next_id > self.next_id {
            let range = self.next_id..loaded.next_id;
            let txn = db.begin_read().ok();
            let table = txn.as_ref().and_then(|t| t.open_table(ALERTS).ok());
            table
                .map(|t| {
                    range
                        .filter_map(|id| {
                            let v = t.get(id).ok()??;
                            decode(id, v.value()).ok()
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.next_id = loaded.next_id;
        self.dedup = loaded.dedup;
        self.shared
            .metrics
            .set_queue_set_aside(loaded.set_aside_total);
        *self
            .shared
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(db);
        self.shared.fault.clear();
        self.reopened_at = Some(Instant::now());
        tracing::info!(
            kept_outcomes = self.unsaved.len(),
            committed_unacknowledged = committed_unseen.len(),
            "Queue reopened; taking alerts again."
        );
        for alert in committed_unseen {
            (self.on_commit)(Enqueued {
                alert,
                duplicate: false,
                origin: super::Origin::Accepted,
            });
        }
        if !self.unsaved.is_empty() {
            self.commit(Vec::new(), false);
        }
        self.publish_sizes();
    }

    fn enqueue(
        &mut self,
        t: &mut Tables<'_>,
        undo: &mut Vec<(u128, Option<Seen>)>,
        dedup: Option<u128>,
        accepted_ms: i64,
        json: &[u8],
    ) -> Result<Taken, QueueError> {
        if let Some(key) = dedup
            && let Some((id, at)) = self.dedup.get(&key)
            && accepted_ms - at < self.window_ms
        {
            return Ok(Taken {
                id,
                duplicate: true,
            });
        }
        let id = t.next_id;
        t.next_id += 1;
        t.alerts.insert(id, json).map_err(QueueError::storage)?;
        if let Some(key) = dedup {
            t.dedup_log
                .insert(id, (key, accepted_ms))
                .map_err(QueueError::storage)?;
            undo.push((key, self.dedup.insert(key, (id, accepted_ms))));
        }
        Ok(Taken {
            id,
            duplicate: false,
        })
    }

    /// Drops finished alerts beyond the history size, and dedup entries past the window or
    /// beyond the key bound.
    fn prune(&mut self, t: &mut Tables<'_>) -> Result<(), QueueError> {
        let total = t.alerts.len().map_err(QueueError::storage)? as usize;
        if total > self.history_max {
            let mut excess = total - self.history_max;
            let mut doomed = Vec::new();
            for entry in t.alerts.iter().map_err(QueueError::storage)? {
                if excess == 0 {
                    break;
                }
                let (k, v) = entry.map_err(QueueError::storage)?;
                if decode(k.value(), v.value()).is_ok_and(|a| a.is_finished()) {
                    doomed.push(k.value());
                    excess -= 1;
                }
            }
            for id in doomed {
                t.alerts.remove(id).map_err(QueueError::storage)?;
            }
        }
        // The log is in id order, which is acceptance order: expired entries, and those the
        // key bound evicted, are at its start.
        let cutoff = now_ms() - self.window_ms;
        let mut over = (t.dedup_log.len().map_err(QueueError::storage)? as usize)
            .saturating_sub(self.dedup_max_keys);
        let mut doomed = Vec::new();
        for entry in t.dedup_log.iter().map_err(QueueError::storage)? {
            let (id, v) = entry.map_err(QueueError::storage)?;
            if v.value().1 >= cutoff && over == 0 {
                break;
            }
            over = over.saturating_sub(1);
            doomed.push(id.value());
        }
        for id in doomed {
            t.dedup_log.remove(id).map_err(QueueError::storage)?;
        }
        self.dedup.expire(cutoff);
        Ok(())
    }

    /// Compacts the file when it is big and mostly free space, so the disk follows the live
    /// data rather than the history.
    fn maybe_compact(&mut self) {
        let path = store::file_path(&self.shared.dir);
        let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.shared.metrics.set_queue_file_bytes(file_bytes);
        if file_bytes < self.compact_min_bytes {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let mut guard = shared.db.write().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = guard.as_mut() else { return };
        let live = match db.begin_write() {
            Ok(txn) => {
                let live = txn
                    .stats()
                    .map(|s| s.allocated_pages() * s.page_size() as u64)
                    .unwrap_or(u64::MAX);
                let _ = txn.abort();
                live
            }
            Err(_) => return,
        };
        if live.saturating_mul(2) > file_bytes {
            return;
        }
        let started = Instant::now();
        let result = match catch_unwind(AssertUnwindSafe(|| db.compact())) {
            Ok(r) => r,
            Err(p) => {
                drop(guard);
                drop(self.fail(&store::panicked(&*p)));
                return;
            }
        };
        drop(guard);
        let after = std::fs::metadata(&path).map_or(0, |m| m.len());
        match result {
            Ok(_) => {
                self.shared.metrics.queue_compacted();
                self.shared.metrics.set_queue_file_bytes(after);
                tracing::info!(
                    before_bytes = file_bytes,
                    after_bytes = after,
                    live_bytes = live,
                    ms = started.elapsed().as_millis() as u64,
                    "Queue file compacted."
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "Queue compaction failed.");
                if matches!(e, redb::CompactionError::Storage(_)) {
                    let refusal = self.fail(&QueueError::storage(e));
                    drop(refusal);
                }
            }
        }
    }

    fn publish_sizes(&self) {
        let path = store::file_path(&self.shared.dir);
        self.shared
            .metrics
            .set_queue_file_bytes(std::fs::metadata(&path).map_or(0, |m| m.len()));
        self.shared.metrics.set_dedup_keys(self.dedup.len() as u64);
    }
}

/// The tables one write transaction works on, and the id its next new alert gets.
struct Tables<'txn> {
    alerts: redb::Table<'txn, u64, &'static [u8]>,
    dedup_log: redb::Table<'txn, u64, (u128, i64)>,
    next_id: u64,
}
