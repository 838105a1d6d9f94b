//! A silence's matchers: the keys of a route's `match` (`source`, `severity`, `labels`,
//! `labels_regex`, `subject`, `body`), checked and bounded, compiled to the router's
//! [`Matcher`] so that a silence matches exactly what a route with the same `match` would.

use std::collections::BTreeMap;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Deserializer, Serialize};

use crate::router::{Matcher, parse_severity_condition};

/// The most sources or labels one silence names.
pub const MAX_ENTRIES: usize = 32;
/// The most label patterns one silence names.
pub const MAX_PATTERNS: usize = 8;
/// The most bytes all the names, values and patterns of one silence take together.
pub const MAX_TOTAL_BYTES: usize = 8 * 1024;
/// The longest label name or source name.
pub const MAX_NAME_BYTES: usize = 128;
/// The longest label value or pattern.
pub const MAX_VALUE_BYTES: usize = 1024;
/// What one compiled pattern, and its matching cache, may take (the regex crate's own bounds;
/// it matches in linear time). A pattern with Unicode classes (`\w+`, `\d{2,8}`, `(?i)`)
/// needs well over 64 KiB; [`super::MAX_LIVE_PATTERNS`] bounds how many are kept.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The matchers as given and stored: the same shape as a route's `match` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSpec {
    /// One source name or a list of them.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub source: Vec<String>,
    /// `critical`, `>=high`, `<normal`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Label name → the exact value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Label name → a pattern its value must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_regex: BTreeMap<String, String>,
    /// A pattern the subject must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A pattern the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why matchers are refused: the key (`matchers.labels_regex.host`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct MatchersError {
    pub key: String,
    pub why: String,
}

fn refuse(key: impl Into<String>, why: impl Into<String>) -> MatchersError {
    MatchersError {
        key: key.into(),
        why: why.into(),
    }
}

/// A name (source or label): non-empty, bounded, printable, no spaces.
fn check_name(key: &str, name: &str) -> Result<(), MatchersError> {
    if name.is_empty() {
        return Err(refuse(key, "a name is empty"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(
            key,
            format!("a name is longer than {MAX_NAME_BYTES} bytes"),
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(refuse(key, "a name contains a control or space character"));
    }
    Ok(())
}

fn check_value(key: &str, value: &str) -> Result<(), MatchersError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(refuse(key, format!("longer than {MAX_VALUE_BYTES} bytes")));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(refuse(key, "contains a control character"));
    }
    Ok(())
}

fn pattern(key: &str, text: &str) -> Result<Regex, MatchersError> {
    check_value(key, text)?;
    RegexBuilder::new(text)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            // The regex crate's message quotes the pattern over several lines: keep its gist.
            let why = e.to_string();
            let gist = why
                .lines()
                .rev()
                .find(|l| l.starts_with("error:"))
                .unwrap_or(why.lines().next().unwrap_or("invalid"))
                .trim_start_matches("error: ")
                .to_owned();
            refuse(key, format!("invalid regex: {gist}"))
        })
}

impl MatcherSpec {
    /// How many patterns (label patterns, subject, body) the matchers hold.
    pub fn patterns(&self) -> usize {
        self.labels_regex.len()
            + usize::from(self.subject.is_some())
            + usize::from(self.body.is_some())
    }

    /// Checks every entry and compiles them. At least one condition is required, so that a
    /// silence never stops every alert by mistake (`severity = ">=info"` says "all" on purpose).
    pub fn compile(&self) -> Result<Matcher, MatchersError> {
        let empty = self.source.is_empty()
            && self.severity.is_none()
            && self.labels.is_empty()
            && self.labels_regex.is_empty()
            && self.subject.is_none()
            && self.body.is_none();
        if empty {
            return Err(refuse(
                "matchers",
                "no condition: name at least one of source, severity, labels, labels_regex, \
                 subject, body (severity \">=info\" matches every alert)",
            ));
        }
        for (key, n, max) in [
            ("matchers.source", self.source.len(), MAX_ENTRIES),
            ("matchers.labels", self.labels.len(), MAX_ENTRIES),
            (
                "matchers.labels_regex",
                self.labels_regex.len(),
                MAX_PATTERNS,
            ),
        ] {
            if n > max {
                return Err(refuse(key, format!("{n} entries; at most {max}")));
            }
        }
        for s in &self.source {
            check_name("matchers.source", s)?;
        }
        let severity = match &self.severity {
            None => None,
            Some(text) => {
                check_value("matchers.severity", text)?;
                Some(parse_severity_condition(text).map_err(|e| refuse("matchers.severity", e))?)
            }
        };
        for (k, v) in &self.labels {
            check_name("matchers.labels", k)?;
            check_value(&format!("matchers.labels.{k}"), v)?;
        }
        let mut labels_regex = Vec::with_capacity(self.labels_regex.len());
        for (k, v) in &self.labels_regex {
            check_name("matchers.labels_regex", k)?;
            labels_regex.push((
                k.clone(),
                pattern(&format!("matchers.labels_regex.{k}"), v)?,
            ));
        }
        let subject = self
            .subject
            .as_deref()
            .map(|p| pattern("matchers.subject", p))
            .transpose()?;
        let body = self
            .body
            .as_deref()
            .map(|p| pattern("matchers.body", p))
            .transpose()?;
        let total: usize = self.source.iter().map(String::len).sum::<usize>()
            + self.severity.as_ref().map_or(0, String::len)
            + self
                .labels
                .iter()
                .chain(&self.labels_regex)
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.subject.as_ref().map_or(0, String::len)
            + self.body.as_ref().map_or(0, String::len);
        if total > MAX_TOTAL_BYTES {
            return Err(refuse(
                "matchers",
                format!("{total} bytes in all; at most {MAX_TOTAL_BYTES}"),
            ));
        }
        Ok(Matcher {
            sources: self.source.clone(),
            severity,
            labels: self.labels.clone(),
            labels_regex,
            subject,
            body,
        })
    }
}
