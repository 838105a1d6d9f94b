//! `alertbridge queue check` and `alertbridge queue salvage`: say what is wrong with a queue
//! file, and copy every readable alert of a damaged one into a fresh file, keeping the damaged
//! one aside. Both run with the bridge stopped (the file lock says whether it runs).
//!
//! Salvage reads the file through redb where redb can open it (iterating, then probing each id
//! where a damaged page stops the iteration), and scans its raw bytes for alert documents
//! where it cannot (a truncated file): every document found there keeps the most advanced of
//! its versions (by its uid) and gets a new id, in acceptance order.

use std::{
    collections::{BTreeMap, HashSet},
    fmt, fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::{
    QueueError,
    redb_queue::dedup_hash,
    store::{self, ALERTS, DEDUP_LOG, META, SET_ASIDE},
};
use crate::model::{StoredAlert, now_ms};

/// Silences the panic hook while damaged files are read (their panics become findings).
type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send>;

struct QuietPanics(Option<PanicHook>);

impl QuietPanics {
    fn new() -> Self {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        Self(Some(hook))
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(hook) = self.0.take() {
            std::panic::set_hook(hook);
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Refuses to touch a file a running bridge holds.
fn ensure_not_in_use(path: &Path) -> Result<(), QueueError> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    };
    match f.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(io(path)(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            "a running alertbridge holds it; stop it first",
        ))),
        Err(fs::TryLockError::Error(e)) => Err(io(path)(e)),
    }
}

/// What `alertbridge queue check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub facts: Vec<String>,
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.facts {
            writeln!(f, "{l}")?;
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        if self.problems.is_empty() {
            writeln!(f, "queue ok")
        } else {
            writeln!(
                f,
                "{} problem{} found; `alertbridge queue salvage` copies every readable alert into a fresh file",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" }
            )
        }
    }
}

/// Checks the queue in `dir` without changing it (redb's integrity check runs on a copy).
pub fn check(dir: &Path) -> Result<CheckReport, QueueError> {
    let path = store::file_path(dir);
    ensure_not_in_use(&path)?;
    let mut r = CheckReport::default();
    let marker = store::read_marker(dir)?;
    match marker {
        Some(id) => r
            .facts
            .push(format!("data folder marker: queue id {id:016x}")),
        None => r.facts.push("data folder marker: none".into()),
    }
    let size = match fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            r.facts.push(format!("{}: missing", path.display()));
            if marker.is_some() {
                r.problems.push("the queue file is missing but the data folder says it held data (alerts not finished and the dedup window are gone unless it is restored)".into());
            }
            return Ok(r);
        }
        Err(e) => return Err(io(&path)(e)),
    };
    r.facts.push(format!("{}: {size} bytes", path.display()));
    if size == 0 {
        if marker.is_some() {
            r.problems.push(
                "the queue file is empty (0 bytes) but the data folder says it held data".into(),
            );
        }
        return Ok(r);
    }
    let copy = dir.join(format!("{}.check", store::FILE));
    fs::copy(&path, &copy).map_err(io(&copy))?;
    let _quiet = QuietPanics::new();
    let result = check_copy(&copy, marker, &mut r);
    let _ = fs::remove_file(&copy);
    if let Err(e) = result {
        r.problems.push(crate::error_chain(&e));
    }
    Ok(r)
}

fn check_copy(copy: &Path, marker: Option<u64>, r: &mut CheckReport) -> Result<(), QueueError> {
    let mut db = store::open_db(copy, true)?;
    match store::guarded(copy, false, || db.check_integrity()) {
        Ok(Ok(true)) => r.facts.push("redb integrity check: ok".into()),
        Ok(Ok(false)) => r.problems.push(
            "redb integrity check: the file was damaged and needed repair (see the counts below)"
                .into(),
        ),
        Ok(Err(e)) => r.problems.push(format!("redb integrity check: {e}")),
        Err(e) => r.problems.push(crate::error_chain(&e)),
    }
    store::guarded(copy, false, || read_counts(&db, marker, r))?
}

fn read_counts(db: &Database, marker: Option<u64>, r: &mut CheckReport) -> Result<(), QueueError> {
    let txn = db.begin_read().map_err(QueueError::storage)?;
    let meta = txn.open_table(META).ok();
    let get = |k: &str| {
        meta.as_ref()
            .and_then(|m| m.get(k).ok().flatten())
            .map(|v| v.value())
    };
    let (queue_id, next_id) = (get("queue_id"), get("next_id"));
    if let (Some(found), Some(expected)) = (queue_id, marker)
        && found != expected
    {
        r.problems.push(format!(
            "the file is queue {found:016x}, the data folder's marker names {expected:016x}"
        ));
    }
    r.facts.push(format!(
        "next alert id: {}",
        next_id.map_or("unset".into(), |n| n.to_string())
    ));
    let Ok(alerts) = txn.open_table(ALERTS) else {
        r.facts.push("alerts: none (a fresh queue)".into());
        return Ok(());
    };
    let (mut total, mut unfinished, mut bad) = (0u64, 0u64, Vec::new());
    for entry in alerts.iter().map_err(QueueError::storage)? {
        match entry {
            Ok((k, v)) => match serde_json::from_slice::<StoredAlert>(v.value()) {
                Ok(a) => {
                    total += 1;
                    unfinished += u64::from(!a.is_finished());
                }
                Err(e) => bad.push(format!("alert {}: {e}", k.value())),
            },
            Err(e) => {
                r.problems
                    .push(format!("reading alerts stopped after {total}: {e}"));
                break;
            }
        }
    }
    r.facts.push(format!(
        "alerts: {total} readable, {unfinished} of them not finished"
    ));
    for b in bad.iter().take(10) {
        r.problems.push(format!("undecodable record: {b}"));
    }
    if bad.len() > 10 {
        r.problems.push(format!(
            "... and {} more undecodable records",
            bad.len() - 10
        ));
    }
    if let Ok(log) = txn.open_table(DEDUP_LOG) {
        r.facts
            .push(format!("dedup log entries: {}", log.len().unwrap_or(0)));
    }
    if let Ok(aside) = txn.open_table(SET_ASIDE) {
        let n = aside.len().unwrap_or(0);
        if n > 0 {
            let ids: Vec<String> = aside
                .iter()
                .map_err(QueueError::storage)?
                .filter_map(Result::ok)
                .take(10)
                .map(|(k, _)| k.value().to_string())
                .collect();
            r.facts.push(format!(
                "records set aside at earlier starts (undecodable): {n} (ids {})",
                ids.join(", ")
            ));
        }
    }
    Ok(())
}

/// What `alertbridge queue salvage` did.
#[derive(Debug)]
pub struct SalvageReport {
    pub kept_aside: PathBuf,
    pub recovered: usize,
    pub unfinished: usize,
    pub set_aside: usize,
    /// Alerts found only by scanning the raw bytes (given new ids).
    pub from_raw_scan: usize,
    /// Why redb could not read everything, if it could not.
    pub damage: Option<String>,
}

impl fmt::Display for SalvageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.damage {
            writeln!(f, "damage: {d}")?;
        }
        writeln!(
            f,
            "recovered {} alerts ({} not finished) into a fresh queue file",
            self.recovered, self.unfinished
        )?;
        if self.from_raw_scan > 0 {
            writeln!(
                f,
                "{} of them found by scanning the file's bytes (new ids, most advanced version of each)",
                self.from_raw_scan
            )?;
        }
        if self.set_aside > 0 {
            writeln!(
                f,
                "{} undecodable records set aside in the fresh file (see `alertbridge queue check`)",
                self.set_aside
            )?;
        }
        writeln!(
            f,
            "the damaged file is kept at {}",
            self.kept_aside.display()
        )
    }
}

/// What redb could still read of a damaged file.
#[derive(Default)]
struct Readable {
    alerts: BTreeMap<u64, Vec<u8>>,
    set_aside: BTreeMap<u64, Vec<u8>>,
    dedup_log: BTreeMap<u64, (u128, i64)>,
    next_id: u64,
    queue_id: Option<u64>,
    /// Why not everything could be read.
    damage: Option<String>,
}

/// Copies every readable alert of the queue in `dir` into a fresh file; the old file is kept
/// aside as `queue.redb.damaged-<unix seconds>`.
pub fn salvage(dir: &Path) -> Result<SalvageReport, QueueError> {
    let path = store::file_path(dir);
    ensure_not_in_use(&path)?;
    let size = fs::metadata(&path).map_err(io(&path))?.len();
    let marker = store::read_marker(dir)?;
    let kept = dir.join(format!("{}.damaged-{}", store::FILE, now_ms() / 1000));
    fs::rename(&path, &kept).map_err(io(&kept))?;
    store::sync_dir(dir)?;
    let _quiet = QuietPanics::new();
    // redb repairs what it opens: it works on a copy, the kept file stays as it was.
    let work = dir.join(format!("{}.salvage-tmp", store::FILE));
    let mut found = if size == 0 {
        Readable {
            damage: Some("the file was empty".into()),
            ..Readable::default()
        }
    } else {
        fs::copy(&kept, &work).map_err(io(&work))?;
        let read = store::open_db(&work, true).and_then(|db| read_all(&db, &work));
        let _ = fs::remove_file(&work);
        read.unwrap_or_else(|e| Readable {
            damage: Some(crate::error_chain(&e)),
            ..Readable::default()
        })
    };
    let mut from_raw_scan = 0;
    if found.damage.is_some() && size > 0 {
        let bytes = fs::read(&kept).map_err(io(&kept))?;
        let known: HashSet<String> = found
            .alerts
            .values()
            .filter_map(|v| serde_json::from_slice::<StoredAlert>(v).ok())
            .map(|a| a.uid)
            .collect();
        let mut extra: Vec<StoredAlert> = raw_scan(&bytes)
            .into_values()
            .filter(|a| !known.contains(&a.uid))
            .collect();
        extra.sort_by_key(|a| a.accepted_ms);
        for a in extra {
            let id = found.next_id.max(1);
            found.next_id = id + 1;
            let json = serde_json::to_vec(&a).map_err(QueueError::storage)?;
            found.alerts.insert(id, json);
            from_raw_scan += 1;
        }
    }
    let fresh = dir.join(format!("{}.salvage-new", store::FILE));
    let _ = fs::remove_file(&fresh);
    let (recovered, unfinished) = write_fresh(&fresh, &mut found, marker)?;
    fs::rename(&fresh, &path).map_err(io(&path))?;
    let queue_id = found.queue_id.or(marker).unwrap_or_else(rand::random);
    store::write_marker(dir, queue_id)?;
    Ok(SalvageReport {
        kept_aside: kept,
        recovered,
        unfinished,
        set_aside: found.set_aside.len(),
        from_raw_scan,
        damage: found.damage,
    })
}

/// Reads everything redb can: iterates each table, and where a damaged page stops the
/// iteration of alerts, asks for each id on its own.
fn read_all(db: &Database, path: &Path) -> Result<Readable, QueueError> {
    let mut out = Readable::default();
    let txn = db.begin_read().map_err(QueueError::storage)?;
    if let Ok(meta) = txn.open_table(META) {
        let get = |k: &str| {
            store::guarded(path, false, || {
                meta.get(k).ok().flatten().map(|v| v.value())
            })
            .ok()
            .flatten()
        };
        out.next_id = get("next_id").unwrap_or(1);
        out.queue_id = get("queue_id");
    }
    let alerts = match txn.open_table(ALERTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(out),
        Err(e) => return Err(QueueError::storage(e)),
    };
    let mut last = 0;
    let iterated = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        for entry in alerts.iter().map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            last = k.value();
            out.alerts.insert(k.value(), v.value().to_vec());
        }
        Ok(())
    }));
    let stopped = match iterated {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("redb gave up reading a page".to_owned()),
    };
    if let Some(why) = stopped {
        out.damage = Some(format!(
            "reading alerts stopped after id {last}: {why}; every id was then read on its own"
        ));
        let end = out.next_id.max(last + 1);
        for id in 1..end {
            if out.alerts.contains_key(&id) {
                continue;
            }
            if let Ok(Ok(Some(v))) = catch_unwind(AssertUnwindSafe(|| {
                alerts.get(id).map(|v| v.map(|v| v.value().to_vec()))
            })) {
                out.alerts.insert(id, v);
            }
        }
    }
    // Undecodable records are set aside, not dropped.
    let bad: Vec<u64> = out
        .alerts
        .iter()
        .filter(|(_, v)| serde_json::from_slice::<StoredAlert>(v).is_err())
        .map(|(k, _)| *k)
        .collect();
    for id in bad {
        if let Some(v) = out.alerts.remove(&id) {
            out.set_aside.insert(id, v);
        }
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(t) = txn.open_table(SET_ASIDE)
            && let Ok(iter) = t.iter()
        {
            for (k, v) in iter.map_while(Result::ok) {
                out.set_aside.insert(k.value(), v.value().to_vec());
            }
        }
        if let Ok(t) = txn.open_table(DEDUP_LOG)
            && let Ok(iter) = t.iter()
        {
            for (k, v) in iter.map_while(Result::ok) {
                out.dedup_log.insert(k.value(), v.value());
            }
        }
    }));
    let top = out
        .alerts
        .keys()
        .chain(out.set_aside.keys())
        .max()
        .copied()
        .unwrap_or(0);
    out.next_id = out.next_id.max(top + 1);
    Ok(out)
}

/// Every alert document in `bytes`, by uid, keeping the most advanced version of each.
fn raw_scan(bytes: &[u8]) -> BTreeMap<String, StoredAlert> {
    const START: &[u8] = b"{\"uid\":\"";
    let mut best: BTreeMap<String, StoredAlert> = BTreeMap::new();
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(START.len()).position(|w| w == START) {
        let start = at + i;
        at = start + 1;
        let mut stream =
            serde_json::Deserializer::from_slice(&bytes[start..]).into_iter::<StoredAlert>();
        let Some(Ok(alert)) = stream.next() else {
            continue;
        };
        at = start + stream.byte_offset().max(1);
        let rank = |a: &StoredAlert| {
            (
                a.is_finished(),
                a.recipients.iter().filter(|r| r.outcome.is_final()).count(),
                a.recipients.iter().map(|r| r.updated_ms).max(),
            )
        };
        match best.get(&alert.uid) {
            Some(b) if rank(b) >= rank(&alert) => {}
            _ => {
                best.insert(alert.uid.clone(), alert);
            }
        }
    }
    best
}

/// Writes the salvaged state into a new file at `fresh`; returns (alerts, unfinished).
fn write_fresh(
    fresh: &Path,
    found: &mut Readable,
    marker: Option<u64>,
) -> Result<(usize, usize), QueueError> {
    let db = store::open_db(fresh, true)?;
    let mut unfinished = 0;
    let txn = db.begin_write().map_err(QueueError::storage)?;
    {
        let mut alerts = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        let mut log = txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?;
        for (id, json) in &found.alerts {
            alerts
                .insert(*id, json.as_slice())
                .map_err(QueueError::storage)?;
            if let Ok(a) = serde_json::from_slice::<StoredAlert>(json) {
                unfinished += usize::from(!a.is_finished());
                if let Some(key) = &a.alert.dedup_key {
                    found
                        .dedup_log
                        .entry(*id)
                        .or_insert((dedup_hash(&a.source, key), a.accepted_ms));
                }
            }
        }
        for (id, entry) in &found.dedup_log {
            log.insert(*id, *entry).map_err(QueueError::storage)?;
        }
        let mut aside = txn.open_table(SET_ASIDE).map_err(QueueError::storage)?;
        for (id, bytes) in &found.set_aside {
            aside
                .insert(*id, bytes.as_slice())
                .map_err(QueueError::storage)?;
        }
        let mut meta = txn.open_table(META).map_err(QueueError::storage)?;
        meta.insert("next_id", found.next_id.max(1))
            .map_err(QueueError::storage)?;
        let queue_id = found.queue_id.or(marker).unwrap_or_else(rand::random);
        found.queue_id = Some(queue_id);
        meta.insert("queue_id", queue_id)
            .map_err(QueueError::storage)?;
    }
    txn.commit().map_err(QueueError::storage)?;
    Ok((found.alerts.len(), unfinished))
}
