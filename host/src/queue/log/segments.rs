//! The segment files of the log queue: opening and recovering them, appending a frame durably,
//! rolling over to a new segment, and compaction into a base segment.
//!
//! ```text
//! data_dir/queue-log/seg-<number as 16 hex digits>.log   segments, oldest first
//! data_dir/queue-log/set-aside/<id>.json                 documents that did not decode
//! data_dir/queue.id                                      the queue id (shared with redb's)
//! ```
//! Space is zero-filled ahead of the write position and synced once per chunk, so a frame's
//! `fdatasync` writes data pages only (no size or extent change to journal), and a full disk
//! shows up while filling — before any frame is half written. A new segment (and a compacted
//! one) is written under a temporary name, synced and renamed, so every segment with its final
//! name has a whole header.
//!
//! Recovery reads every frame in order. Zeros end a segment. A frame that fails its checksum is
//! a torn last write — never acknowledged, since its `fdatasync` had not returned — only if it
//! is in the last segment and no whole frame follows it; it is then zeroed. A frame the end of
//! the file cuts short is never a torn write (frames go into space filled ahead): the segment
//! was cut. Anything else is damage, refused with one line ([`QueueError::Damaged`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    direct::Appender,
    format::{self, FLAG_BASE, HEADER_BYTES, Header, Record},
    scan::{Read, read_segments},
};
use crate::{
    model::{StoredAlert, now_ms},
    queue::{QueueError, dedup::DedupIndex, store},
};

pub(super) const DIR: &str = "queue-log";
pub(super) const SET_ASIDE: &str = "set-aside";
/// Why an alert whose state record does not go on its document is set aside.
pub(super) const MISFIT: &str = "its newest state record does not go on its document";
/// A segment is closed once the next frame would take it past this size.
pub(super) const SEGMENT_BYTES: u64 = 64 << 20;
/// Space zero-filled ahead of the write position at a time.
const FILL_CHUNK: u64 = 1 << 20;

pub(super) fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

pub(super) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("seg-{number:016x}.log"))
}

pub(super) fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> QueueError + '_ {
    move |source| QueueError::File {
        path: path.display().to_string(),
        source,
    }
}

/// Where some bytes are in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Part {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

/// Where an alert's newest document is: its newest whole document, and the newest state
/// record on top of it, if any (see [`format`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Loc {
    pub doc: Part,
    /// Where the whole document's state begins and the CRC of its head ([`format::head_of`]);
    /// `None`: it is saved whole each time.
    pub head: Option<(u32, u32)>,
    pub state: Option<Part>,
    pub finished: bool,
}

/// What readers see: each alert's newest document, and the files to read it from.
#[derive(Default)]
pub(super) struct View {
    pub docs: BTreeMap<u64, Loc>,
    pub files: HashMap<u64, Arc<File>>,
}

impl View {
    /// The document `loc` points at: the whole document, or its head and the newest state.
    pub(super) fn read(files: &HashMap<u64, Arc<File>>, loc: Loc) -> std::io::Result<Vec<u8>> {
        let read = |part: Part, into: &mut Vec<u8>| {
            let file = files
                .get(&part.seg)
                .ok_or_else(|| std::io::Error::other(format!("segment {} is gone", part.seg)))?;
            let from = into.len();
            into.resize(from + part.len as usize, 0);
            file.read_exact_at(&mut into[from..], part.off)
        };
        let mut buf = Vec::new();
        match (loc.state, loc.head) {
            (Some(state), Some((head, _))) => {
                buf.reserve(head as usize + state.len as usize);
                read(
                    Part {
                        len: head,
                        ..loc.doc
                    },
                    &mut buf,
                )?;
                read(state, &mut buf)?;
            }
            _ => read(loc.doc, &mut buf)?,
        }
        Ok(buf)
    }

    /// Bytes of documents (and state records) the view points at.
    pub(super) fn live_bytes(&self) -> u64 {
        self.docs
            .values()
            .map(|l| u64::from(l.doc.len) + l.state.map_or(0, |s| u64::from(s.len) + 32) + 32)
            .sum()
    }
}

/// The segment frames are appended to.
pub(super) struct Active {
    pub number: u64,
    file: Arc<File>,
    /// Where the next frame goes.
    end: u64,
    /// Bytes zero-filled and synced so far.
    filled: u64,
    appender: Appender,
}

impl Active {
    fn new(
        dir: &Path,
        number: u64,
        file: Arc<File>,
        end: u64,
        filled: u64,
    ) -> Result<Self, QueueError> {
        let path = segment_path(dir, number);
        let appender = Appender::open(&path, &file, end).map_err(file_error(&path))?;
        Ok(Self {
            number,
            file,
            end,
            filled,
            appender,
        })
    }
}

/// The log on disk, as the writer holds it.
pub(super) struct Log {
    dir: PathBuf,
    queue_id: u64,
    pub active: Active,
    /// The last frame's sequence number.
    pub seq: u64,
    /// Every segment's number and size on disk.
    pub sizes: BTreeMap<u64, u64>,
}

/// What an open found.
pub(super) struct Loaded {
    pub log: Log,
    pub view: View,
    pub dedup: DedupIndex,
    pub next_id: u64,
    pub set_aside_now: Vec<u64>,
    pub set_aside_total: u64,
}

impl Log {
    pub(super) fn total_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// Writes `frame` (sealed) durably; returns the segment and offset it went to.
    pub(super) fn append(&mut self, frame: &[u8]) -> Result<(u64, u64), QueueError> {
        let len = frame.len() as u64;
        if self.active.end > HEADER_BYTES as u64 && self.active.end + len > SEGMENT_BYTES {
            let number = self.active.number + 1;
            let file = create_segment(&self.dir, self.queue_id, number, 0, &[])?;
            self.sizes.insert(number, HEADER_BYTES as u64);
            let at = HEADER_BYTES as u64;
            self.active = Active::new(&self.dir, number, file, at, at)?;
        }
        let path = segment_path(&self.dir, self.active.number);
        #[cfg(test)]
        let fail = failpoint::get(&self.dir);
        let a = &mut self.active;
        #[cfg(test)]
        if fail == Some(failpoint::Fail::Full) {
            return Err(file_error(&path)(std::io::Error::from_raw_os_error(28)));
        }
        if a.end + len > a.filled {
            let to = (a.end + len).div_ceil(FILL_CHUNK) * FILL_CHUNK;
            let zeros = vec![0u8; (to - a.filled) as usize];
            a.file
                .write_all_at(&zeros, a.filled)
                .and_then(|()| a.file.sync_data())
                .map_err(file_error(&path))?;
            a.filled = to;
            self.sizes.insert(a.number, to);
        }
        #[cfg(test)]
        if fail == Some(failpoint::Fail::BeforeSync) {
            a.file
                .write_all_at(frame, a.end)
                .map_err(file_error(&path))?;
            return Err(file_error(&path)(std::io::Error::from_raw_os_error(5)));
        }
        a.appender
            .write(&a.file, frame, a.end)
            .map_err(file_error(&path))?;
        let at = a.end;
        a.end += len;
        Ok((a.number, at))
    }

    /// The active segment's file, for the readers' view.
    pub(super) fn active_file(&self) -> (u64, Arc<File>) {
        (self.active.number, Arc::clone(&self.active.file))
    }

    /// Rewrites every live document (whole: state records folded in), the dedup keys and the
    /// next id into a new base segment
    /// and removes the segments before it. Returns the new view (the files map holds only the
    /// new segment).
    pub(super) fn compact(
        &mut self,
        view: &View,
        dedup: &DedupIndex,
        next_id: u64,
    ) -> Result<View, QueueError> {
        let number = self.active.number + 1;
        // Every frame of the new segment, back to back (each bounded like any frame).
        let mut buf = Vec::new();
        let mut docs = BTreeMap::new();
        let mut start = format::open_frame(&mut buf);
        format::put(&mut buf, &Record::NextId { id: next_id });
        for (key, (id, accepted_ms)) in dedup.entries() {
            format::put(
                &mut buf,
                &Record::Dedup {
                    id,
                    key,
                    accepted_ms,
                },
            );
        }
        let base = HEADER_BYTES as u64;
        for (&id, &loc) in &view.docs {
            let json = View::read(&view.files, loc).map_err(QueueError::storage)?;
            if buf.len() - start + json.len() + 32 > format::MAX_FRAME_BODY {
                self.seq += 1;
                format::seal_frame(&mut buf, start, self.seq);
                start = format::open_frame(&mut buf);
            }
            let at = format::put(
                &mut buf,
                &Record::Saved {
                    id,
                    json: &json,
                    at: 0,
                },
            );
            docs.insert(
                id,
                Loc {
                    doc: Part {
                        seg: number,
                        off: base + at as u64,
                        len: json.len() as u32,
                    },
                    head: loc.head,
                    state: None,
                    finished: loc.finished,
                },
            );
        }
        self.seq += 1;
        format::seal_frame(&mut buf, start, self.seq);
        let file = create_segment(&self.dir, self.queue_id, number, FLAG_BASE, &buf)?;
        let end = HEADER_BYTES as u64 + buf.len() as u64;
        for (&old, _) in std::mem::take(&mut self.sizes).iter() {
            let path = segment_path(&self.dir, old);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "Cannot remove a compacted queue segment (the next start ignores it).");
            }
        }
        self.sizes.insert(number, end);
        self.active = Active::new(&self.dir, number, Arc::clone(&file), end, end)?;
        Ok(View {
            docs,
            files: HashMap::from([(number, file)]),
        })
    }
}

/// Creates segment `number` holding `frames` after its header: written under a temporary name,
/// synced, renamed, and the folder synced.
fn create_segment(
    dir: &Path,
    queue_id: u64,
    number: u64,
    flags: u32,
    frames: &[u8],
) -> Result<Arc<File>, QueueError> {
    let path = segment_path(dir, number);
    let tmp = path.with_extension("tmp");
    let header = Header {
        queue_id,
        number,
        flags,
    }
    .encode();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(file_error(&tmp))?;
    let written = file
        .write_all_at(&header, 0)
        .and_then(|()| file.write_all_at(frames, HEADER_BYTES as u64))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(file_error(&tmp)(e));
    }
    crate::private::restrict(&tmp, crate::private::FILE_MODE).map_err(file_error(&tmp))?;
    fs::rename(&tmp, &path).map_err(file_error(&path))?;
    store::sync_dir(dir)?;
    Ok(Arc::new(file))
}

pub(super) fn open_segment(path: &Path) -> Result<File, QueueError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(file_error(path))
}

/// Segment numbers in `dir`, oldest first; leftover temporary files are removed if `tidy`.
pub(super) fn list(dir: &Path, tidy: bool) -> Result<Vec<u64>, QueueError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(file_error(dir))? {
        let entry = entry.map_err(file_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("seg-") && name.ends_with(".tmp") {
            if tidy {
                let _ = fs::remove_file(entry.path());
            }
        } else if let Some(hex) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".log"))
            && let Ok(n) = u64::from_str_radix(hex, 16)
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Opens (or creates) the log in `data_dir` with the same start checks as the redb file: a log
/// that vanished while the marker says the folder's queue held data is refused (unless
/// `accept_empty`), damage is refused with one line, a torn last write is dropped.
pub(super) fn open(
    data_dir: &Path,
    accept_empty: bool,
    window_ms: i64,
    max_keys: usize,
) -> Result<Loaded, QueueError> {
    fs::create_dir_all(data_dir).map_err(file_error(data_dir))?;
    crate::private::restrict(data_dir, 0o700).map_err(file_error(data_dir))?;
    let dir = log_dir(data_dir);
    let marker = store::read_marker(data_dir)?;
    let vanished = |what| QueueError::Vanished {
        path: dir.display().to_string(),
        what,
        marker: data_dir.join(store::MARKER).display().to_string(),
        id: marker.unwrap_or_default(),
    };
    let numbers = if dir.exists() {
        list(&dir, true)?
    } else {
        Vec::new()
    };
    if numbers.is_empty() {
        if marker.is_some() && !accept_empty {
            return Err(vanished("holds no log segment"));
        }
        fs::create_dir_all(&dir).map_err(file_error(&dir))?;
        crate::private::restrict(&dir, 0o700).map_err(file_error(&dir))?;
        let queue_id = rand::random();
        let file = create_segment(&dir, queue_id, 1, 0, &[])?;
        store::write_marker(data_dir, queue_id)?;
        let set_aside_total = count_set_aside(&dir);
        let at = HEADER_BYTES as u64;
        let active = Active::new(&dir, 1, Arc::clone(&file), at, at)?;
        return Ok(Loaded {
            view: View {
                docs: BTreeMap::new(),
                files: HashMap::from([(1, Arc::clone(&file))]),
            },
            log: Log {
                dir,
                queue_id,
                active,
                seq: 0,
                sizes: BTreeMap::from([(1, HEADER_BYTES as u64)]),
            },
            dedup: DedupIndex::new(max_keys),
            next_id: 1,
            set_aside_now: Vec::new(),
            set_aside_total,
        });
    }
    let read = read_segments(&dir, &numbers, true)?;
    if marker.is_some_and(|m| m != read.queue_id) && !accept_empty {
        return Err(vanished("is another queue's (a different queue id)"));
    }
    for n in &read.obsolete {
        let _ = fs::remove_file(segment_path(&dir, *n));
    }
    let Read {
        queue_id,
        files,
        sizes,
        end,
        scan,
        ..
    } = read;
    if let Some(t) = scan.torn {
        // Zeroed, so the next frame starts on clean space.
        let path = segment_path(&dir, t.seg);
        tracing::warn!(path = %path.display(), at = t.at, bytes = t.bytes, reason = t.what, "Queue log: a torn last write (never acknowledged) is discarded.");
        files[&t.seg]
            .write_all_at(&vec![0; t.bytes], t.at)
            .and_then(|()| files[&t.seg].sync_data())
            .map_err(file_error(&path))?;
    }
    if marker != Some(queue_id) {
        store::write_marker(data_dir, queue_id)?;
    }
    let (&number, _) = sizes.last_key_value().expect("at least one segment");
    let file = Arc::clone(&files[&number]);
    let filled = sizes[&number];
    let mut log = Log {
        dir: dir.clone(),
        queue_id,
        active: Active::new(&dir, number, file, end, filled)?,
        seq: scan.seq,
        sizes,
    };
    let mut view = View {
        docs: scan.docs,
        files,
    };
    let set_aside_now = set_aside_undecodable(&dir, &mut log, &mut view, &scan.misfits)?;
    let cutoff = now_ms() - window_ms;
    let mut dedup = DedupIndex::new(max_keys);
    for (key, id, at) in scan.keys {
        if at >= cutoff {
            dedup.insert(key, (id, at));
        }
    }
    dedup.take_evicted();
    let next_id = scan
        .next_id
        .max(view.docs.keys().next_back().map_or(1, |id| id + 1));
    Ok(Loaded {
        log,
        view,
        dedup,
        next_id,
        set_aside_now,
        set_aside_total: count_set_aside(&dir),
    })
}

fn count_set_aside(dir: &Path) -> u64 {
    fs::read_dir(dir.join(SET_ASIDE)).map_or(0, |d| d.count() as u64)
}

/// The ids of the documents set aside in the log folder `dir`, ascending.
pub(super) fn set_aside(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = fs::read_dir(dir.join(SET_ASIDE)).map_or_else(
        |_| Vec::new(),
        |d| {
            d.filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()
            })
            .collect()
        },
    );
    ids.sort_unstable();
    ids
}

/// Decodes every alert's newest document to learn whether it is finished; one that does not
/// decode is copied to `set-aside/<id>.json` and forgotten (durably), and the others go on.
fn set_aside_undecodable(
    dir: &Path,
    log: &mut Log,
    view: &mut View,
    misfits: &BTreeSet<u64>,
) -> Result<Vec<u64>, QueueError> {
    let mut bad = Vec::new();
    for (&id, loc) in view.docs.iter_mut() {
        let bytes = View::read(&view.files, *loc).map_err(QueueError::storage)?;
        if misfits.contains(&id) {
            bad.push((id, bytes, MISFIT.to_owned()));
            continue;
        }
        match serde_json::from_slice::<StoredAlert>(&bytes) {
            Ok(a) => loc.finished = a.is_finished(),
            Err(e) => bad.push((id, bytes, e.to_string())),
        }
    }
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    let aside = dir.join(SET_ASIDE);
    fs::create_dir_all(&aside).map_err(file_error(&aside))?;
    let mut buf = Vec::new();
    let start = format::open_frame(&mut buf);
    let mut ids = Vec::new();
    for (id, bytes, error) in bad {
        tracing::error!(alert = id, bytes = bytes.len(), error = %error, "Queue record does not decode; set aside (in queue-log/set-aside), the others go on.");
        let path = aside.join(format!("{id}.json"));
        fs::write(&path, &bytes).map_err(file_error(&path))?;
        format::put(&mut buf, &Record::Forgotten { id });
        view.docs.remove(&id);
        ids.push(id);
    }
    store::sync_dir(&aside)?;
    log.seq += 1;
    format::seal_frame(&mut buf, start, log.seq);
    log.append(&buf)?;
    Ok(ids)
}

/// Faults a test makes in a log folder's appends.
#[cfg(test)]
pub(super) mod failpoint {
    use std::{
        path::{Path, PathBuf},
        sync::{Mutex, PoisonError},
    };

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(in crate::queue::log) enum Fail {
        /// Every append fails at once with ENOSPC (a full disk).
        Full,
        /// The frame is written, then the process "crashes" before `fdatasync` (EIO).
        BeforeSync,
    }

    static FAILING: Mutex<Vec<(PathBuf, Fail)>> = Mutex::new(Vec::new());

    pub(in crate::queue::log) fn set(dir: &Path, fail: Option<Fail>) {
        let mut f = FAILING.lock().unwrap_or_else(PoisonError::into_inner);
        f.retain(|(d, _)| d != dir);
        if let Some(fail) = fail {
            f.push((dir.to_owned(), fail));
        }
    }

    pub(super) fn get(dir: &Path) -> Option<Fail> {
        let f = FAILING.lock().unwrap_or_else(PoisonError::into_inner);
        f.iter().find(|(d, _)| d == dir).map(|&(_, fail)| fail)
    }
}
