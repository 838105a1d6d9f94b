//! What all sessions of one server share: users, mailbox locks, the faults and the counters.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

use super::config::{BadReplyKind, Faults, Tls, UserConfig};

/// Whether the server listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunState {
    Up,
    /// The `down` fault: not listening, sessions cut.
    Down,
    /// Stopped for good.
    Stopped,
}

/// What the server did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections accepted.
    pub sessions: u64,
    /// Successful logins.
    pub logins: u64,
    /// Logins refused (wrong credentials, `refuse_logins`, mailbox in use).
    pub refused_logins: u64,
    /// RETR commands answered (in full or cut).
    pub retrs: u64,
    /// Mail files removed by QUIT.
    pub deleted: u64,
    /// Sessions over (QUIT, client gone, or cut); their mailbox locks are released.
    pub ended: u64,
    /// Connections the server cut (`drop_in_retr`, `down`, stop).
    pub cut: u64,
}

#[derive(Default)]
struct FaultState {
    faults: Faults,
    /// RETRs seen since the faults were last set.
    retrs_since_set: u32,
}

pub(super) struct Shared {
    users: HashMap<String, UserConfig>,
    tls: Option<Tls>,
    locks: Mutex<HashSet<String>>,
    faults: Mutex<FaultState>,
    counters: Mutex<Counters>,
    run: watch::Sender<RunState>,
    /// Whether the accept loop holds a bound listener right now.
    listening: watch::Sender<bool>,
    greetings: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("users", &self.users.keys())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(super) fn new(users: Vec<UserConfig>, faults: Faults, tls: Option<Tls>) -> Self {
        let run = if faults.down {
            RunState::Down
        } else {
            RunState::Up
        };
        Self {
            users: users.into_iter().map(|u| (u.name.clone(), u)).collect(),
            tls,
            locks: Mutex::default(),
            faults: Mutex::new(FaultState {
                faults,
                retrs_since_set: 0,
            }),
            counters: Mutex::default(),
            run: watch::Sender::new(run),
            listening: watch::Sender::new(true),
            greetings: AtomicU64::new(0),
        }
    }

    pub(super) fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.get(name)
    }

    pub(super) fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// A fresh APOP timestamp for a greeting (RFC 1939 §7: `<process-ID.clock@hostname>`).
    pub(super) fn apop_timestamp(&self) -> String {
        let n = self.greetings.fetch_add(1, Ordering::Relaxed);
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "<{}.{}.{n}@alertbridge-pop3-test>",
            std::process::id(),
            clock.as_micros()
        )
    }

    pub(super) fn run_state(&self) -> watch::Receiver<RunState> {
        self.run.subscribe()
    }

    /// Moves to `state` unless stopped for good.
    pub(super) fn set_run(&self, state: RunState) {
        self.run.send_if_modified(|s| {
            let change = *s != RunState::Stopped && *s != state;
            if change {
                *s = state;
            }
            change
        });
    }

    /// Called by the accept loop when it bound or closed its listener.
    pub(super) fn set_listening(&self, listening: bool) {
        self.listening.send_replace(listening);
    }

    /// Waits until the listener matches the run state (bound when up, closed when down or
    /// stopped).
    pub(super) async fn settled(&self) {
        let mut run = self.run.subscribe();
        let mut listening = self.listening.subscribe();
        loop {
            let want = *run.borrow_and_update() == RunState::Up;
            if *listening.borrow_and_update() == want {
                return;
            }
            tokio::select! {
                changed = run.changed() => if changed.is_err() { return },
                changed = listening.changed() => if changed.is_err() { return },
            }
        }
    }

    fn faults_lock(&self) -> MutexGuard<'_, FaultState> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn faults(&self) -> Faults {
        self.faults_lock().faults.clone()
    }

    /// Replaces the faults (restarting the RETR count) and applies `down`.
    pub(super) fn set_faults(&self, faults: Faults) {
        let down = faults.down;
        *self.faults_lock() = FaultState {
            faults,
            retrs_since_set: 0,
        };
        self.set_run(if down { RunState::Down } else { RunState::Up });
    }

    pub(super) fn reply_delay(&self) -> Duration {
        self.faults_lock().faults.reply_delay
    }

    pub(super) fn refuse_logins(&self) -> bool {
        self.faults_lock().faults.refuse_logins
    }

    /// Takes the first pending bad reply for `verb`, if any.
    pub(super) fn take_bad_reply(&self, verb: &str) -> Option<BadReplyKind> {
        let mut state = self.faults_lock();
        let i = state
            .faults
            .bad_replies
            .iter()
            .position(|b| b.command.eq_ignore_ascii_case(verb))?;
        Some(state.faults.bad_replies.remove(i).reply)
    }

    /// Counts a RETR; true when this is the one to cut (the fault is then used up).
    pub(super) fn retr_should_drop(&self) -> bool {
        self.count(|c| c.retrs += 1);
        let mut state = self.faults_lock();
        state.retrs_since_set = state.retrs_since_set.saturating_add(1);
        if state.faults.drop_in_retr == Some(state.retrs_since_set) {
            state.faults.drop_in_retr = None;
            return true;
        }
        false
    }

    pub(super) fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.counters.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub(super) fn counters(&self) -> Counters {
        *self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks `user`'s mailbox for one session; `None` while another session holds it.
    pub(super) fn lock_mailbox(self: &Arc<Self>, user: &str) -> Option<MailboxLock> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        locks.insert(user.to_owned()).then(|| MailboxLock {
            shared: Arc::clone(self),
            user: user.to_owned(),
        })
    }
}

/// Held by the session that has a mailbox open; dropping it unlocks the mailbox.
pub(super) struct MailboxLock {
    shared: Arc<Shared>,
    user: String,
}

impl Drop for MailboxLock {
    fn drop(&mut self) {
        self.shared
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.user);
    }
}
