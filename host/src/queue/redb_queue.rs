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
    sync::{Arc, Mutex, PoisonError, RwLock, atomic::AtomicBool},
    thread,
    time::Duration,
};

use alertbridge_plugin_api::Alert;
use redb::ReadableTable;
use tokio::sync::oneshot;

use super::{
    BoxFuture, OnCommit, Queue, QueueError, QueueOptions, Taken,
    shared::{Cmd, Inbox, Shared, decode},
    store::{self, ALERTS},
    writer::Writer,
};
use crate::{
    metrics::Metrics,
    model::{StoredAlert, now_ms},
};

/// The embedded, crash-safe queue.
pub struct RedbQueue {
    shared: Arc<Shared>,
    /// Closed by [`Queue::close`]; the writer ends once it is drained.
    inbox: Arc<Inbox>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
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
            fault: Mutex::new(None),
            down: AtomicBool::new(false),
            dir: dir.to_owned(),
            metrics,
        });
        let inbox = Arc::new(Inbox::default());
        let writer = Writer::new(Arc::clone(&shared), options, on_commit, loaded);
        let writer = {
            let inbox = Arc::clone(&inbox);
            thread::Builder::new()
                .name("queue-writer".into())
                .spawn(move || writer.run(&inbox))
                .map_err(QueueError::storage)?
        };
        Ok(Self {
            shared,
            inbox,
            writer: Mutex::new(Some(writer)),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), QueueError> {
        if let Some(e) = self.shared.unavailable() {
            return Err(e);
        }
        self.send_anyway(cmd)
    }

    /// Sends even while faulted (the writer keeps saves for the reopen).
    fn send_anyway(&self, cmd: Cmd) -> Result<(), QueueError> {
        self.inbox.send(cmd)
    }

    /// A save; an `outcome` may wait for the next commit, and resolves once handed over (see
    /// [`super::writer`]).
    fn save_as(
        &self,
        alert: &StoredAlert,
        outcome: bool,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let (reply, rx) = if outcome {
            (None, None)
        } else {
            let (reply, rx) = oneshot::channel();
            (Some(reply), Some(rx))
        };
        // A save while faulted still goes to the writer, which keeps it for the reopen.
        let sent = serde_json::to_vec(alert)
            .map_err(QueueError::storage)
            .and_then(|json| {
                self.send_anyway(Cmd::Save {
                    id: alert.id,
                    json,
                    reply,
                })
            });
        Box::pin(async move {
            sent?;
            match rx {
                Some(rx) => rx.await.map_err(|_| QueueError::Closed)?,
                None => Ok(()),
            }
        })
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
fn catch_file_size_signal() {
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
        let (reply, rx) = oneshot::channel();
        let stored = StoredAlert::new(0, source, alert, now_ms());
        let dedup = stored
            .alert
            .dedup_key
            .as_deref()
            .map(|k| dedup_hash(source, k));
        let sent = serde_json::to_vec(&stored)
            .map_err(QueueError::storage)
            .and_then(|json| {
                self.send(Cmd::Enqueue {
                    dedup,
                    alert: Box::new(stored),
                    json,
                    reply,
                })
            });
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| QueueError::Closed)?
        })
    }

    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save_as(alert, false)
    }

    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save_as(alert, true)
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
        self.inbox.close();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Instant};

    use super::*;
    use crate::queue::shared::HOLD_OUTCOMES;

    fn queue(dir: &Path) -> RedbQueue {
        RedbQueue::open(dir, Duration::from_secs(3600), 100, Box::new(drop)).unwrap()
    }

    fn keyed(subject: &str, key: &str) -> Alert {
        let mut a = Alert::new(subject);
        a.dedup_key = Some(key.into());
        a
    }

    #[tokio::test]
    async fn enqueued_alerts_survive_reopen_and_dedup_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = {
            let q = queue(dir.path());
            let a = q.enqueue("mail", keyed("one", "k1")).await.unwrap();
            let b = q.enqueue("mail", keyed("two", "k2")).await.unwrap();
            let dup = q.enqueue("mail", keyed("one again", "k1")).await.unwrap();
            assert!(dup.duplicate);
            assert_eq!(dup.id, a.id);
            assert_eq!(q.get(a.id).unwrap().unwrap().alert.subject, "one");
            let other_source = q
                .enqueue("hook", keyed("same key elsewhere", "k1"))
                .await
                .unwrap();
            assert!(
                !other_source.duplicate,
                "dedup keys are scoped to their source"
            );
            (a.id, b.id)
        };
        let q = queue(dir.path());
        let ids: Vec<u64> = q.unfinished().unwrap().iter().map(|a| a.id).collect();
        assert_eq!(ids, [first, second, second + 1]);
        assert!(
            q.enqueue("mail", keyed("after restart", "k2"))
                .await
                .unwrap()
                .duplicate
        );
    }

    #[tokio::test]
    async fn concurrent_enqueues_get_distinct_ids_and_saves_finish_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(queue(dir.path()));
        let handles: Vec<_> = (0..500)
            .map(|i| q.enqueue("s", Alert::new(format!("a{i}"))))
            .collect();
        let mut ids = Vec::new();
        for h in handles {
            ids.push(h.await.unwrap().id);
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 500);
        let mut a = q.get(ids[0]).unwrap().unwrap();
        a.finished_ms = Some(1);
        q.save(&a).await.unwrap();
        assert_eq!(q.unfinished().unwrap().len(), 499);
        assert_eq!(
            q.recent(3)
                .unwrap()
                .iter()
                .map(|a| a.id)
                .collect::<Vec<_>>(),
            [500, 499, 498]
        );
    }

    #[test]
    fn a_committed_alert_reaches_on_commit_even_if_nobody_awaits_its_enqueue() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let q = RedbQueue::open(
            dir.path(),
            Duration::from_secs(60),
            100,
            Box::new(move |e| drop(tx.send((e.alert.id, e.alert.alert.subject, e.duplicate)))),
        )
        .unwrap();
        drop(q.enqueue("s", keyed("first", "k")));
        drop(q.enqueue("s", keyed("again", "k")));
        drop(q);
        let told: Vec<_> = rx.iter().collect();
        assert_eq!(
            told,
            [
                (1, "first".to_owned(), false),
                (1, "again".to_owned(), true)
            ]
        );
    }

    #[test]
    fn dedup_hashes_keep_source_and_key_apart() {
        assert_ne!(dedup_hash("ab", "c"), dedup_hash("a", "bc"));
        assert_eq!(dedup_hash("a", "bc"), dedup_hash("a", "bc"));
    }

    #[tokio::test]
    async fn dedup_max_keys_evicts_the_oldest_key_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let options = QueueOptions {
            dedup_max_keys: 2,
            ..QueueOptions::default()
        };
        {
            let q =
                RedbQueue::open_with(dir.path(), &options, Arc::clone(&metrics), Box::new(drop))
                    .unwrap();
            for k in ["k1", "k2", "k3"] {
                assert!(!q.enqueue("s", keyed(k, k)).await.unwrap().duplicate);
            }
            assert!(q.enqueue("s", keyed("k3", "k3")).await.unwrap().duplicate);
            assert!(
                !q.enqueue("s", keyed("k1", "k1")).await.unwrap().duplicate,
                "the oldest key was evicted, so it is taken again"
            );
            let text = metrics.render();
            assert!(
                text.contains("\nalertbridge_dedup_evictions_total 2\n"),
                "{text}"
            );
            assert!(text.contains("\nalertbridge_dedup_keys 2\n"), "{text}");
        }
        // The bound holds when the index is rebuilt from the log, newest kept.
        let metrics = Arc::new(Metrics::default());
        let q = RedbQueue::open_with(dir.path(), &options, Arc::clone(&metrics), Box::new(drop))
            .unwrap();
        assert!(metrics.render().contains("\nalertbridge_dedup_keys 2\n"));
        assert!(q.enqueue("s", keyed("k1", "k1")).await.unwrap().duplicate);
        assert!(!q.enqueue("s", keyed("k2", "k2")).await.unwrap().duplicate);
    }

    #[tokio::test]
    async fn expired_dedup_keys_are_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = RedbQueue::open(dir.path(), Duration::ZERO, 100, Box::new(drop)).unwrap();
        q.enqueue("s", keyed("a", "k")).await.unwrap();
        assert!(!q.enqueue("s", keyed("a", "k")).await.unwrap().duplicate);
    }

    /// `alert` as the dispatcher leaves it after its send: delivered, finished.
    fn finished(mut alert: StoredAlert) -> StoredAlert {
        alert.routed = true;
        alert.finished_ms = Some(now_ms());
        alert
    }

    #[tokio::test]
    async fn an_outcome_rides_in_the_next_commit_or_is_committed_within_the_hold_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = queue(dir.path());
        let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
        let before = Instant::now();
        q.save_outcome(&finished(q.get(a).unwrap().unwrap()))
            .await
            .unwrap();
        if before.elapsed() < HOLD_OUTCOMES / 2 {
            assert!(
                !q.get(a).unwrap().unwrap().is_finished(),
                "an outcome does not get a commit of its own at once"
            );
        }
        // The next enqueue's commit carries it.
        q.enqueue("s", Alert::new("b")).await.unwrap();
        assert!(q.get(a).unwrap().unwrap().is_finished());

        // With nothing after it, it is committed within the hold time.
        let c = q.enqueue("s", Alert::new("c")).await.unwrap().id;
        q.save_outcome(&finished(q.get(c).unwrap().unwrap()))
            .await
            .unwrap();
        let deadline = Instant::now() + HOLD_OUTCOMES * 50;
        while !q.get(c).unwrap().unwrap().is_finished() {
            assert!(
                Instant::now() < deadline,
                "the held outcome was never committed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn saves_keep_their_order_and_close_commits_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let q = queue(dir.path());
            let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
            let b = q.enqueue("s", Alert::new("b")).await.unwrap().id;
            // An outcome, then a later durable save of the same alert: the later one stands.
            let mut doc = q.get(a).unwrap().unwrap();
            q.save_outcome(&finished(doc.clone())).await.unwrap();
            doc.routed = true;
            q.save(&doc).await.unwrap();
            assert_eq!(q.get(a).unwrap().unwrap(), doc);
            // A durable save, then an outcome held when the queue closes.
            let doc = q.get(b).unwrap().unwrap();
            q.save(&doc).await.unwrap();
            q.save_outcome(&finished(doc)).await.unwrap();
            (a, b)
        };
        let q = queue(dir.path());
        assert!(!q.get(a).unwrap().unwrap().is_finished());
        assert!(
            q.get(b).unwrap().unwrap().is_finished(),
            "an outcome held at close is committed before the file closes"
        );
        assert_eq!(
            q.unfinished()
                .unwrap()
                .iter()
                .map(|x| x.id)
                .collect::<Vec<_>>(),
            [a]
        );
    }
}
