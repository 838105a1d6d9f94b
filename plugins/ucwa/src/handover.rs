//! The hand-over from the event channel to the worker that offers replies to the host (see
//! `inbound.rs`): a bounded channel, the receiver taken once by the worker, and the cap on
//! invitation accepts in flight. Below `shared.rs`, which holds one in the sink's core.

use std::sync::{Arc, atomic::AtomicU64};

use tokio::sync::{Semaphore, mpsc};

use crate::protocol::inbound::IncomingMessage;

/// Invitation accepts in flight at once; more are dropped (the invitation rings out).
pub const MAX_ACCEPTS: usize = 16;

/// The hand-over from the event channel to the worker that talks to the host.
#[derive(Debug)]
pub struct Inbound {
    pub(crate) tx: mpsc::Sender<IncomingMessage>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<IncomingMessage>>>,
    pub(crate) accepts: Arc<Semaphore>,
    /// Messages dropped because the channel or the pending list was full.
    pub dropped: AtomicU64,
}

impl Inbound {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            accepts: Arc::new(Semaphore::new(MAX_ACCEPTS)),
            dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<IncomingMessage>> {
        self.rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}
