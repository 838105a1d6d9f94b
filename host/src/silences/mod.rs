//! Silences and maintenance windows (issue 16 §3): "do not message anyone about alerts like
//! these from then until then". A silence has matchers in the vocabulary of a route's `match`
//! ([`MatcherSpec`]), a start, an end, an author and a comment. While it is active, an alert it
//! matches is recorded `silenced` with the silence's id for each recipient and not delivered.
//!
//! - [`spec`]: the request to create one, checked and bounded ([`NewSilence::check`]), and the
//!   pure duration parser (`2h`, `1h30m`) the API and replies share.
//! - [`matchers`]: the matchers, compiled to the router's [`crate::router::Matcher`].
//! - [`store`]: the [`SilenceStore`] trait (so a shared backend can keep them), the embedded
//!   `data_dir/silences.redb` and an in-memory store for tests.
//! - [`pg_store`]: [`PgSilences`], the silences of every host in the PostgreSQL database the
//!   queue shares (`[queue] backend = "postgres"`).
//! - [`registry`]: [`Silences`], the silences in force in memory, what the dispatcher asks
//!   ([`Silences::silencing`]) and the admin API changes.
//! - [`like`]: "alerts like this one" (its labels, or its source and subject), for the
//!   incidents' `silence 2h` reply.
//!
//! A silence is pending before its start, active from its start until its end, and expired from
//! its end on: the state follows from the clock, so a silence expires on its own. `DELETE`
//! expires one now (its end moves to now). Expired silences stay listed for
//! [`KEEP_EXPIRED_MS`] (at most [`MAX_EXPIRED`] of them), then are pruned.

pub mod like;
pub mod matchers;
pub mod pg_store;
pub mod registry;
pub mod spec;
pub mod store;

use serde::{Deserialize, Serialize};

pub use self::{
    matchers::{MatcherSpec, MatchersError},
    pg_store::PgSilences,
    registry::{Silenced, Silences},
    spec::{NewSilence, SpecError, parse_duration},
    store::{MemorySilences, RedbSilences, SilenceStore},
};

/// The most silences not yet expired (pending or active) a host keeps; one more is refused.
pub const MAX_SILENCES: usize = 1000;
/// The most patterns (label patterns, subject, body) all pending and active silences hold
/// together: patterns are what takes memory (up to about 1 MiB for a silence with nine
/// patterns using Unicode classes), exact labels take next to none.
pub const MAX_LIVE_PATTERNS: usize = 1000;
/// How long an expired silence stays listed.
pub const KEEP_EXPIRED_MS: i64 = 7 * 24 * 3600 * 1000;
/// The most expired silences kept listed; older ones are pruned first.
pub const MAX_EXPIRED: usize = 1000;
/// How often a host re-reads a store shared with other hosts ([`SilenceStore::shared`]).
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How often expired silences are looked at for pruning.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// One silence, as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// Given by the store when it is created; never reused.
    pub id: u64,
    pub matchers: MatcherSpec,
    /// From (Unix ms).
    pub starts_ms: i64,
    /// Until (Unix ms, exclusive).
    pub ends_ms: i64,
    pub author: String,
    pub comment: String,
    pub created_ms: i64,
    /// When it was expired early (`DELETE`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_ms: Option<i64>,
}

/// Where a silence stands at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl SilenceState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Expired => "expired",
        }
    }
}

impl Silence {
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms >= self.ends_ms {
            SilenceState::Expired
        } else if now_ms < self.starts_ms {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }
}

/// Why a silence could not be created, changed or kept.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error(
        "{limit} silences are pending or active already (the most a host keeps); expire some first"
    )]
    TooMany { limit: usize },
    #[error(
        "the silences pending or active hold {live} patterns and this one {more}; at most {limit} \
         in all (patterns take memory: prefer exact labels, or expire some)"
    )]
    TooManyPatterns {
        live: usize,
        more: usize,
        limit: usize,
    },
    #[error("no silence {0}")]
    Unknown(u64),
    #[error("silence {0} has expired already")]
    AlreadyExpired(u64),
    #[error("silence store")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("silence {id} is stored damaged")]
    Corrupt {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
}

impl SilenceError {
    pub fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

#[cfg(test)]
mod tests;
