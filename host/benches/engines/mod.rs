//! Candidate storage engines for the durable queue, measured in the queue-only table of the
//! pipeline bench beside the real backends (redb, the segment log).
//!
//! Each candidate is driven through the same [`Queue`] harness by [`KvQueue`]: one writer
//! thread takes every waiting command into one durable commit (group commit), an outcome save
//! waits up to [`HOLD`] for a commit to ride in (like the real writers), and ids are given in
//! order. Only the write pattern is modelled — an accepted alert and each save store the whole
//! document under its id — with no dedup index and no pruning, so a candidate's row is a lower
//! bound of what a full backend on it would cost. `redb (model)` runs the same harness on
//! redb, to calibrate the model against the real redb backend.

use std::{
    path::Path,
    sync::{Mutex, PoisonError, mpsc},
    thread,
    time::Duration,
};

use alertbridge::{
    model::{StoredAlert, now_ms},
    queue::{BoxFuture, Enqueued, OnCommit, Queue, QueueError, Taken},
};
use tokio::sync::oneshot;

/// How long an outcome waits at most for a commit to ride in.
const HOLD: Duration = Duration::from_millis(10);
const MAX_BATCH: usize = 8192;

/// A store that writes a batch of (id, document) durably in one commit.
pub trait Engine: Send + 'static {
    fn write(&mut self, batch: &[(u64, &[u8])]) -> Result<(), String>;
}

enum Op {
    Enqueue {
        alert: Box<StoredAlert>,
        json: Vec<u8>,
        reply: oneshot::Sender<Result<Taken, QueueError>>,
    },
    Save {
        id: u64,
        json: Vec<u8>,
        reply: Option<oneshot::Sender<Result<(), QueueError>>>,
    },
}

/// A queue on an [`Engine`] (see the module doc).
pub struct KvQueue {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<thread::JoinHandle<()>>>,
}

impl KvQueue {
    pub fn new(mut engine: impl Engine, on_commit: OnCommit) -> Self {
        let (tx, rx) = mpsc::channel::<Op>();
        let writer = thread::spawn(move || {
            let mut next_id = 1;
            let mut pending: Vec<Op> = Vec::new();
            let mut open = true;
            while open || !pending.is_empty() {
                // Wait for work; with only outcomes waiting, at most the hold time.
                let got = if pending.is_empty() {
                    rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(HOLD)
                };
                let mut timed_out = false;
                match got {
                    Ok(op) => pending.push(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => timed_out = true,
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
                pending.extend(rx.try_iter().take(MAX_BATCH));
                let urgent = pending
                    .iter()
                    .any(|op| matches!(op, Op::Enqueue { .. } | Op::Save { reply: Some(_), .. }));
                if pending.is_empty() || (!urgent && !timed_out && open) {
                    continue;
                }
                let batch = std::mem::take(&mut pending);
                commit(&mut engine, batch, &mut next_id, &on_commit);
            }
        });
        Self {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }
    }

    fn send(&self, op: Op) -> Result<(), QueueError> {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(op)
            .map_err(|_| QueueError::Closed)
    }

    fn save_as(
        &self,
        alert: &StoredAlert,
        durable: bool,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        let (reply, rx) = if durable {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = serde_json::to_vec(alert)
            .map_err(|e| QueueError::Storage(Box::new(e)))
            .and_then(|json| {
                self.send(Op::Save {
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
}

/// Writes `batch` in one durable commit and answers it.
fn commit(engine: &mut impl Engine, batch: Vec<Op>, next_id: &mut u64, on_commit: &OnCommit) {
    let mut rows: Vec<(u64, &[u8])> = Vec::with_capacity(batch.len());
    let mut ids = Vec::with_capacity(batch.len());
    for op in &batch {
        match op {
            Op::Enqueue { json, .. } => {
                ids.push(*next_id);
                rows.push((*next_id, json));
                *next_id += 1;
            }
            Op::Save { id, json, .. } => rows.push((*id, json)),
        }
    }
    let result = engine.write(&rows);
    drop(rows);
    let mut ids = ids.into_iter();
    for op in batch {
        match op {
            Op::Enqueue {
                mut alert, reply, ..
            } => {
                let id = ids.next().unwrap_or_default();
                if let Err(e) = &result {
                    drop(reply.send(Err(failed(e))));
                    continue;
                }
                alert.id = id;
                on_commit(Enqueued {
                    alert: *alert,
                    duplicate: false,
                    origin: alertbridge::queue::Origin::Accepted,
                });
                drop(reply.send(Ok(Taken {
                    id,
                    duplicate: false,
                })));
            }
            Op::Save {
                reply: Some(reply), ..
            } => drop(reply.send(result.as_ref().map(drop).map_err(|e| failed(e)))),
            Op::Save { reply: None, .. } => {}
        }
    }
}

fn failed(e: &str) -> QueueError {
    QueueError::Storage(e.to_owned().into())
}

impl Queue for KvQueue {
    fn enqueue(
        &self,
        source: &str,
        alert: alertbridge_plugin_api::Alert,
    ) -> BoxFuture<'static, Result<Taken, QueueError>> {
        let stored = StoredAlert::new(0, source, alert, now_ms());
        let (reply, rx) = oneshot::channel();
        let sent = serde_json::to_vec(&stored)
            .map_err(|e| QueueError::Storage(Box::new(e)))
            .and_then(|json| {
                self.send(Op::Enqueue {
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
        self.save_as(alert, true)
    }

    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save_as(alert, false)
    }

    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        Ok(Vec::new())
    }

    fn recent(&self, _limit: usize) -> Result<Vec<StoredAlert>, QueueError> {
        Ok(Vec::new())
    }

    fn get(&self, _id: u64) -> Result<Option<StoredAlert>, QueueError> {
        Ok(None)
    }

    fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        if let Some(w) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = w.join();
        }
    }
}

/// redb with the real backend's durability (every commit fsynced).
pub struct RedbModel(redb::Database);

const DOCS: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("alerts");

impl RedbModel {
    pub fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        Self(redb::Database::create(dir.join("queue.redb")).expect("redb"))
    }
}

impl Engine for RedbModel {
    fn write(&mut self, batch: &[(u64, &[u8])]) -> Result<(), String> {
        let txn = self.0.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = txn.open_table(DOCS).map_err(|e| e.to_string())?;
            for (id, json) in batch {
                t.insert(*id, *json).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }
}

/// fjall (an LSM tree): a write batch, then its journal persisted with `SyncData`.
pub struct FjallModel {
    db: fjall::Database,
    docs: fjall::Keyspace,
}

impl FjallModel {
    pub fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("fjall"))
            .open()
            .expect("fjall");
        let docs = db
            .keyspace("alerts", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        Self { db, docs }
    }
}

impl Engine for FjallModel {
    fn write(&mut self, batch: &[(u64, &[u8])]) -> Result<(), String> {
        let mut b = self.db.batch();
        for (id, json) in batch {
            b.insert(&self.docs, id.to_be_bytes(), *json);
        }
        b.commit().map_err(|e| e.to_string())?;
        self.db
            .persist(fjall::PersistMode::SyncData)
            .map_err(|e| e.to_string())
    }
}

/// SQLite in WAL mode with `synchronous = FULL` (the WAL is synced at every commit).
pub struct SqliteModel(rusqlite::Connection);

impl SqliteModel {
    pub fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let c = rusqlite::Connection::open(dir.join("queue.sqlite")).expect("sqlite");
        c.pragma_update(None, "journal_mode", "WAL").expect("wal");
        c.pragma_update(None, "synchronous", "FULL").expect("sync");
        c.execute(
            "CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY, doc BLOB NOT NULL)",
            [],
        )
        .expect("table");
        Self(c)
    }
}

impl Engine for SqliteModel {
    fn write(&mut self, batch: &[(u64, &[u8])]) -> Result<(), String> {
        let tx = self.0.transaction().map_err(|e| e.to_string())?;
        {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO alerts (id, doc) VALUES (?1, ?2)")
                .map_err(|e| e.to_string())?;
            for (id, json) in batch {
                st.execute(rusqlite::params![*id as i64, json])
                    .map_err(|e| e.to_string())?;
            }
        }
        tx.commit().map_err(|e| e.to_string())
    }
}
