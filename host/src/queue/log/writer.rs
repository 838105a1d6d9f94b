//! The log queue's writer thread: one frame and one `fdatasync` per group commit, history
//! pruning, compaction, and what happens when a write fails.
//!
//! The batching is the redb writer's ([`crate::queue::writer`]): every command waiting goes
//! into one commit, an outcome save waits up to [`HOLD_OUTCOMES`] for a commit to ride in, and
//! commands keep their order. It waits for nothing else: a 1 ms gather after a commit's first
//! command (tried) cut the queue-only cost at 1,000/s by a third but capped one recipient, whose
//! `sending` marks are serial — `scripts/bench` pipeline, one recipient, flooded 309 alerts/s
//! and 1,000/s offered served at 398/s (redb 805 and 979); sparing the marks (gathering only
//! batches without one) still left 1,141/s and 913/s (redb 1,920 and 991).
//!
//! A failed write (disk full while zero-filling ahead, EFBIG, EIO) answers its enqueues "queue
//! unavailable, try later", keeps its saves, and marks the queue down; the writer then reopens
//! the log with backoff — recovery zeroes a torn last frame — and hands on any alert the failed
//! commit did make durable.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::Backoff;
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{
    State,
    format::{self, MAX_FRAME_BODY, Record},
    segments::{self, Loc, Log, Part, View},
};
use crate::{
    model::{StoredAlert, now_ms},
    queue::{
        Enqueued, OnCommit, QueueError, QueueOptions, Taken,
        dedup::{DedupIndex, Seen},
        shared::{Cmd, HOLD_OUTCOMES, Inbox, Next, decode},
    },
};

const PRUNE_EVERY: Duration = Duration::from_secs(30);
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(10);
const STAYED_UP: Duration = Duration::from_secs(60);
/// A frame is written once its body is past this; the rest of the batch follows in the next.
const FRAME_SOFT_LIMIT: usize = MAX_FRAME_BODY / 2;

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
}

/// Only whether a document is finished (the rest of it is skipped).
#[derive(Deserialize)]
struct Finished {
    #[serde(default)]
    finished_ms: Option<i64>,
}

pub(super) struct LogWriter {
    state: Arc<State>,
    data_dir: PathBuf,
    /// `None` while faulted.
    log: Option<Log>,
    dedup: DedupIndex,
    next_id: u64,
    window_ms: i64,
    history_max: usize,
    dedup_max_keys: usize,
    compact_min_bytes: u64,
    on_commit: OnCommit,
    /// Saves not yet written because the log failed; newest per alert.
    unsaved: BTreeMap<u64, Vec<u8>>,
    backoff: Backoff,
    reopened_at: Option<Instant>,
    /// The frame being built, what it changes in the view, the heads its saves go on, and its
    /// replies (kept to reuse their allocations).
    buf: Vec<u8>,
    puts: Vec<Put>,
    heads: HashMap<u64, Option<(u32, u32)>>,
    replies: Vec<Reply>,
}

impl LogWriter {
    pub(super) fn new(
        state: Arc<State>,
        data_dir: PathBuf,
        options: &QueueOptions,
        on_commit: OnCommit,
        (log, dedup, next_id): (Log, DedupIndex, u64),
    ) -> Self {
        let w = Self {
            state,
            data_dir,
            log: Some(log),
            dedup,
            next_id,
            window_ms: options.dedup_window.as_millis() as i64,
            history_max: options.history_max_alerts,
            dedup_max_keys: options.dedup_max_keys.max(1),
            compact_min_bytes: options.compact_min_bytes,
            on_commit,
            unsaved: BTreeMap::new(),
            backoff: Backoff::new(REOPEN_FIRST, REOPEN_MAX),
            reopened_at: None,
            buf: Vec::new(),
            puts: Vec::new(),
            heads: HashMap::new(),
            replies: Vec::new(),
        };
        w.publish_sizes();
        w
    }

    pub(super) fn run(mut self, inbox: &Inbox) {
        let mut last_prune = Instant::now();
        let mut linger: Option<Instant> = None;
        loop {
            let retry_at = self.state.fault.retry_at();
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
                        self.prune_and_compact();
                    }
                    continue;
                }
                Next::Closed => break,
            };
            if let Some(e) = self.state.fault.unavailable() {
                self.refuse(batch, &e);
                continue;
            }
            self.commit(batch);
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                self.prune_and_compact();
            }
            linger = Some(Instant::now() + HOLD_OUTCOMES);
        }
        *self
            .state
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if !self.unsaved.is_empty() {
            tracing::error!(
                alerts = self.unsaved.len(),
                "Queue closed with outcomes it could not record; those alerts are redone after the next start."
            );
        }
    }

    /// Answers a batch while the queue is down; saves are kept for the reopen.
    fn refuse(&mut self, batch: Vec<Cmd>, e: &QueueError) {
        for cmd in batch {
            match cmd {
                Cmd::Enqueue { reply, .. } => drop(reply.send(Err(again(e)))),
                Cmd::Save { id, json, reply } => {
                    self.unsaved.insert(id, json);
                    if let Some(reply) = reply {
                        drop(reply.send(Err(again(e))));
                    }
                }
            }
        }
    }

    /// Writes a batch, a frame at a time; true if all of it was written.
    fn commit(&mut self, batch: Vec<Cmd>) -> bool {
        let mut rest = batch.into_iter().peekable();
        loop {
            if !self.commit_frame(&mut rest, &[]) {
                let e = self.state.fault.unavailable().unwrap_or(QueueError::Closed);
                let rest: Vec<Cmd> = rest.collect();
                self.refuse(rest, &e);
                return false;
            }
            if rest.peek().is_none() {
                return true;
            }
        }
    }

    /// Builds one frame from the kept saves, then commands from `cmds` up to the frame bound,
    /// then `forget`; writes it and answers its commands. False if the write failed (its
    /// commands are answered, the queue is down).
    fn commit_frame(&mut self, cmds: &mut impl Iterator<Item = Cmd>, forget: &[u64]) -> bool {
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let start = format::open_frame(&mut buf);
        let mut replies = std::mem::take(&mut self.replies);
        self.puts.clear();
        self.heads.clear();
        let mut undo: Vec<(u128, Option<Seen>)> = Vec::new();
        let next_before = self.next_id;
        let unsaved = std::mem::take(&mut self.unsaved);
        // Saves go on the documents the readers see: held while the frame is built, so
        // nothing else changes them (only this thread writes the view).
        let state = Arc::clone(&self.state);
        let view = state.view.lock().unwrap_or_else(PoisonError::into_inner);
        let mut frame = Frame {
            buf: &mut buf,
            puts: &mut self.puts,
            heads: &mut self.heads,
            view: view.as_ref(),
        };
        for (&id, json) in &unsaved {
            frame.save(id, json);
        }
        while frame.buf.len() < FRAME_SOFT_LIMIT {
            let Some(cmd) = cmds.next() else { break };
            match cmd {
                Cmd::Enqueue {
                    dedup,
                    alert,
                    json,
                    reply,
                } => {
                    if let Some(key) = dedup
                        && let Some((id, at)) = self.dedup.get(&key)
                        && alert.accepted_ms - at < self.window_ms
                    {
                        let taken = Taken {
                            id,
                            duplicate: true,
                        };
                        replies.push(Reply::Enqueued(reply, alert, taken));
                        continue;
                    }
                    let id = self.next_id;
                    self.next_id += 1;
                    let at = format::put(
                        frame.buf,
                        &Record::Accepted {
                            id,
                            accepted_ms: alert.accepted_ms,
                            key: dedup,
                            json: &json,
                            at: 0,
                        },
                    );
                    frame.puts.push(Put::Whole {
                        id,
                        at,
                        len: json.len() as u32,
                        head: format::head_of(&json),
                        finished: false,
                    });
                    if let Some(key) = dedup {
                        undo.push((key, self.dedup.insert(key, (id, alert.accepted_ms))));
                    }
                    let taken = Taken {
                        id,
                        duplicate: false,
                    };
                    replies.push(Reply::Enqueued(reply, alert, taken));
                }
                Cmd::Save { id, json, reply } => {
                    frame.save(id, &json);
                    replies.push(Reply::Saved(reply, id, json));
                }
            }
        }
        drop(view);
        for &id in forget {
            format::put(&mut buf, &Record::Forgotten { id });
        }
        if buf.len() == start + format::FRAME_HEADER {
            // Nothing to write (only duplicates).
            self.buf = buf;
            self.answer(&mut replies);
            self.replies = replies;
            return true;
        }
        log.seq += 1;
        format::seal_frame(&mut buf, start, log.seq);
        let written = log.append(&buf);
        self.buf = buf;
        match written {
            Ok((seg, off)) => {
                {
                    let mut guard = self
                        .state
                        .view
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if let Some(view) = guard.as_mut() {
                        if !view.files.contains_key(&seg) {
                            let (n, file) = log.active_file();
                            view.files.insert(n, file);
                        }
                        for put in self.puts.drain(..) {
                            put.apply(view, seg, off);
                        }
                        for id in forget {
                            view.docs.remove(id);
                        }
                    }
                }
                let evicted = self.dedup.take_evicted();
                if evicted > 0 {
                    self.state.metrics.dedup_evicted(evicted);
                }
                self.state.metrics.set_dedup_keys(self.dedup.len() as u64);
                self.answer(&mut replies);
                self.replies = replies;
                true
            }
            Err(e) => {
                for (key, before) in undo.into_iter().rev() {
                    self.dedup.restore(key, before);
                }
                self.next_id = next_before;
                self.unsaved = unsaved;
                tracing::error!(error = %crate::error_chain(&e), commands = replies.len(), "Queue commit failed; nothing in it was acknowledged. The queue is down until it can be reopened.");
                let refusal = self.fail(&e);
                for r in replies {
                    match r {
                        Reply::Enqueued(tx, ..) => drop(tx.send(Err(again(&refusal)))),
                        Reply::Saved(tx, id, json) => {
                            self.unsaved.insert(id, json);
                            if let Some(tx) = tx {
                                drop(tx.send(Err(again(&refusal))));
                            }
                        }
                    }
                }
                false
            }
        }
    }

    fn answer(&self, replies: &mut Vec<Reply>) {
        for r in replies.drain(..) {
            match r {
                Reply::Enqueued(tx, mut alert, taken) => {
                    alert.id = taken.id;
                    (self.on_commit)(Enqueued {
                        alert: *alert,
                        duplicate: taken.duplicate,
                        origin: crate::queue::Origin::Accepted,
                    });
                    drop(tx.send(Ok(taken)));
                }
                Reply::Saved(Some(tx), ..) => drop(tx.send(Ok(()))),
                Reply::Saved(None, ..) => {}
            }
        }
    }

    /// Marks the queue down after `e` and schedules a reopen; returns the refusal.
    fn fail(&mut self, e: &QueueError) -> QueueError {
        let reason = crate::error_chain(e);
        self.log = None;
        *self
            .state
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if self.reopened_at.is_none_or(|at| at.elapsed() >= STAYED_UP) {
            self.backoff.reset();
        }
        let wait = self.backoff.next();
        self.state.fault.set(reason.clone(), Instant::now() + wait);
        QueueError::Unavailable {
            reason,
            retry_after_ms: wait.as_millis().max(1000) as u64,
        }
    }

    /// One attempt to reopen the log after a fault.
    fn reopen(&mut self) {
        let opened = crate::queue::store::probe_room(&self.data_dir).and_then(|()| {
            segments::open(&self.data_dir, false, self.window_ms, self.dedup_max_keys)
        });
        let loaded = match opened {
            Ok(l) => l,
            Err(e) => {
                let wait = self.backoff.next();
                let reason = crate::error_chain(&e);
                tracing::warn!(error = %reason, retry_in_ms = wait.as_millis() as u64, "Queue still unavailable.");
                self.state.fault.set(reason, Instant::now() + wait);
                return;
            }
        };
        // Alerts a failed commit made durable although it reported an error: nobody was told
        // they were taken, but they are queued, so they are delivered.
        let unseen: Vec<(u64, Loc)> = loaded
            .view
            .docs
            .range(self.next_id..)
            .map(|(&id, &l)| (id, l))
            .collect();
        let committed_unseen: Vec<StoredAlert> = unseen
            .into_iter()
            .filter_map(|(id, l)| {
                let bytes = View::read(&loaded.view.files, l).ok()?;
                decode(id, &bytes).ok()
            })
            .collect();
        self.next_id = loaded.next_id;
        self.dedup = loaded.dedup;
        self.log = Some(loaded.log);
        self.state
            .metrics
            .set_queue_set_aside(loaded.set_aside_total);
        *self
            .state
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(loaded.view);
        self.state.fault.clear();
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
                origin: crate::queue::Origin::Accepted,
            });
        }
        if !self.unsaved.is_empty() {
            self.commit(Vec::new());
        }
        self.publish_sizes();
    }

    /// Forgets finished alerts beyond the history size (one small record each), expires dedup
    /// keys, and compacts when the log is big and mostly dead records.
    fn prune_and_compact(&mut self) {
        if self.log.is_none() {
            return;
        }
        let doomed: Vec<u64> = {
            let guard = self
                .state
                .view
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            guard.as_ref().map_or_else(Vec::new, |v| {
                let excess = v.docs.len().saturating_sub(self.history_max);
                v.docs
                    .iter()
                    .filter(|(_, l)| l.finished)
                    .take(excess)
                    .map(|(&id, _)| id)
                    .collect()
            })
        };
        for chunk in doomed.chunks(64 << 10) {
            if !self.commit_frame(&mut std::iter::empty(), chunk) {
                return;
            }
        }
        self.dedup.expire(now_ms() - self.window_ms);
        self.maybe_compact();
        self.publish_sizes();
    }

    fn maybe_compact(&mut self) {
        let Some(log) = self.log.as_mut() else { return };
        let total = log.total_bytes();
        if total < self.compact_min_bytes {
            return;
        }
        let state = Arc::clone(&self.state);
        let mut guard = state.view.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(view) = guard.as_mut() else { return };
        let live = view.live_bytes();
        if live.saturating_mul(2) > total {
            return;
        }
        let started = Instant::now();
        match log.compact(view, &self.dedup, self.next_id) {
            Ok(new) => {
                *view = new;
                drop(guard);
                let after = log.total_bytes();
                self.state.metrics.queue_compacted();
                tracing::info!(
                    before_bytes = total,
                    after_bytes = after,
                    live_bytes = live,
                    ms = started.elapsed().as_millis() as u64,
                    "Queue log compacted."
                );
            }
            Err(e) => {
                drop(guard);
                tracing::warn!(error = %crate::error_chain(&e), "Queue log compaction failed; the old segments stay.");
            }
        }
    }

    fn publish_sizes(&self) {
        let bytes = self.log.as_ref().map_or(0, Log::total_bytes);
        self.state.metrics.set_queue_file_bytes(bytes);
        self.state.metrics.set_dedup_keys(self.dedup.len() as u64);
    }
}

/// The same refusal again.
fn again(e: &QueueError) -> QueueError {
    match e {
        QueueError::Unavailable {
            reason,
            retry_after_ms,
        } => QueueError::Unavailable {
            reason: reason.clone(),
            retry_after_ms: *retry_after_ms,
        },
        _ => QueueError::Closed,
    }
}

/// A frame being built: its bytes and what they change in the view.
struct Frame<'a> {
    buf: &'a mut Vec<u8>,
    puts: &'a mut Vec<Put>,
    /// The head of each alert given a whole document in this frame.
    heads: &'a mut HashMap<u64, Option<(u32, u32)>>,
    view: Option<&'a View>,
}

impl Frame<'_> {
    /// Puts a save of alert `id`: a state record if its head is the one of the alert's newest
    /// whole document, else the whole document.
    fn save(&mut self, id: u64, json: &[u8]) {
        let head = format::head_of(json);
        let on = match self.heads.get(&id) {
            Some(&h) => h,
            None => self.view.and_then(|v| v.docs.get(&id)).and_then(|l| l.head),
        };
        let finished = finished(json, head);
        if let Some((state_at, head_crc)) = head
            && on == head
        {
            let tail = &json[state_at as usize..];
            let at = format::put(
                self.buf,
                &Record::State {
                    id,
                    head_crc,
                    tail,
                    at: 0,
                },
            );
            self.puts.push(Put::State {
                id,
                at,
                len: tail.len() as u32,
                finished,
            });
            return;
        }
        self.heads.insert(id, head);
        let at = format::put(self.buf, &Record::Saved { id, json, at: 0 });
        self.puts.push(Put::Whole {
            id,
            at,
            len: json.len() as u32,
            head,
            finished,
        });
    }
}

/// What a record of a frame changes in the view once the frame is written.
enum Put {
    Whole {
        id: u64,
        at: usize,
        len: u32,
        head: Option<(u32, u32)>,
        finished: bool,
    },
    State {
        id: u64,
        at: usize,
        len: u32,
        finished: bool,
    },
}

impl Put {
    /// Applies the record, written in the frame at `off` of segment `seg`.
    fn apply(self, view: &mut View, seg: u64, off: u64) {
        match self {
            Self::Whole {
                id,
                at,
                len,
                head,
                finished,
            } => {
                let doc = Part {
                    seg,
                    off: off + at as u64,
                    len,
                };
                let loc = Loc {
                    doc,
                    head,
                    state: None,
                    finished,
                };
                view.docs.insert(id, loc);
            }
            Self::State {
                id,
                at,
                len,
                finished,
            } => {
                // Its document is there: only this thread changes the view, and it saw it.
                if let Some(loc) = view.docs.get_mut(&id) {
                    loc.state = Some(Part {
                        seg,
                        off: off + at as u64,
                        len,
                    });
                    loc.finished = finished;
                }
            }
        }
    }
}

/// Whether the document `json` is finished; one that does not say is taken as unfinished (it
/// is redone rather than lost). With its state's place known (`head`), only the state is
/// looked at: `finished_ms` is written only when set, and no recipient has such a key.
fn finished(json: &[u8], head: Option<(u32, u32)>) -> bool {
    const KEY: &[u8] = b",\"finished_ms\":";
    match head {
        Some((at, _)) => json[at as usize..]
            .windows(KEY.len())
            .position(|w| w == KEY)
            .is_some_and(|i| !json[at as usize + i + KEY.len()..].starts_with(b"null")),
        None => serde_json::from_slice::<Finished>(json).is_ok_and(|f| f.finished_ms.is_some()),
    }
}
