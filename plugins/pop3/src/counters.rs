//! The counts of what one `pop3` instance did, for its health line and tests: written by the
//! sessions and the source's loop, read through [`crate::source::Pop3Source::counters`].

use std::sync::atomic::AtomicU64;

/// Counts of what the source did, for health and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Mails whose alert the host accepted.
    pub alerts: AtomicU64,
    /// Mails that became alerts only partly (a `mail.problem` label).
    pub problems: AtomicU64,
    /// Mails from senders not allowed.
    pub disallowed: AtomicU64,
    /// Mails larger than `max_message_bytes`, left on the server.
    pub oversize: AtomicU64,
    /// Alerts the host refused permanently (their mails are quarantined).
    pub refused: AtomicU64,
    /// Mails quarantined (their problem alert queued).
    pub quarantined: AtomicU64,
    /// Sessions that ended with QUIT accepted.
    pub sessions: AtomicU64,
    /// Sessions that failed (connect, login, protocol, host refusal).
    pub failures: AtomicU64,
}
