//! Escalation policies (`[[escalation]]`): who is paged at each level, after how long, how
//! often the levels run, and when an acknowledgement runs out; read from the file and checked
//! before use.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use super::{
    error::Collector,
    raw::{RawEscalation, deserialize, tables},
};

/// One level: the groups and users paged together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub groups: Vec<String>,
    pub users: Vec<String>,
    /// Paged when nobody acknowledged within this long after the incident's start (or the
    /// run's start, for a repeat).
    pub after_secs: u64,
}

/// A named escalation policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    pub name: String,
    /// How many more times the levels run when nobody acks; 0 = once.
    pub repeat: u32,
    /// > 0: an acknowledged incident not resolved within this long is paged again.
    pub ack_timeout_secs: u64,
    pub levels: Vec<Level>,
}

/// What is wrong with a policy; `level` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("escalation `{0}` has no levels")]
    NoLevels(String),
    #[error("level {level} of escalation `{policy}` pages nobody (give `groups` or `users`)")]
    EmptyLevel { policy: String, level: usize },
    #[error(
        "level 1 of escalation `{policy}` must have after_secs = 0 (it is paged at once), not {after}"
    )]
    FirstNotZero { policy: String, after: u64 },
    #[error(
        "level {level} of escalation `{policy}` waits {after} s, not more than level {prev_level}'s {prev} s: waits must increase"
    )]
    NotIncreasing {
        policy: String,
        level: usize,
        after: u64,
        prev_level: usize,
        prev: u64,
    },
    #[error("level {level} of escalation `{policy}` names unknown group `{group}`")]
    UnknownGroup {
        policy: String,
        level: usize,
        group: String,
    },
    #[error("level {level} of escalation `{policy}`: user `{user}` {problem}")]
    BadUser {
        policy: String,
        level: usize,
        user: String,
        problem: &'static str,
    },
}

impl PolicyError {
    /// The 1-based level the error is about, if any (for locating it in the file).
    pub fn level(&self) -> Option<usize> {
        match self {
            Self::NoLevels(_) => None,
            Self::FirstNotZero { .. } => Some(1),
            Self::EmptyLevel { level, .. }
            | Self::NotIncreasing { level, .. }
            | Self::UnknownGroup { level, .. }
            | Self::BadUser { level, .. } => Some(*level),
        }
    }
}

/// The shortest pause before the levels run again (`repeat`) after the last level.
pub const MIN_REPEAT_GAP: Duration = Duration::from_secs(60);

impl EscalationPolicy {
    /// Checks the policy: levels present, each paging someone, waits starting at 0 and
    /// increasing, groups known (`group_known`), users valid SIP URIs.
    pub fn check(&self, group_known: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
        let policy = || self.name.clone();
        if self.levels.is_empty() {
            return Err(PolicyError::NoLevels(policy()));
        }
        for (i, l) in self.levels.iter().enumerate() {
            let level = i + 1;
            if l.groups.is_empty() && l.users.is_empty() {
                return Err(PolicyError::EmptyLevel {
                    policy: policy(),
                    level,
                });
            }
            if i == 0 && l.after_secs != 0 {
                return Err(PolicyError::FirstNotZero {
                    policy: policy(),
                    after: l.after_secs,
                });
            }
            if i > 0 {
                let prev = self.levels[i - 1].after_secs;
                if l.after_secs <= prev {
                    return Err(PolicyError::NotIncreasing {
                        policy: policy(),
                        level,
                        after: l.after_secs,
                        prev_level: i,
                        prev,
                    });
                }
            }
            if let Some(g) = l.groups.iter().find(|g| !group_known(g)) {
                return Err(PolicyError::UnknownGroup {
                    policy: policy(),
                    level,
                    group: g.clone(),
                });
            }
            for u in &l.users {
                if let Some(problem) = crate::router::sip_uri_problem(u) {
                    return Err(PolicyError::BadUser {
                        policy: policy(),
                        level,
                        user: u.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(())
    }

    /// The policy with each level's groups' members (through `groups`) added to its users, so
    /// that a page records everyone it reaches (who may then answer it). The groups stay, for
    /// display.
    pub fn with_members(&self, groups: &BTreeMap<String, Vec<String>>) -> Self {
        let mut out = self.clone();
        for level in &mut out.levels {
            let members = level.groups.iter().filter_map(|g| groups.get(g)).flatten();
            for u in members {
                if !level.users.contains(u) {
                    level.users.push(u.clone());
                }
            }
        }
        out
    }

    /// How long after level `level` (0-based) was paged the next step is due, and which:
    /// `(round, level)` of the next page, or None when the levels and repeats are done.
    pub fn after(&self, round: u32, level: usize) -> Option<(u32, usize, Duration)> {
        let here = self.levels.get(level)?.after_secs;
        if let Some(next) = self.levels.get(level + 1) {
            return Some((
                round,
                level + 1,
                Duration::from_secs(next.after_secs - here),
            ));
        }
        if round < self.repeat {
            return Some((round + 1, 0, self.repeat_gap()));
        }
        None
    }

    /// The pause after the last level before the levels run again: as long as the last
    /// level's own wait, at least [`MIN_REPEAT_GAP`].
    pub fn repeat_gap(&self) -> Duration {
        let n = self.levels.len();
        let last = self.levels.last().map_or(0, |l| l.after_secs);
        let prev = if n >= 2 {
            self.levels[n - 2].after_secs
        } else {
            0
        };
        Duration::from_secs(last.saturating_sub(prev)).max(MIN_REPEAT_GAP)
    }
}

/// The `[[escalation]]` policies, each checked ([`EscalationPolicy::check`]) with its error
/// placed at the level (or the name) it is about.
pub(super) fn escalations(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
) -> Vec<EscalationPolicy> {
    let Some(tables) = tables(c, root, "escalation") else {
        return vec![];
    };
    let mut out: Vec<EscalationPolicy> = Vec::new();
    for t in tables {
        let Some(raw) = deserialize::<RawEscalation>(c, &Item::Table(t.clone()), "[[escalation]]")
        else {
            continue;
        };
        let name = raw.name.get_ref().clone();
        if out.iter().any(|p| p.name == name) {
            c.at(
                Some(raw.name.span()),
                format!("escalation `{name}` is defined twice"),
            );
            continue;
        }
        let spans: Vec<_> = raw.levels.get_ref().iter().map(Spanned::span).collect();
        let policy = EscalationPolicy {
            name,
            repeat: raw.repeat,
            ack_timeout_secs: raw.ack_timeout_secs,
            levels: raw
                .levels
                .into_inner()
                .into_iter()
                .map(|l| {
                    let l = l.into_inner();
                    Level {
                        groups: l.groups,
                        users: l.users,
                        after_secs: l.after_secs,
                    }
                })
                .collect(),
        };
        // A failed policy is kept so a route naming it is not also told it is missing; the
        // error fails the file anyway.
        if let Err(e) = policy.check(|g| groups.contains_key(g)) {
            let span = e.level().and_then(|l| spans.get(l - 1).cloned());
            c.at(Some(span.unwrap_or_else(|| raw.name.span())), e.to_string());
        }
        out.push(policy);
    }
    out
}
