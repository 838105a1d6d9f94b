//! Reading a log's segments in order, for the start and for `queue check|export`: headers,
//! frames, records folded into each alert's newest document, and what is wrong (see
//! [`super::segments`] for what recovery takes for a torn write and what for damage).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{self, File},
    os::unix::fs::FileExt as _,
    path::Path,
    sync::Arc,
};

use super::{
    format::{self, FLAG_BASE, Frame, HEADER_BYTES, Header, Record},
    segments::{Loc, Part, file_error, open_segment, segment_path},
};
use crate::queue::{QueueError, store};

/// The segments of a log as read ([`read_segments`]).
pub(super) struct Read {
    pub queue_id: u64,
    /// Segments before the newest base segment: left over from a compaction that stopped
    /// before removing them (removed at start).
    pub obsolete: Vec<u64>,
    pub files: HashMap<u64, Arc<File>>,
    /// Every segment's number and size on disk, from the base on.
    pub sizes: BTreeMap<u64, u64>,
    /// Where the last segment's written part ends.
    pub end: u64,
    pub scan: Scan,
}

/// Reads the segments `numbers` (oldest first, at least one) of the log in `dir`, changing
/// nothing; a torn last write is told in [`Scan::torn`]. The files are opened for writing too
/// if `writable`.
pub(super) fn read_segments(
    dir: &Path,
    numbers: &[u64],
    writable: bool,
) -> Result<Read, QueueError> {
    let mut headers = Vec::new();
    for &n in numbers {
        let path = segment_path(dir, n);
        let mut head = [0u8; HEADER_BYTES];
        let read = File::open(&path).and_then(|f| f.read_exact_at(&mut head, 0));
        let header = match read {
            Ok(()) => Header::decode(&head).map_err(|d| store::damaged(&path, d))?,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(store::damaged(
                    &path,
                    "it is shorter than a segment header".into(),
                ));
            }
            Err(e) => return Err(file_error(&path)(e)),
        };
        headers.push((n, header));
    }
    // A base segment holds everything before it.
    let first = headers
        .iter()
        .rposition(|(_, h)| h.flags & FLAG_BASE != 0)
        .unwrap_or(0);
    let obsolete = headers[..first].iter().map(|(n, _)| *n).collect();
    let headers = &headers[first..];
    let queue_id = headers[0].1.queue_id;
    if headers.iter().any(|(_, h)| h.queue_id != queue_id) {
        return Err(store::damaged(
            dir,
            "its segments carry different queue ids".into(),
        ));
    }
    let mut scan = Scan {
        torn: None,
        misfits: BTreeSet::new(),
        seq: 0,
        next_id: 1,
        docs: BTreeMap::new(),
        keys: Vec::new(),
    };
    let mut files = HashMap::new();
    let mut sizes = BTreeMap::new();
    let mut end = 0;
    for (i, (n, _)) in headers.iter().enumerate() {
        let path = segment_path(dir, *n);
        let file = if writable {
            open_segment(&path)?
        } else {
            File::open(&path).map_err(file_error(&path))?
        };
        let last = i + 1 == headers.len();
        end = scan.segment(&path, *n, last)?;
        sizes.insert(*n, file.metadata().map_or(end, |m| m.len()));
        files.insert(*n, Arc::new(file));
    }
    Ok(Read {
        queue_id,
        obsolete,
        files,
        sizes,
        end,
        scan,
    })
}

/// A torn last write: its `fdatasync` never returned, so nobody was told it was taken.
#[derive(Clone, Copy, Debug)]
pub(super) struct Torn {
    pub seg: u64,
    pub at: u64,
    /// Bytes from `at` to the last one not zero.
    pub bytes: usize,
    pub what: &'static str,
}

/// What recovery has read so far.
pub(super) struct Scan {
    pub torn: Option<Torn>,
    /// Alerts whose newest state record does not go on their document (another head): set
    /// aside at start like a document that does not decode.
    pub misfits: BTreeSet<u64>,
    pub seq: u64,
    pub next_id: u64,
    pub docs: BTreeMap<u64, Loc>,
    /// Dedup keys in acceptance order: (key, id, accepted ms).
    pub keys: Vec<(u128, u64, i64)>,
}

impl Scan {
    /// Reads segment `n`; returns where its written part ends.
    fn segment(&mut self, path: &Path, n: u64, last: bool) -> Result<u64, QueueError> {
        let bytes = fs::read(path).map_err(file_error(path))?;
        let mut at = HEADER_BYTES;
        loop {
            match format::frame_at(&bytes, at) {
                Frame::Good { seq, body, end } => {
                    if seq <= self.seq {
                        return Err(store::damaged(
                            path,
                            format!("the frame at byte {at} repeats an older sequence number"),
                        ));
                    }
                    self.seq = seq;
                    let base = (at + format::FRAME_HEADER) as u64;
                    let recs = format::records(body)
                        .map_err(|d| store::damaged(path, format!("{d} (frame at byte {at})")))?;
                    for r in recs {
                        self.apply(n, base, r).map_err(|d| {
                            store::damaged(path, format!("{d} (frame at byte {at})"))
                        })?;
                    }
                    at = end;
                }
                Frame::End => {
                    if let Some(later) = format::good_frame_after(&bytes, at, self.seq) {
                        return Err(store::damaged(
                            path,
                            format!(
                                "zeros at byte {at} with a whole frame after them at byte {later}"
                            ),
                        ));
                    }
                    return Ok(at as u64);
                }
                Frame::Cut(what) => {
                    return Err(store::damaged(
                        path,
                        format!("{what} at byte {at}: the segment was cut short"),
                    ));
                }
                Frame::Bad(what) => {
                    if let Some(later) = format::good_frame_after(&bytes, at, self.seq) {
                        return Err(store::damaged(
                            path,
                            format!(
                                "{what} at byte {at}, with a whole frame after it at byte {later}"
                            ),
                        ));
                    }
                    if !last {
                        return Err(store::damaged(
                            path,
                            format!("{what} at byte {at}, in a segment that is not the last"),
                        ));
                    }
                    // A torn last write (see [`Torn`]).
                    let dirty_end = bytes.iter().rposition(|&b| b != 0).map_or(at, |i| i + 1);
                    self.torn = Some(Torn {
                        seg: n,
                        at: at as u64,
                        bytes: dirty_end - at,
                        what,
                    });
                    return Ok(at as u64);
                }
            }
        }
    }

    fn apply(&mut self, seg: u64, base: u64, r: Record<'_>) -> Result<(), String> {
        let part = |bytes: &[u8], at: usize| Part {
            seg,
            off: base + at as u64,
            len: bytes.len() as u32,
        };
        let whole = |json: &[u8], at: usize| Loc {
            doc: part(json, at),
            head: format::head_of(json),
            state: None,
            finished: false,
        };
        match r {
            Record::Accepted {
                id,
                accepted_ms,
                key,
                json,
                at,
            } => {
                self.docs.insert(id, whole(json, at));
                if let Some(key) = key {
                    self.keys.push((key, id, accepted_ms));
                }
                self.next_id = self.next_id.max(id + 1);
            }
            Record::Saved { id, json, at } => {
                self.docs.insert(id, whole(json, at));
                self.misfits.remove(&id);
            }
            Record::State {
                id,
                head_crc,
                tail,
                at,
            } => {
                let Some(loc) = self.docs.get_mut(&id) else {
                    return Err(format!(
                        "a state record of alert {id}, which it does not hold"
                    ));
                };
                if loc.head.is_some_and(|(_, crc)| crc == head_crc) {
                    loc.state = Some(part(tail, at));
                    self.misfits.remove(&id);
                } else {
                    self.misfits.insert(id);
                }
            }
            Record::Forgotten { id } => {
                self.docs.remove(&id);
                self.misfits.remove(&id);
            }
            Record::Dedup {
                id,
                key,
                accepted_ms,
            } => self.keys.push((key, id, accepted_ms)),
            Record::NextId { id } => self.next_id = self.next_id.max(id),
        }
        Ok(())
    }
}
