//! Where silences are kept: the [`SilenceStore`] trait (so a shared backend can replace the
//! embedded one), the embedded redb file and an in-memory store for tests.
//!
//! ```text
//! data_dir/silences.redb   silences      u64 id -> JSON Silence
//!                          silence_meta  "next_id" -> u64 (ids are never reused)
//! ```
//!
//! The file is separate from the queue's: a silence is committed before the API answers 201,
//! and a restart loads every one.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use futures::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Silence, SilenceError};

const SILENCES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("silences");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("silence_meta");
const NEXT_ID: &str = "next_id";
/// The file's name in the data folder.
pub const FILE: &str = "silences.redb";

/// Durable storage of silences.
pub trait SilenceStore: Send + Sync + 'static {
    /// Every stored silence that can be read. A damaged record is left in place and reported
    /// beside the others (the host keeps the rest rather than refuse to start).
    fn load(&self) -> Result<(Vec<Silence>, Vec<SilenceError>), SilenceError>;

    /// Gives `draft` the next id (never one used before) and stores it. Resolves after commit.
    fn create(&self, draft: Silence) -> BoxFuture<'static, Result<Silence, SilenceError>>;

    /// Stores the silence's current state (an early expiry). Resolves after commit.
    fn save(&self, silence: &Silence) -> BoxFuture<'static, Result<(), SilenceError>>;

    /// Forgets these silences (pruned after their time). Resolves after commit.
    fn remove(&self, ids: Vec<u64>) -> BoxFuture<'static, Result<(), SilenceError>>;

    /// Other hosts change this store too (a shared database): the host then re-reads it every
    /// [`super::REFRESH_EVERY`] to see their silences. The embedded file is this host's alone.
    fn shared(&self) -> bool {
        false
    }
}

/// Silences in memory; clones share them (a "restart" in tests opens a registry on a clone,
/// and two registries on clones of a [`MemorySilences::shared`] one stand for two hosts).
#[derive(Clone, Default)]
pub struct MemorySilences {
    inner: Arc<Mutex<(u64, BTreeMap<u64, Silence>)>>,
    shared: bool,
}

impl MemorySilences {
    /// A store that says it is shared between hosts.
    pub fn shared() -> Self {
        Self {
            shared: true,
            ..Self::default()
        }
    }
}

impl SilenceStore for MemorySilences {
    fn load(&self) -> Result<(Vec<Silence>, Vec<SilenceError>), SilenceError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok((inner.1.values().cloned().collect(), Vec::new()))
    }

    fn create(&self, mut draft: Silence) -> BoxFuture<'static, Result<Silence, SilenceError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.0 += 1;
        draft.id = inner.0;
        inner.1.insert(draft.id, draft.clone());
        Box::pin(async move { Ok(draft) })
    }

    fn save(&self, silence: &Silence) -> BoxFuture<'static, Result<(), SilenceError>> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .insert(silence.id, silence.clone());
        Box::pin(async { Ok(()) })
    }

    fn remove(&self, ids: Vec<u64>) -> BoxFuture<'static, Result<(), SilenceError>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for id in ids {
            inner.1.remove(&id);
        }
        Box::pin(async { Ok(()) })
    }

    fn shared(&self) -> bool {
        self.shared
    }
}

/// Silences in `data_dir/silences.redb`; each change is one durable write transaction.
pub struct RedbSilences {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbSilences {
    /// Opens (or creates) the file in `dir`.
    pub fn open(dir: &Path) -> Result<Self, SilenceError> {
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(SilenceError::storage)?;
        crate::private::restrict(&path, crate::private::FILE_MODE)
            .map_err(SilenceError::storage)?;
        let tx = db.begin_write().map_err(SilenceError::storage)?;
        tx.open_table(SILENCES).map_err(SilenceError::storage)?;
        tx.open_table(META).map_err(SilenceError::storage)?;
        tx.commit().map_err(SilenceError::storage)?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction on a blocking thread and commits it.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, SilenceError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, SilenceError>> {
        let db = Arc::clone(&self.db);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let tx = db.begin_write().map_err(SilenceError::storage)?;
                let out = f(&tx)?;
                tx.commit().map_err(SilenceError::storage)?;
                Ok(out)
            })
            .await
            .map_err(SilenceError::storage)?
        })
    }
}

fn encode(s: &Silence) -> Result<Vec<u8>, SilenceError> {
    serde_json::to_vec(s).map_err(|source| SilenceError::Corrupt { id: s.id, source })
}

impl SilenceStore for RedbSilences {
    fn load(&self) -> Result<(Vec<Silence>, Vec<SilenceError>), SilenceError> {
        let tx = self.db.begin_read().map_err(SilenceError::storage)?;
        let table = tx.open_table(SILENCES).map_err(SilenceError::storage)?;
        let (mut out, mut damaged) = (Vec::new(), Vec::new());
        for row in table.iter().map_err(SilenceError::storage)? {
            let (k, v) = row.map_err(SilenceError::storage)?;
            match serde_json::from_slice::<Silence>(v.value()) {
                Ok(s) => out.push(s),
                Err(source) => damaged.push(SilenceError::Corrupt {
                    id: k.value(),
                    source,
                }),
            }
        }
        Ok((out, damaged))
    }

    fn create(&self, mut draft: Silence) -> BoxFuture<'static, Result<Silence, SilenceError>> {
        self.write(move |tx| {
            let mut meta = tx.open_table(META).map_err(SilenceError::storage)?;
            let mut table = tx.open_table(SILENCES).map_err(SilenceError::storage)?;
            let stored_next = meta
                .get(NEXT_ID)
                .map_err(SilenceError::storage)?
                .map_or(1, |v| v.value());
            // Past the highest id in the table too, should the counter ever be behind it.
            let above = table
                .last()
                .map_err(SilenceError::storage)?
                .map_or(1, |(k, _)| k.value() + 1);
            draft.id = stored_next.max(above);
            meta.insert(NEXT_ID, draft.id + 1)
                .map_err(SilenceError::storage)?;
            table
                .insert(draft.id, encode(&draft)?.as_slice())
                .map_err(SilenceError::storage)?;
            Ok(draft)
        })
    }

    fn save(&self, silence: &Silence) -> BoxFuture<'static, Result<(), SilenceError>> {
        let (id, bytes) = (silence.id, encode(silence));
        self.write(move |tx| {
            let bytes = bytes?;
            let mut table = tx.open_table(SILENCES).map_err(SilenceError::storage)?;
            table
                .insert(id, bytes.as_slice())
                .map_err(SilenceError::storage)?;
            Ok(())
        })
    }

    fn remove(&self, ids: Vec<u64>) -> BoxFuture<'static, Result<(), SilenceError>> {
        self.write(move |tx| {
            let mut table = tx.open_table(SILENCES).map_err(SilenceError::storage)?;
            for id in ids {
                table.remove(id).map_err(SilenceError::storage)?;
            }
            Ok(())
        })
    }
}
