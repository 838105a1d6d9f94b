//! The request to create a silence, checked and bounded into a [`Silence`] (without its id),
//! and the pure duration parser (`2h`, `1h30m`, `90m`) the API and replies share.

use alertbridge_plugin_api::kit::format::rfc3339_unix_ms;
use serde::Deserialize;

use super::{MatcherSpec, MatchersError, Silence};
use crate::router::Matcher;

/// The longest author.
pub const MAX_AUTHOR_BYTES: usize = 128;
/// The longest comment.
pub const MAX_COMMENT_BYTES: usize = 2048;
/// The longest a silence may last, and how far ahead it may start: a year.
pub const MAX_SPAN_MS: i64 = 366 * 24 * 3600 * 1000;
/// The longest timestamp or duration text looked at.
const MAX_TIME_TEXT: usize = 64;

/// `POST /api/v1/silences`: matchers, a start (default now), an end or a duration, who and why.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: MatcherSpec,
    /// RFC 3339; now when left out (a start in the past counts as now).
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339; or give `duration`.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// From the start: `2h`, `1h30m`, `90m`, `45s`, `1d`, `1w`.
    #[serde(default)]
    pub duration: Option<String>,
    pub author: String,
    pub comment: String,
}

/// Why a request is refused: the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct SpecError {
    pub key: String,
    pub why: String,
}

impl From<MatchersError> for SpecError {
    fn from(e: MatchersError) -> Self {
        Self {
            key: e.key,
            why: e.why,
        }
    }
}

fn refuse(key: &str, why: impl Into<String>) -> SpecError {
    SpecError {
        key: key.to_owned(),
        why: why.into(),
    }
}

/// A short, printable, bounded text: the author or the comment.
fn check_text(key: &str, text: &str, max: usize, newlines: bool) -> Result<String, SpecError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(refuse(key, "required (who is silencing, and why)"));
    }
    if text.len() > max {
        return Err(refuse(key, format!("longer than {max} bytes")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !(newlines && (c == '\n' || c == '\t')))
    {
        return Err(refuse(key, "contains a control character"));
    }
    Ok(text.to_owned())
}

fn timestamp(key: &str, text: &str) -> Result<i64, SpecError> {
    if text.len() > MAX_TIME_TEXT {
        return Err(refuse(key, "not an RFC 3339 timestamp (too long)"));
    }
    rfc3339_unix_ms(text).map_err(|e| refuse(key, e))
}

/// Parses `2h`, `1h30m`, `90m`, `45s`, `1d`, `1w` (whole numbers, units s m h d w, no spaces
/// needed) into milliseconds; at most [`MAX_SPAN_MS`], more than zero.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration: say e.g. 2h, 90m or 1h30m".into());
    }
    if t.len() > MAX_TIME_TEXT {
        return Err("duration too long".into());
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in t.chars().filter(|c| !c.is_whitespace()) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_ms: i64 = match c.to_ascii_lowercase() {
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 604_800_000,
            _ => {
                return Err(format!(
                    "{t:?} is not a duration: units are s, m, h, d, w (e.g. 2h, 1h30m)"
                ));
            }
        };
        let n: i64 = digits
            .parse()
            .map_err(|_| format!("{t:?} is not a duration: a number goes before each unit"))?;
        digits.clear();
        total = n
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .filter(|&ms| ms <= MAX_SPAN_MS)
            .ok_or_else(|| format!("{t:?} is longer than a year"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "{t:?} is not a duration: a unit (s, m, h, d, w) goes after each number"
        ));
    }
    if total == 0 {
        return Err(format!("{t:?} is zero"));
    }
    Ok(total)
}

impl NewSilence {
    /// Checks the request at `now` (Unix ms): the matchers compile, the times are sensible
    /// (an end or a duration, not both; the end after the start and after now; at most a year
    /// long and starting within a year), author and comment given and bounded. The silence has
    /// id 0 until the store gives it one; the matcher is its matchers compiled.
    pub fn check(&self, now: i64) -> Result<(Silence, Matcher), SpecError> {
        let matcher = self.matchers.compile()?;
        let starts_ms = match &self.starts_at {
            None => now,
            Some(t) => timestamp("starts_at", t)?.max(now),
        };
        if starts_ms - now > MAX_SPAN_MS {
            return Err(refuse("starts_at", "more than a year ahead"));
        }
        let ends_ms = match (&self.ends_at, &self.duration) {
            (Some(_), Some(_)) => {
                return Err(refuse("duration", "give ends_at or duration, not both"));
            }
            (None, None) => {
                return Err(refuse(
                    "ends_at",
                    "required: give ends_at (RFC 3339) or duration (e.g. 2h)",
                ));
            }
            (Some(t), None) => timestamp("ends_at", t)?,
            (None, Some(d)) => starts_ms + parse_duration(d).map_err(|e| refuse("duration", e))?,
        };
        if ends_ms <= starts_ms {
            return Err(refuse(
                "ends_at",
                if ends_ms <= now {
                    "already past: a silence must end in the future"
                } else {
                    "not after starts_at"
                },
            ));
        }
        if ends_ms - starts_ms > MAX_SPAN_MS {
            return Err(refuse("ends_at", "the silence would last more than a year"));
        }
        let silence = Silence {
            id: 0,
            matchers: self.matchers.clone(),
            starts_ms,
            ends_ms,
            author: check_text("author", &self.author, MAX_AUTHOR_BYTES, false)?,
            comment: check_text("comment", &self.comment, MAX_COMMENT_BYTES, true)?,
            created_ms: now,
            expired_ms: None,
        };
        Ok((silence, matcher))
    }
}
