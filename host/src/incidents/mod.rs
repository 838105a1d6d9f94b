//! Incidents (issue 14): an alert taken by a route that names an escalation policy, paged level
//! by level until someone acknowledges or resolves it, durable across crashes.
//!
//! - [`Engine`] owns the open incidents and their timers: [`Engine::open_or_join`] opens an
//!   incident (or joins the open one with the same dedup key), [`Engine::ack`],
//!   [`Engine::resolve`], [`Engine::escalate_now`] change it; each commits to the
//!   [`IncidentStore`] before it returns. [`Engine::subscribe`] hands out [`IncidentEvent`]s
//!   ("acked by X", "resolved by Alertmanager") for the replies side to tell the people paged.
//! - A step (a level paged) is recorded first, then handed to the [`Pager`] with a stable
//!   [`Page::key`]; a step recorded but not yet handed when the bridge died is handed again on
//!   start, and the pager's dedup on that key makes it happen once.
//! - Times are wall-clock Unix milliseconds in the store, read through [`Clock`] so tests run on
//!   tokio's paused clock.

pub mod commands;
mod early;
mod engine;
mod pager;
mod pg_store;
#[cfg(test)]
mod pg_tests;
mod port;
pub mod reply;
pub mod reply_metrics;
pub mod reply_send;
mod store;

use std::{collections::BTreeMap, fmt, future::Future, pin::Pin};

use serde::{Deserialize, Serialize};

pub use self::{
    early::{Change as EarlyChange, EarlyResolve},
    engine::{Clock, Engine, Opened},
    pager::{QueuePager, SOURCE as PAGE_SOURCE, page_alert},
    pg_store::PgIncidents,
    port::EnginePort,
    store::{IncidentStore, MemoryIncidents, PageState, Query, RedbIncidents, Versioned},
};
pub use crate::config::escalation::{EscalationPolicy, Level, PolicyError};

/// A boxed future, so stores and pagers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An incident's number, shown as `#42`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub u64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Paged, nobody acknowledged: the levels run.
    Open,
    /// Someone acknowledged: no more levels (until `ack_timeout_secs`, if set).
    Acknowledged,
    /// Done; nothing more happens.
    Resolved,
}

impl IncidentState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }
}

/// Why a step is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Page the next level (nobody acked within its wait).
    Escalate,
    /// Acked but not resolved within `ack_timeout_secs`: page the last level again.
    AckTimeout,
}

/// The next thing the timer does for an incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextStep {
    /// 0 for the first run of the levels, 1.. for each `repeat`.
    pub round: u32,
    /// Index into the policy's levels (0 = level 1).
    pub level: usize,
    /// Unix ms.
    pub due_ms: i64,
    pub kind: StepKind,
}

/// One level paged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Sequence number of this page within the incident (1, 2, ...).
    pub seq: u32,
    pub round: u32,
    /// Level number, 1-based as operators count.
    pub level: usize,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub at_ms: i64,
    /// The pager took it (its deliveries are committed); false after a crash in between.
    pub handed: bool,
    /// How many recipients the pager found reachable (None until handed).
    pub reachable: Option<usize>,
    /// Why it was paged: the first page, an escalation, a repeat, `esc` by someone, ack timeout.
    pub reason: String,
}

impl Page {
    /// A stable key for this page: the pager de-duplicates on it, so a page handed again after
    /// a crash is delivered once.
    pub fn key(&self, id: IncidentId) -> String {
        format!("incident/{}/page/{}", id.0, self.seq)
    }

    /// The incident and page number of a [`Page::key`].
    pub fn parse_key(key: &str) -> Option<(IncidentId, u32)> {
        let rest = key.strip_prefix("incident/")?;
        let (id, seq) = rest.split_once("/page/")?;
        Some((IncidentId(id.parse().ok()?), seq.parse().ok()?))
    }
}

/// Who did something, when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub by: String,
    pub at_ms: i64,
}

/// An incident as stored and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub state: IncidentState,
    /// The escalation policy's name.
    pub policy: String,
    pub route: String,
    /// The source of the first alert.
    pub source: String,
    pub dedup_key: Option<String>,
    /// The first alert's subject.
    pub title: String,
    /// Ids of the alerts that opened or joined it (first one first).
    pub alert_ids: Vec<u64>,
    /// How many alerts joined it, the first included ("seen 3×").
    pub seen: u32,
    pub opened_ms: i64,
    /// A level with nobody reachable is passed at once (the route's offline policy is skip).
    pub pass_unreachable: bool,
    pub pages: Vec<Page>,
    pub next: Option<NextStep>,
    pub acked: Option<Mark>,
    pub resolved: Option<Mark>,
    /// Per user (SIP URI): the conversation a page or reply reached them in.
    pub conversations: BTreeMap<String, String>,
    /// Per user (SIP URI): the sink instance that reached them (news goes back through it).
    /// Absent in incidents stored before it was kept: the route's first sink speaks then.
    #[serde(default)]
    pub sinks: BTreeMap<String, String>,
}

impl Incident {
    /// Everyone paged for this incident so far, each once, in page order.
    pub fn paged_users(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.pages {
            for u in &p.users {
                if !out.contains(u) {
                    out.push(u.clone());
                }
            }
        }
        out
    }

    /// Whether `user` was paged for it.
    pub fn was_paged(&self, user: &str) -> bool {
        self.pages.iter().any(|p| p.users.iter().any(|u| u == user))
    }

    /// The level paged last (1-based), 0 before any page.
    pub fn level(&self) -> usize {
        self.pages.last().map_or(0, |p| p.level)
    }

    pub fn is_resolved(&self) -> bool {
        self.state == IncidentState::Resolved
    }
}

/// What the engine tells its subscribers (the replies side, metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IncidentEvent {
    Opened {
        id: IncidentId,
    },
    /// Another alert with the same dedup key joined; `seen` counts them all.
    Joined {
        id: IncidentId,
        alert_id: u64,
        seen: u32,
    },
    /// A level was paged (and handed to the pager).
    Paged {
        id: IncidentId,
        level: usize,
        round: u32,
        users: Vec<String>,
        reason: String,
    },
    Acknowledged {
        id: IncidentId,
        by: String,
    },
    Resolved {
        id: IncidentId,
        by: String,
    },
    /// Someone asked for the next level now.
    Escalated {
        id: IncidentId,
        by: String,
    },
}

/// What a page asks the pager to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub incident: IncidentId,
    pub route: String,
    /// [`Page::key`]: de-duplicate on it.
    pub key: String,
    pub level: usize,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// The IM text, naming the incident and how to answer.
    pub text: String,
}

/// Hands a page to delivery (the host's queue and dispatcher).
pub trait Pager: Send + Sync + 'static {
    /// Commits the page's deliveries (idempotent on `req.key`) and answers how many of its
    /// recipients are reachable now (for a level with nobody reachable to be passed).
    fn page(&self, req: PageRequest) -> BoxFuture<'static, Result<usize, PagerError>>;
}

/// The pager could not take a page; the engine retries it.
#[derive(Debug, thiserror::Error)]
#[error("cannot hand the page over: {reason}")]
pub struct PagerError {
    pub reason: String,
}

/// Why an incident operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("no incident {0}")]
    Unknown(IncidentId),
    #[error("{0} is already resolved")]
    AlreadyResolved(IncidentId),
    #[error("unknown escalation policy `{0}`")]
    UnknownPolicy(String),
    #[error("{0} was changed by another host meanwhile")]
    Conflict(IncidentId),
    #[error("another host opened an incident for dedup key `{0}` meanwhile")]
    KeyTaken(String),
    #[error("incident storage failed")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the remembered resolve of `{key}` in storage is corrupt")]
    CorruptEarly {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("incident {id} in storage is corrupt")]
    Corrupt {
        id: u64,
        #[source]
        source: serde_json::Error,
    },
}

impl IncidentError {
    pub(crate) fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(e))
    }
}

/// The IM text of a page: names the incident and says how to answer.
pub fn page_text(inc: &Incident) -> String {
    let seen = if inc.seen > 1 {
        format!(" (seen {}×)", inc.seen)
    } else {
        String::new()
    };
    let n = inc.id.0;
    format!(
        "[{}] {}{seen} — reply `ack {n}`, `resolve {n}` or `esc {n}`",
        inc.id, inc.title
    )
}

#[cfg(test)]
mod tests;
