//! What the queue handle ([`super::redb_queue`]) and its writer thread ([`super::writer`])
//! share: the database slot, the fault that closed it ([`FaultState`], which the PostgreSQL
//! queue keeps too), how a stored record decodes, and the writer's inbox. Both import it from
//! here, so neither imports the other's internals. The embedded queues (redb and the segment
//! log) start, feed and stop their writer threads alike ([`WriterThread`]); every backend
//! hands a writer its commands and awaits the answer the same way ([`ask`], [`save_with`]).
//!
//! The inbox keeps commands in the order they were given; each has a time by which it must be
//! committed, and the writer is woken only when a command is due before the writer would wake
//! by itself. An enqueue and a durable save (a `sending` mark) are due at once: their senders
//! wait for the commit. An outcome save may wait up to [`HOLD_OUTCOMES`] for a commit to ride
//! in. A busy writer lingers on short timeouts, so outcomes ride in the next commit without any
//! thread being woken for them.
//!
//! A durable save does not wait for the next enqueue to share its commit: the dispatcher sends
//! to one recipient one message at a time, so a `sending` mark that waits for the next enqueue
//! caps that recipient's rate at the enqueue rate, and a backlog never drains (measured: at
//! 1,000/s to one recipient the queue fell behind by seconds).

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::Alert;
use redb::Database;
use tokio::sync::oneshot;

use super::{BoxFuture, QueueError, Taken, redb_queue::dedup_hash};
use crate::{
    metrics::Metrics,
    model::{StoredAlert, now_ms},
};

/// How long an outcome save waits at most for a commit to ride in.
pub(super) const HOLD_OUTCOMES: Duration = Duration::from_millis(10);
/// Commands at most per commit; more wait for the next one.
pub(super) const MAX_BATCH: usize = 8192;

/// Work for the writer thread. Documents arrive encoded: serialization happens on the callers'
/// threads, in parallel, and the writer only touches the database.
pub(super) enum Cmd {
    Enqueue {
        dedup: Option<u128>,
        alert: Box<StoredAlert>,
        json: Vec<u8>,
        reply: Reply<Taken>,
    },
    Save {
        id: u64,
        json: Vec<u8>,
        /// `None` for an outcome: it may wait for the next commit, and nobody waits for it
        /// (a failed commit keeps it for the reopen).
        reply: Option<Reply<()>>,
    },
}

/// What the writer is to do next.
pub(super) enum Next {
    /// Commit these, in this order.
    Batch(Vec<Cmd>),
    /// The time given passed with nothing due.
    Timeout,
    /// The inbox is closed and empty.
    Closed,
}

#[derive(Default)]
struct Pending {
    cmds: VecDeque<Cmd>,
    /// When the first of `cmds` must be committed.
    due: Option<Instant>,
    /// Until when the writer sleeps, while it does.
    sleeping_until: Option<Instant>,
    closed: bool,
}

/// The writer's inbox (see the module doc).
#[derive(Default)]
pub(super) struct Inbox {
    inner: Mutex<Pending>,
    wake: Condvar,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `cmd` to the writer.
    pub(super) fn send(&self, cmd: Cmd) -> Result<(), QueueError> {
        let mut b = self.lock();
        if b.closed {
            return Err(QueueError::Closed);
        }
        let now = Instant::now();
        let due = match &cmd {
            Cmd::Save { reply: None, .. } => now + HOLD_OUTCOMES,
            Cmd::Enqueue { .. } | Cmd::Save { .. } => now,
        };
        let due = b.due.map_or(due, |d| d.min(due));
        b.due = Some(due);
        let wake = b.sleeping_until.is_some_and(|until| until > due);
        b.cmds.push_back(cmd);
        drop(b);
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Refuses every later command; the writer takes what is in it, then sees it closed.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until a command is due (then returns every command given so far, up to
    /// [`MAX_BATCH`]; anything once closed), or until `until`.
    pub(super) fn next(&self, until: Instant) -> Next {
        let mut b = self.lock();
        loop {
            let now = Instant::now();
            if b.due.is_some_and(|d| d <= now) || (b.closed && !b.cmds.is_empty()) {
                let n = b.cmds.len().min(MAX_BATCH);
                let batch: Vec<Cmd> = b.cmds.drain(..n).collect();
                // What is left (past the batch bound) goes in the next commit at once.
                b.due = (!b.cmds.is_empty()).then_some(now);
                return Next::Batch(batch);
            }
            if b.closed {
                return Next::Closed;
            }
            if now >= until {
                return Next::Timeout;
            }
            let wake_at = b.due.map_or(until, |d| d.min(until));
            b.sleeping_until = Some(wake_at);
            b = self
                .wake
                .wait_timeout(b, wake_at - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            b.sleeping_until = None;
        }
    }
}

/// What a writer answers a command with.
pub(super) type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

/// Hands a writer the command `send` builds around a reply channel; resolves to the writer's
/// answer, or at once to why the command could not be sent.
pub(super) fn ask<T: Send + 'static>(
    send: impl FnOnce(Reply<T>) -> Result<(), QueueError>,
) -> BoxFuture<'static, Result<T, QueueError>> {
    let (reply, rx) = oneshot::channel();
    let sent = send(reply);
    Box::pin(async move {
        sent?;
        rx.await.map_err(|_| QueueError::Closed)?
    })
}

/// Hands a writer the save `send` builds: an `outcome` goes without a reply (it may wait for
/// the next commit) and resolves once sent; any other resolves to the writer's answer.
pub(super) fn save_with(
    outcome: bool,
    send: impl FnOnce(Option<Reply<()>>) -> Result<(), QueueError>,
) -> BoxFuture<'static, Result<(), QueueError>> {
    if outcome {
        Box::pin(std::future::ready(send(None)))
    } else {
        ask(|reply| send(Some(reply)))
    }
}

/// An embedded queue's writer thread and its inbox, as the queue handle keeps them.
pub(super) struct WriterThread {
    /// Closed by [`WriterThread::close`]; the writer ends once it is drained.
    inbox: Arc<Inbox>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

impl WriterThread {
    /// Starts `run` on a thread named `name`, reading a new inbox.
    pub(super) fn spawn(
        name: &str,
        run: impl FnOnce(&Inbox) + Send + 'static,
    ) -> Result<Self, QueueError> {
        let inbox = Arc::new(Inbox::default());
        let thread = {
            let inbox = Arc::clone(&inbox);
            thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&inbox))
                .map_err(QueueError::storage)?
        };
        Ok(Self {
            inbox,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stores a new alert from `source` (or finds its duplicate); refused at once while
    /// `fault` says the queue is down.
    pub(super) fn enqueue(
        &self,
        fault: &FaultState,
        source: &str,
        alert: Alert,
    ) -> BoxFuture<'static, Result<Taken, QueueError>> {
        let stored = StoredAlert::new(0, source, alert, now_ms());
        let dedup = stored
            .alert
            .dedup_key
            .as_deref()
            .map(|k| dedup_hash(source, k));
        ask(|reply| {
            if let Some(e) = fault.unavailable() {
                return Err(e);
            }
            let json = serde_json::to_vec(&stored).map_err(QueueError::storage)?;
            self.inbox.send(Cmd::Enqueue {
                dedup,
                alert: Box::new(stored),
                json,
                reply,
            })
        })
    }

    /// A save; an `outcome` may wait for the next commit, and resolves once handed over (see
    /// [`super::writer`]). A save while faulted still goes to the writer, which keeps it for
    /// the reopen.
    pub(super) fn save(
        &self,
        alert: &StoredAlert,
        outcome: bool,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        save_with(outcome, |reply| {
            let json = serde_json::to_vec(alert).map_err(QueueError::storage)?;
            self.inbox.send(Cmd::Save {
                id: alert.id,
                json,
                reply,
            })
        })
    }

    /// Lets the writer finish what it was given and waits for it to end; later commands are
    /// refused with [`QueueError::Closed`].
    pub(super) fn close(&self) {
        self.inbox.close();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// Why the queue is down, and when the writer tries to reopen it next.
pub(super) struct Fault {
    pub reason: String,
    pub retry_at: Instant,
}

/// Whether a queue is down, why, and when its writer tries again: set and cleared by the
/// writer alone, read by the handle on every enqueue (a flag first, so the healthy path takes
/// no lock). Loud: every change goes to the health metric (`alertbridge_queue_up`, /healthz)
/// and each fall counts in `alertbridge_queue_faults_total`. Both the embedded queue and the
/// PostgreSQL one keep theirs in one of these.
pub(super) struct FaultState {
    fault: Mutex<Option<Fault>>,
    /// True while `fault` is set.
    down: AtomicBool,
    metrics: Arc<Metrics>,
}

impl FaultState {
    /// Up, and the metric says so.
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.set_queue_fault(None);
        Self {
            fault: Mutex::new(None),
            down: AtomicBool::new(false),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Fault>> {
        self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The refusal while down ("try later", after about the time until the next attempt).
    pub(super) fn unavailable(&self) -> Option<QueueError> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        self.lock().as_ref().map(|f| QueueError::Unavailable {
            reason: f.reason.clone(),
            retry_after_ms: f
                .retry_at
                .saturating_duration_since(Instant::now())
                .as_millis()
                .clamp(1000, 60_000) as u64,
        })
    }

    /// When the writer tries again, while down.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        if !self.down.load(Ordering::Acquire) {
            return None;
        }
        self.lock().as_ref().map(|f| f.retry_at)
    }

    /// Marks the queue down (or still down, with the newest reason) until `retry_at`; a fall
    /// from up is counted once.
    pub(super) fn set(&self, reason: String, retry_at: Instant) {
        let mut f = self.lock();
        if f.is_none() {
            self.metrics.queue_fault_seen();
        }
        self.metrics.set_queue_fault(Some(reason.clone()));
        *f = Some(Fault { reason, retry_at });
        self.down.store(true, Ordering::Release);
    }

    /// Up again.
    pub(super) fn clear(&self) {
        let mut f = self.lock();
        *f = None;
        self.down.store(false, Ordering::Release);
        self.metrics.set_queue_fault(None);
    }
}

/// What the queue handle and its writer thread share.
pub(super) struct Shared {
    /// `None` while faulted. Reads hold the read lock for their whole transaction, so the
    /// writer's write lock (to close, reopen or compact the file) has it to itself.
    pub db: RwLock<Option<Database>>,
    pub fault: FaultState,
    pub dir: PathBuf,
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// The refusal while faulted, if faulted.
    pub(super) fn unavailable(&self) -> Option<QueueError> {
        self.fault.unavailable()
    }
}

/// Decodes the stored record `bytes` of alert `id`.
pub(super) fn decode(id: u64, bytes: &[u8]) -> Result<StoredAlert, QueueError> {
    let mut alert: StoredAlert =
        serde_json::from_slice(bytes).map_err(|source| QueueError::Corrupt { id, source })?;
    alert.id = id;
    Ok(alert)
}
