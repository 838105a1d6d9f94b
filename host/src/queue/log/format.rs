//! The segment log's bytes on disk: segment headers, CRC-framed group commits, and the records
//! inside a frame.
//!
//! ```text
//! segment  = header (32 bytes) frame* zero-fill
//! header   = "ABQLOG01" queue_id:u64 number:u64 flags:u32 crc32:u32   (crc over the 28 before)
//! frame    = magic:u32 body_len:u32 seq:u64 crc32:u32 body            (crc over seq and body)
//! body     = record*
//! record   = kind:u8 id:u64 ...
//!   1 accepted   accepted_ms:i64 has_key:u8 [key:u128] len:u32 json   a new alert
//!   2 saved      len:u32 json                                        the alert's whole document
//!   3 forgotten                                                      pushed out of the history
//!   4 dedup      key:u128 accepted_ms:i64                            a key kept by compaction
//!   5 next_id                                                        ids below `id` are used
//!   6 state      head_crc:u32 len:u32 tail                            a save of the state only
//! ```
//! A document is its head (`uid`, `source`, `accepted_ms`, `alert`: fixed once accepted) and
//! its state, from [`state_at`] on (`recipients`, `routed`, `finished_ms`). A save whose head
//! is the alert's newest whole document's (same length and CRC) is written as a `state`
//! record: the new document's tail from [`state_at`] on, which replaces the old tail — the
//! document read back is that head and this tail, byte for byte the one saved. `head_crc` is
//! the CRC of the head it goes on; at start an alert whose newest state record does not go on
//! its document (another head) is set aside like a document that does not decode.
//! All integers are little-endian. One group commit is one frame, written with one `pwrite` and
//! made durable with one `fdatasync`, so a crash tears at most the last frame. The magic holds
//! the bytes 0xFF and 0xFE, which never occur in UTF-8 (the JSON documents), so a document's
//! text cannot pass for a frame when recovery looks past a damaged one.

pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"ABQLOG01";
pub(super) const HEADER_BYTES: usize = 32;
pub(super) const FRAME_MAGIC: u32 = 0xFEFF_AB17;
pub(super) const FRAME_HEADER: usize = 20;
/// Flag of a segment written by compaction: it holds every live record, so the segments
/// numbered below it are obsolete.
pub(super) const FLAG_BASE: u32 = 1;
/// The largest frame body: a bigger batch is split over several commits.
pub(super) const MAX_FRAME_BODY: usize = 16 << 20;

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub queue_id: u64,
    pub number: u64,
    pub flags: u32,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..16].copy_from_slice(&self.queue_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(super) fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_BYTES || &b[..8] != SEGMENT_MAGIC {
            return Err("it does not start with a queue log segment header".into());
        }
        if crc32fast::hash(&b[..28]) != u32_at(b, 28) {
            return Err("its segment header fails its checksum".into());
        }
        Ok(Self {
            queue_id: u64_at(b, 8),
            number: u64_at(b, 16),
            flags: u32_at(b, 24),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Appends a frame header placeholder to `buf`; [`seal_frame`] fills it in.
pub(super) fn open_frame(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

/// Fills in the header of the frame begun at `start` (by [`open_frame`]) with sequence `seq`.
pub(super) fn seal_frame(buf: &mut [u8], start: usize, seq: u64) {
    let body_len = (buf.len() - start - FRAME_HEADER) as u32;
    buf[start..start + 4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[start + 8..start + 16]);
    h.update(&buf[start + FRAME_HEADER..]);
    let crc = h.finalize();
    buf[start + 16..start + 20].copy_from_slice(&crc.to_le_bytes());
}

/// One record, as read back.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Record<'a> {
    Accepted {
        id: u64,
        accepted_ms: i64,
        key: Option<u128>,
        json: &'a [u8],
        /// Where `json` starts in the frame body.
        at: usize,
    },
    Saved {
        id: u64,
        json: &'a [u8],
        at: usize,
    },
    Forgotten {
        id: u64,
    },
    Dedup {
        id: u64,
        key: u128,
        accepted_ms: i64,
    },
    NextId {
        id: u64,
    },
    State {
        id: u64,
        head_crc: u32,
        tail: &'a [u8],
        at: usize,
    },
}

/// Where the state of document `doc` begins: its last `,"recipients":`. Only the top-level key
/// can be last: the recipients' own keys are other words, and a quote inside a JSON string is
/// escaped. `None` for a document without one (it is always saved whole).
pub(super) fn state_at(doc: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b",\"recipients\":";
    doc.windows(KEY.len()).rposition(|w| w == KEY)
}

/// Where `doc`'s state begins and the CRC of its head, or `None` (see [`state_at`]).
pub(super) fn head_of(doc: &[u8]) -> Option<(u32, u32)> {
    let at = state_at(doc)?;
    Some((at as u32, crc32fast::hash(&doc[..at])))
}

/// Appends a record to `buf`; returns where its JSON starts in `buf`, if it has one.
pub(super) fn put(buf: &mut Vec<u8>, r: &Record<'_>) -> usize {
    let json_at = |buf: &mut Vec<u8>, json: &[u8]| {
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        let at = buf.len();
        buf.extend_from_slice(json);
        at
    };
    match *r {
        Record::Accepted {
            id,
            accepted_ms,
            key,
            json,
            ..
        } => {
            buf.push(1);
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&accepted_ms.to_le_bytes());
            match key {
                Some(k) => {
                    buf.push(1);
                    buf.extend_from_slice(&k.to_le_bytes());
                }
                None => buf.push(0),
            }
            json_at(buf, json)
        }
        Record::Saved { id, json, .. } => {
            buf.push(2);
            buf.extend_from_slice(&id.to_le_bytes());
            json_at(buf, json)
        }
        Record::Forgotten { id } => {
            buf.push(3);
            buf.extend_from_slice(&id.to_le_bytes());
            0
        }
        Record::Dedup {
            id,
            key,
            accepted_ms,
        } => {
            buf.push(4);
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&key.to_le_bytes());
            buf.extend_from_slice(&accepted_ms.to_le_bytes());
            0
        }
        Record::NextId { id } => {
            buf.push(5);
            buf.extend_from_slice(&id.to_le_bytes());
            0
        }
        Record::State {
            id, head_crc, tail, ..
        } => {
            buf.push(6);
            buf.extend_from_slice(&id.to_le_bytes());
            buf.extend_from_slice(&head_crc.to_le_bytes());
            json_at(buf, tail)
        }
    }
}

/// Reads the records of a frame body that passed its checksum. A body that does not parse
/// was written by something else than this code: an error, never a guess.
pub(super) fn records(body: &[u8]) -> Result<Vec<Record<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    let need = |at: usize, n: usize| {
        if at + n <= body.len() {
            Ok(())
        } else {
            Err(format!(
                "a record at byte {at} of a frame runs past its end"
            ))
        }
    };
    while at < body.len() {
        need(at, 9)?;
        let kind = body[at];
        let id = u64_at(body, at + 1);
        at += 9;
        let json = |at: &mut usize| -> Result<(&[u8], usize), String> {
            need(*at, 4)?;
            let len = u32_at(body, *at) as usize;
            *at += 4;
            need(*at, len)?;
            let start = *at;
            *at += len;
            Ok((&body[start..start + len], start))
        };
        out.push(match kind {
            1 => {
                need(at, 9)?;
                let accepted_ms = u64_at(body, at) as i64;
                let has_key = body[at + 8];
                at += 9;
                let key = if has_key == 1 {
                    need(at, 16)?;
                    let mut k = [0; 16];
                    k.copy_from_slice(&body[at..at + 16]);
                    at += 16;
                    Some(u128::from_le_bytes(k))
                } else {
                    None
                };
                let (json, json_at) = json(&mut at)?;
                Record::Accepted {
                    id,
                    accepted_ms,
                    key,
                    json,
                    at: json_at,
                }
            }
            2 => {
                let (json, json_at) = json(&mut at)?;
                Record::Saved {
                    id,
                    json,
                    at: json_at,
                }
            }
            3 => Record::Forgotten { id },
            4 => {
                need(at, 24)?;
                let mut k = [0; 16];
                k.copy_from_slice(&body[at..at + 16]);
                let accepted_ms = u64_at(body, at + 16) as i64;
                at += 24;
                Record::Dedup {
                    id,
                    key: u128::from_le_bytes(k),
                    accepted_ms,
                }
            }
            5 => Record::NextId { id },
            6 => {
                need(at, 4)?;
                let head_crc = u32_at(body, at);
                at += 4;
                let (tail, tail_at) = json(&mut at)?;
                Record::State {
                    id,
                    head_crc,
                    tail,
                    at: tail_at,
                }
            }
            other => return Err(format!("unknown record kind {other}")),
        });
    }
    Ok(out)
}

/// What is at `at` in a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A whole frame that passed its checksum; the next one starts at `end`.
    Good {
        seq: u64,
        body: &'a [u8],
        end: usize,
    },
    /// Zeros: the segment's written part ends here.
    End,
    /// Bytes that are not a whole frame with a good checksum.
    Bad(&'static str),
    /// A frame the end of the file cuts short. Never a torn write: a frame is written into
    /// space zero-filled (and synced) ahead, so the file is cut (truncated).
    Cut(&'static str),
}

/// Reads the frame at `at` of segment bytes `b`.
pub(super) fn frame_at(b: &[u8], at: usize) -> Frame<'_> {
    if at + FRAME_HEADER > b.len() {
        return if b[at.min(b.len())..].iter().all(|&x| x == 0) {
            Frame::End
        } else {
            Frame::Cut("a frame header cut short by the end of the file")
        };
    }
    let head = &b[at..at + FRAME_HEADER];
    if head.iter().all(|&x| x == 0) {
        return Frame::End;
    }
    if u32_at(head, 0) != FRAME_MAGIC {
        return Frame::Bad("bytes that are not a frame header");
    }
    let len = u32_at(head, 4) as usize;
    if len > MAX_FRAME_BODY {
        return Frame::Bad("a frame longer than a frame can be");
    }
    if at + FRAME_HEADER + len > b.len() {
        return Frame::Cut("a frame longer than the file holds");
    }
    let body = &b[at + FRAME_HEADER..at + FRAME_HEADER + len];
    let mut h = crc32fast::Hasher::new();
    h.update(&head[8..16]);
    h.update(body);
    if h.finalize() != u32_at(head, 16) {
        return Frame::Bad("a frame that fails its checksum");
    }
    Frame::Good {
        seq: u64_at(head, 8),
        body,
        end: at + FRAME_HEADER + len,
    }
}

/// The first whole, checksummed frame after `at` whose sequence is above `after_seq`: a sign
/// that the bad bytes at `at` are damage in the middle of the log, not a torn last write.
pub(super) fn good_frame_after(b: &[u8], at: usize, after_seq: u64) -> Option<usize> {
    let magic = FRAME_MAGIC.to_le_bytes();
    let mut from = at + 1;
    while from + FRAME_HEADER <= b.len() {
        let i = b[from..].windows(4).position(|w| w == magic)? + from;
        if let Frame::Good { seq, .. } = frame_at(b, i)
            && seq > after_seq
        {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_frame() {
        let mut buf = Vec::new();
        let start = open_frame(&mut buf);
        let recs = [
            Record::Accepted {
                id: 7,
                accepted_ms: -3,
                key: Some(u128::MAX - 5),
                json: b"{\"a\":1}",
                at: 0,
            },
            Record::Saved {
                id: 7,
                json: b"{}",
                at: 0,
            },
            Record::Forgotten { id: 2 },
            Record::Dedup {
                id: 2,
                key: 9,
                accepted_ms: 11,
            },
            Record::NextId { id: 99 },
            Record::State {
                id: 7,
                head_crc: 3,
                tail: b",\"recipients\":[]}",
                at: 0,
            },
        ];
        for r in &recs {
            put(&mut buf, r);
        }
        seal_frame(&mut buf, start, 42);
        buf.extend_from_slice(&[0; 64]);
        let Frame::Good { seq, body, end } = frame_at(&buf, 0) else {
            panic!("not good")
        };
        assert_eq!(seq, 42);
        assert_eq!(frame_at(&buf, end), Frame::End);
        let back = records(body).unwrap();
        assert_eq!(back.len(), recs.len());
        match &back[0] {
            Record::Accepted { id, key, json, .. } => {
                assert_eq!(
                    (*id, *key, *json),
                    (7, Some(u128::MAX - 5), &b"{\"a\":1}"[..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(back[4], Record::NextId { id: 99 });
        assert!(
            matches!(back[5], Record::State { id: 7, head_crc: 3, tail, .. } if tail == b",\"recipients\":[]}")
        );
    }

    #[test]
    fn a_documents_state_begins_at_its_top_level_recipients() {
        let doc = br#"{"uid":"u","alert":{"labels":{"a":",\"recipients\":"},"recipients":1},"recipients":[{"route":"r"}],"routed":true}"#;
        let at = state_at(doc).unwrap();
        assert_eq!(
            &doc[at..],
            br#","recipients":[{"route":"r"}],"routed":true}"#
        );
        assert_eq!(state_at(b"{}"), None);
    }

    #[test]
    fn a_flipped_bit_fails_the_checksum_and_a_later_frame_is_found() {
        let mut buf = Vec::new();
        for seq in 1..=2 {
            let start = open_frame(&mut buf);
            put(&mut buf, &Record::Forgotten { id: seq });
            seal_frame(&mut buf, start, seq);
        }
        buf[FRAME_HEADER + 3] ^= 1;
        assert!(matches!(frame_at(&buf, 0), Frame::Bad(_)));
        assert_eq!(good_frame_after(&buf, 0, 0), Some(FRAME_HEADER + 9));
        assert_eq!(good_frame_after(&buf, 0, 2), None);
    }

    #[test]
    fn a_header_is_checked() {
        let h = Header {
            queue_id: 5,
            number: 6,
            flags: FLAG_BASE,
        };
        let mut b = h.encode();
        assert_eq!(Header::decode(&b), Ok(h));
        b[10] ^= 1;
        assert!(Header::decode(&b).is_err());
    }
}
