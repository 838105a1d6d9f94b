//! The queue file on disk: its tables, its identity marker, and opening it so that a damaged,
//! vanished or emptied file is a clear error — never a panic, never a silent fresh start.
//!
//! ```text
//! data_dir/queue.redb   alerts     u64 id -> JSON StoredAlert
//!                       dedup_log  u64 id -> (key hash, accepted unix ms)
//!                       set_aside  u64 id -> the bytes of a record that did not decode
//!                       meta       "next_id", "queue_id" -> u64
//! data_dir/queue.id     "<queue_id as 16 hex digits>": written when the file is created, so a
//!                       file that later vanishes or comes back empty is noticed
//! ```

use std::{
    fs,
    io::Write as _,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{QueueError, dedup::DedupIndex};
use crate::model::{StoredAlert, now_ms};

pub(super) const ALERTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("alerts");
pub(super) const DEDUP_LOG: TableDefinition<'_, u64, (u128, i64)> =
    TableDefinition::new("dedup_log");
pub(super) const SET_ASIDE: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("set_aside");
/// The dedup table of earlier versions, keyed by the key itself; dropped on open (its entries
/// only matter within the dedup window).
const DEDUP_V1: TableDefinition<'_, &str, (u64, i64)> = TableDefinition::new("dedup");
pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

pub(super) const FILE: &str = "queue.redb";
pub(super) const MARKER: &str = "queue.id";
/// redb's page cache. Its default (1 GiB) grew with the history written: 96,000 alerts took
/// the host's RSS up by ~56 MB with 32 MiB here, ~22 MB with 4 MiB (see tests/tests/queue_memory.rs).
const CACHE_BYTES: usize = 8 << 20;

pub(super) fn file_path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Alerts are private whatever the umask: the data folder 0700, the queue file 0600.
fn private(path: &Path, mode: u32) -> Result<(), QueueError> {
    crate::private::restrict(path, mode).map_err(file_error(path))
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::File {
        path: path.display().to_string(),
        source,
    }
}

/// The queue id the data folder's marker names, if there is one. The id is a number written in
/// base 16 by std's formatting and radix parsing, not bytes: the `hex` crate adds nothing here.
pub(super) fn read_marker(dir: &Path) -> Result<Option<u64>, QueueError> {
    let path = dir.join(MARKER);
    match fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map(Some)
            .map_err(|_| QueueError::File {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a queue id (16 hex digits)",
                ),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(file_error(&path)(e)),
    }
}

/// Writes the marker atomically (temporary file, fsync, rename, fsync of the folder).
pub(super) fn write_marker(dir: &Path, id: u64) -> Result<(), QueueError> {
    let path = dir.join(MARKER);
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(file_error(&tmp))?;
    writeln!(f, "{id:016x}").map_err(file_error(&tmp))?;
    f.sync_all().map_err(file_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(file_error(&path))?;
    sync_dir(dir)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error(dir))
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Bytes written (and synced) by [`probe_room`].
const PROBE_BYTES: usize = 1 << 20;

/// Whether the data folder takes writes again: writes, syncs and removes a 1 MiB file. The
/// queue file itself reopens without new space, so only this tells a disk still full from
/// one that has room.
pub(super) fn probe_room(dir: &Path) -> Result<(), QueueError> {
    let path = dir.join(".queue-space-probe");
    let written = fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = fs::remove_file(&path);
    written.map_err(|source| QueueError::File {
        path: path.display().to_string(),
        source,
    })
}

/// A panic inside redb as a storage error.
pub(super) fn panicked(p: &(dyn std::any::Any + Send)) -> QueueError {
    QueueError::storage(std::io::Error::other(format!(
        "redb gave up: {}",
        panic_text(p)
    )))
}

/// Runs `f`, turning a panic inside redb (it asserts on some damaged files) into an error
/// naming the file. With `quiet`, the panic message is not printed (it becomes the error).
pub(super) fn guarded<T>(path: &Path, quiet: bool, f: impl FnOnce() -> T) -> Result<T, QueueError> {
    let hook = quiet.then(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        hook
    });
    let result = catch_unwind(AssertUnwindSafe(f));
    if let Some(hook) = hook {
        std::panic::set_hook(hook);
    }
    result.map_err(|p| {
        damaged(
            path,
            format!("redb gave up reading it: {}", panic_text(&*p)),
        )
    })
}

pub(super) fn damaged(path: &Path, detail: String) -> QueueError {
    let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    QueueError::Damaged {
        path: path.display().to_string(),
        detail: format!("{detail}; {size} bytes"),
    }
}

/// Opens (or creates) the redb file at `path`; damage is an error, not a panic.
pub(super) fn open_db(path: &Path, quiet: bool) -> Result<Database, QueueError> {
    let opened = guarded(path, quiet, || {
        Database::builder().set_cache_size(CACHE_BYTES).create(path)
    })?;
    if opened.is_ok() {
        private(path, crate::private::FILE_MODE)?;
    }
    opened.map_err(|source| match source {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            damaged(path, detail)
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            damaged(path, format!("its header is not a queue file's: {e}"))
        }
        redb::DatabaseError::RepairAborted => damaged(path, "redb could not repair it".into()),
        source => QueueError::Open {
            path: path.display().to_string(),
            source,
        },
    })
}

/// Opens the queue file in `dir` with every start check: a file that vanished or is empty
/// while the marker says it existed is refused (unless `accept_empty`), a damaged one is an
/// error, and a file that is not this folder's queue is refused.
pub(super) fn open_checked(
    dir: &Path,
    accept_empty: bool,
    quiet: bool,
) -> Result<Database, QueueError> {
    fs::create_dir_all(dir).map_err(file_error(dir))?;
    private(dir, 0o700)?;
    let path = file_path(dir);
    let marker = read_marker(dir)?;
    let what = match fs::metadata(&path) {
        Ok(m) if m.len() == 0 => Some("is empty (0 bytes)"),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("is missing"),
        Err(e) => return Err(file_error(&path)(e)),
    };
    let vanished = |what| QueueError::Vanished {
        path: path.display().to_string(),
        what,
        marker: dir.join(MARKER).display().to_string(),
        id: marker.unwrap_or_default(),
    };
    if let (Some(what), Some(_), false) = (what, marker, accept_empty) {
        return Err(vanished(what));
    }
    let db = open_db(&path, quiet)?;
    let id = guarded(&path, quiet, || identify(&db))??;
    match (id, marker) {
        (Identity::Known(found), Some(expected)) if found != expected && !accept_empty => {
            return Err(vanished("is another queue's (a different queue id)"));
        }
        (Identity::Fresh, Some(_)) if !accept_empty => {
            return Err(vanished("holds nothing"));
        }
        _ => {}
    }
    let id = match id {
        Identity::Known(id) => id,
        Identity::Fresh | Identity::Unmarked => {
            // A file from before queue ids adopts the marker's; a fresh one gets a new id.
            let id = match id {
                Identity::Unmarked => marker.unwrap_or_else(rand::random),
                _ => rand::random(),
            };
            let txn = db.begin_write().map_err(QueueError::storage)?;
            txn.open_table(META)
                .map_err(QueueError::storage)?
                .insert("queue_id", id)
                .map_err(QueueError::storage)?;
            txn.commit().map_err(QueueError::storage)?;
            id
        }
    };
    if marker != Some(id) {
        if marker.is_some() {
            tracing::warn!(
                path = %path.display(),
                "Starting on this queue file although the data folder named another (--accept-empty-queue)."
            );
        }
        write_marker(dir, id)?;
    }
    Ok(db)
}

#[derive(Clone, Copy)]
enum Identity {
    /// The file carries this queue id.
    Known(u64),
    /// A file with data from a version before queue ids.
    Unmarked,
    /// A file with nothing in it.
    Fresh,
}

fn identify(db: &Database) -> Result<Identity, QueueError> {
    let txn = db.begin_read().map_err(QueueError::storage)?;
    let meta = match txn.open_table(META) {
        Ok(m) => m,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Identity::Fresh),
        Err(e) => return Err(QueueError::storage(e)),
    };
    if let Some(id) = meta.get("queue_id").map_err(QueueError::storage)? {
        return Ok(Identity::Known(id.value()));
    }
    Ok(
        if meta.get("next_id").map_err(QueueError::storage)?.is_some() {
            Identity::Unmarked
        } else {
            Identity::Fresh
        },
    )
}

/// What the writer starts from after an open.
pub(super) struct Loaded {
    pub dedup: DedupIndex,
    pub next_id: u64,
    /// Records set aside by this open (ids), and how many are set aside in all.
    pub set_aside_now: Vec<u64>,
    pub set_aside_total: u64,
}

/// Prepares an opened file: creates missing tables, drops the old dedup table, sets aside
/// every alert record that does not decode, and rebuilds the dedup index from the log.
pub(super) fn load(
    db: &Database,
    window_ms: i64,
    max_keys: usize,
    path: &Path,
    quiet: bool,
) -> Result<Loaded, QueueError> {
    guarded(path, quiet, || load_inner(db, window_ms, max_keys))?
}

fn load_inner(db: &Database, window_ms: i64, max_keys: usize) -> Result<Loaded, QueueError> {
    let txn = db.begin_write().map_err(QueueError::storage)?;
    let loaded = {
        let mut alerts = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        let mut aside = txn.open_table(SET_ASIDE).map_err(QueueError::storage)?;
        let meta = txn.open_table(META).map_err(QueueError::storage)?;
        txn.delete_table(DEDUP_V1).map_err(QueueError::storage)?;
        let log = txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?;
        let mut bad = Vec::new();
        let mut last = 0;
        for entry in alerts.iter().map_err(QueueError::storage)? {
            let (k, v) = entry.map_err(QueueError::storage)?;
            last = k.value();
            if let Err(e) = serde_json::from_slice::<StoredAlert>(v.value()) {
                bad.push((k.value(), v.value().to_vec(), e));
            }
        }
        let mut set_aside_now = Vec::new();
        for (id, bytes, error) in bad {
            tracing::error!(alert = id, bytes = bytes.len(), error = %error, "Queue record does not decode; set aside (see `alertbridge queue check`), the others go on.");
            aside
                .insert(id, bytes.as_slice())
                .map_err(QueueError::storage)?;
            alerts.remove(id).map_err(QueueError::storage)?;
            set_aside_now.push(id);
        }
        let next_id = meta
            .get("next_id")
            .map_err(QueueError::storage)?
            .map_or(1, |v| v.value())
            .max(last + 1);
        let cutoff = now_ms() - window_ms;
        let mut dedup = DedupIndex::new(max_keys);
        for entry in log.iter().map_err(QueueError::storage)? {
            let (id, v) = entry.map_err(QueueError::storage)?;
            let (key, at) = v.value();
            if at >= cutoff {
                dedup.insert(key, (id.value(), at));
            }
        }
        dedup.take_evicted();
        Loaded {
            dedup,
            next_id,
            set_aside_now,
            set_aside_total: aside.len().map_err(QueueError::storage)?,
        }
    };
    txn.commit().map_err(QueueError::storage)?;
    Ok(loaded)
}
