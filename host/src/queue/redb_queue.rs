//! The embedded queue on redb: one writer thread that batches every pending command into one
//! write transaction (group commit), and read transactions for everything else.
//!
//! ```text
//! alerts     u64 id  -> JSON StoredAlert
//! dedup_log  u64 id  -> (key hash, accepted unix ms), for alerts that have a dedup key
//! meta       "next_id" -> u64
//! ```
//!
//! Dedup lookups go to an index in the writer's memory, rebuilt from `dedup_log` on open: the
//! log is written in id order (appends to the B-tree's last page) and pruned from its start, so
//! a commit rewrites a few pages instead of one per random key — indexing the keys themselves in
//! redb made every commit rewrite most of that table. The key hash is the first 128 bits of
//! SHA-256 over the source and the key: no sender can craft a key that collides with another's
//! and so suppress its alert.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::Alert;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::{BoxFuture, Enqueued, OnCommit, Queue, QueueError, Taken};
use crate::model::{StoredAlert, now_ms};

const ALERTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("alerts");
const DEDUP_LOG: TableDefinition<'_, u64, (u128, i64)> = TableDefinition::new("dedup_log");
/// The dedup table of earlier versions, keyed by the key itself; dropped on open (its entries
/// only matter within the dedup window).
const DEDUP_V1: TableDefinition<'_, &str, (u64, i64)> = TableDefinition::new("dedup");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// Commands at most per commit; more wait for the next one.
const MAX_BATCH: usize = 8192;
/// How often old history and dedup entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// Work for the writer thread. Documents arrive encoded: serialization happens on the callers'
/// threads, in parallel, and the writer only touches the database.
enum Cmd {
    Enqueue {
        dedup: Option<u128>,
        alert: Box<StoredAlert>,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<Taken, QueueError>>,
    },
    Save {
        id: u64,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// The embedded, crash-safe queue.
pub struct RedbQueue {
    db: Arc<Database>,
    tx: Option<mpsc::Sender<Cmd>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for RedbQueue {
    /// Lets the writer finish what it was given, so the file is closed when this returns.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl RedbQueue {
    /// Opens (or creates) the queue in `dir`, and starts its writer thread.
    pub fn open(
        dir: &Path,
        dedup_window: Duration,
        history_max: usize,
        on_commit: OnCommit,
    ) -> Result<Self, QueueError> {
        std::fs::create_dir_all(dir).map_err(QueueError::storage)?;
        let path = dir.join("queue.redb");
        let db = Database::create(&path).map_err(|source| QueueError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let window_ms = dedup_window.as_millis() as i64;
        let txn = db.begin_write().map_err(QueueError::storage)?;
        let seen = {
            txn.open_table(ALERTS).map_err(QueueError::storage)?;
            txn.open_table(META).map_err(QueueError::storage)?;
            txn.delete_table(DEDUP_V1).map_err(QueueError::storage)?;
            let log = txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?;
            let cutoff = now_ms() - window_ms;
            let mut seen = HashMap::new();
            for entry in log.iter().map_err(QueueError::storage)? {
                let (id, v) = entry.map_err(QueueError::storage)?;
                let (key, at) = v.value();
                if at >= cutoff {
                    seen.insert(key, (id.value(), at));
                }
            }
            seen
        };
        txn.commit().map_err(QueueError::storage)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            db: Arc::clone(&db),
            window_ms,
            history_max,
            on_commit,
            seen,
        };
        let writer = thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(QueueError::storage)?;
        Ok(Self {
            db,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    fn send(&self, cmd: Cmd) -> Result<(), QueueError> {
        self.tx
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(cmd)
            .map_err(|_| QueueError::Closed)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<u64, &[u8]>) -> Result<T, QueueError>,
    ) -> Result<T, QueueError> {
        let txn = self.db.begin_read().map_err(QueueError::storage)?;
        let table = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        f(&table)
    }
}

/// The dedup table's key for `key` from `source`.
fn dedup_hash(source: &str, key: &str) -> u128 {
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

fn decode(id: u64, bytes: &[u8]) -> Result<StoredAlert, QueueError> {
    let mut alert: StoredAlert =
        serde_json::from_slice(bytes).map_err(|source| QueueError::Corrupt { id, source })?;
    alert.id = id;
    Ok(alert)
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
        let (reply, rx) = oneshot::channel();
        let sent = serde_json::to_vec(alert)
            .map_err(QueueError::storage)
            .and_then(|json| {
                self.send(Cmd::Save {
                    id: alert.id,
                    json,
                    reply,
                })
            });
        Box::pin(async move {
            sent?;
            rx.await.map_err(|_| QueueError::Closed)?
        })
    }

    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        self.read(|t| {
            let mut out = Vec::new();
            for entry in t.iter().map_err(QueueError::storage)? {
                let (k, v) = entry.map_err(QueueError::storage)?;
                let alert = decode(k.value(), v.value())?;
                if !alert.is_finished() {
                    out.push(alert);
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
                out.push(decode(k.value(), v.value())?);
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
}

struct Writer {
    db: Arc<Database>,
    window_ms: i64,
    history_max: usize,
    on_commit: OnCommit,
    /// Key hash → (alert id, accepted unix ms): every committed `dedup_log` entry within the
    /// window (expired ones until the next prune), plus the current batch's.
    seen: HashMap<u128, (u64, i64)>,
}

enum Reply {
    Enqueued(
        oneshot::Sender<Result<Taken, QueueError>>,
        Box<StoredAlert>,
        Taken,
    ),
    Saved(oneshot::Sender<Result<(), QueueError>>),
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        let mut last_prune = Instant::now();
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            let prune = last_prune.elapsed() >= PRUNE_EVERY;
            if prune {
                last_prune = Instant::now();
            }
            self.commit(batch, prune);
        }
    }

    /// Applies a batch in one transaction and answers every command after the commit.
    fn commit(&mut self, batch: Vec<Cmd>, prune: bool) {
        let mut replies = Vec::with_capacity(batch.len());
        // What this batch did to `seen`, to take back if the commit fails.
        let mut undo = Vec::new();
        let result = (|| -> Result<(), QueueError> {
            let mut txn = self.db.begin_write().map_err(QueueError::storage)?;
            txn.set_durability(Durability::Immediate);
            {
                let mut meta = txn.open_table(META).map_err(QueueError::storage)?;
                let first_id = meta
                    .get("next_id")
                    .map_err(QueueError::storage)?
                    .map_or(1, |v| v.value());
                let mut t = Tables {
                    alerts: txn.open_table(ALERTS).map_err(QueueError::storage)?,
                    dedup_log: txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?,
                    next_id: first_id,
                };
                for cmd in batch {
                    match cmd {
                        Cmd::Enqueue {
                            dedup,
                            alert,
                            json,
                            reply,
                        } => {
                            let taken =
                                self.enqueue(&mut t, &mut undo, dedup, alert.accepted_ms, &json)?;
                            replies.push(Reply::Enqueued(reply, alert, taken));
                        }
                        Cmd::Save { id, json, reply } => {
                            t.alerts
                                .insert(id, json.as_slice())
                                .map_err(QueueError::storage)?;
                            replies.push(Reply::Saved(reply));
                        }
                    }
                }
                if t.next_id != first_id {
                    meta.insert("next_id", t.next_id)
                        .map_err(QueueError::storage)?;
                }
                if prune {
                    self.prune(&mut t)?;
                }
            }
            txn.commit().map_err(QueueError::storage)
        })();
        match result {
            Ok(()) => {
                for r in replies {
                    match r {
                        Reply::Enqueued(tx, mut alert, taken) => {
                            alert.id = taken.id;
                            (self.on_commit)(Enqueued {
                                alert: *alert,
                                duplicate: taken.duplicate,
                            });
                            drop(tx.send(Ok(taken)));
                        }
                        Reply::Saved(tx) => drop(tx.send(Ok(()))),
                    }
                }
            }
            Err(e) => {
                for (key, before) in undo.into_iter().rev() {
                    match before {
                        Some(v) => self.seen.insert(key, v),
                        None => self.seen.remove(&key),
                    };
                }
                tracing::error!(error = %crate::error_chain(&e), commands = replies.len(), "Queue commit failed; nothing in it was acknowledged.");
                let failed = || QueueError::storage(std::io::Error::other(e.to_string()));
                for r in replies {
                    match r {
                        Reply::Enqueued(tx, ..) => drop(tx.send(Err(failed()))),
                        Reply::Saved(tx) => drop(tx.send(Err(failed()))),
                    }
                }
            }
        }
    }

    fn enqueue(
        &mut self,
        t: &mut Tables<'_>,
        undo: &mut Vec<(u128, Option<(u64, i64)>)>,
        dedup: Option<u128>,
        accepted_ms: i64,
        json: &[u8],
    ) -> Result<Taken, QueueError> {
        if let Some(key) = dedup
            && let Some(&(id, at)) = self.seen.get(&key)
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
            undo.push((key, self.seen.insert(key, (id, accepted_ms))));
        }
        Ok(Taken {
            id,
            duplicate: false,
        })
    }

    /// Drops finished alerts beyond the history size, and dedup entries past the window.
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
        // The log is in id order, which is acceptance order: expired entries are at its start.
        let cutoff = now_ms() - self.window_ms;
        let mut expired = Vec::new();
        for entry in t.dedup_log.iter().map_err(QueueError::storage)? {
            let (id, v) = entry.map_err(QueueError::storage)?;
            if v.value().1 >= cutoff {
                break;
            }
            expired.push(id.value());
        }
        for id in expired {
            t.dedup_log.remove(id).map_err(QueueError::storage)?;
        }
        self.seen.retain(|_, (_, at)| *at >= cutoff);
        Ok(())
    }
}

/// The tables one write transaction works on, and the id its next new alert gets.
struct Tables<'txn> {
    alerts: redb::Table<'txn, u64, &'static [u8]>,
    dedup_log: redb::Table<'txn, u64, (u128, i64)>,
    next_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn expired_dedup_keys_are_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = RedbQueue::open(dir.path(), Duration::ZERO, 100, Box::new(drop)).unwrap();
        q.enqueue("s", keyed("a", "k")).await.unwrap();
        assert!(!q.enqueue("s", keyed("a", "k")).await.unwrap().duplicate);
    }
}
