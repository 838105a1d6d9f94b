//! The alert format, in its two forms: the `<alert xmlns="urn:alertbridge:alert:1">` XML
//! document ([`xml`]) and the JSON alert ([`json`]). One parser for every reader of them (the
//! pop3 source's alert mails, the webhook's `POST /api/v1/alerts`, `alertbridge route`), so the
//! same bytes give the same [`Alert`] or the same error everywhere.
//!
//! The specification is `docs/alert-format.md` in the repository: every field, its type, limits,
//! defaults and the errors. Pure functions over bytes; no I/O.
//!
//! Errors ([`FormatError`]) say what is wrong and where: `` `severity` at line 3 column 30:
//! unknown severity "urgent", expected info, low, normal, high or critical ``. Lines and columns
//! count from 1, columns in characters.

pub mod json;
pub mod xml;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::Alert;

/// Bounds on one document. The defaults suit a request body or a mail part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The document's size in bytes as received (before any decoding).
    pub max_bytes: usize,
    /// How deep elements (XML) may nest.
    pub max_depth: usize,
}

impl Limits {
    /// The default bounds: 1 MiB, 16 levels.
    pub const DEFAULT: Self = Self {
        max_bytes: 1 << 20,
        max_depth: 16,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a document cannot be taken. The `Display` text is what a sender gets (the webhook's 400
/// answer, a mail alert's `mail.problem` label, `alertbridge route`'s error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The document is not well-formed in its format.
    #[error("invalid {format} at line {line} column {column}: {message}")]
    Syntax {
        format: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    /// The document is well-formed but a field is missing or has a wrong value.
    #[error("`{field}` at line {line} column {column}: {message}")]
    Field {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The document is larger than [`Limits::max_bytes`].
    #[error("the document is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The document is well-formed XML (or empty) but not an alert document: its root is not
    /// `<alert>`/`<alerts>` in our namespace or none. A mail reader takes such a document as
    /// plain text; the webhook refuses it.
    #[error(transparent)]
    NotAnAlert(Box<FormatError>),
    /// The document as a whole cannot be taken.
    #[error("{0}")]
    Invalid(String),
}

impl FormatError {
    /// The line and column the error points at, if it points at one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            Self::Syntax { line, column, .. } | Self::Field { line, column, .. } => {
                Some((*line, *column))
            }
            Self::NotAnAlert(inner) => inner.position(),
            Self::TooLarge { .. } | Self::Invalid(_) => None,
        }
    }
}

/// Which form a document is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    Xml,
}

/// The form of a document by its first byte (after a byte order mark and whitespace): `<` is
/// XML, anything else JSON. UTF-16 without a mark (`<` next to a zero byte) is XML too.
pub fn sniff(bytes: &[u8]) -> Form {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if matches!(
        bytes,
        [0xFF, 0xFE, ..] | [0xFE, 0xFF, ..] | [0, b'<', ..] | [b'<', 0, ..]
    ) {
        return Form::Xml;
    }
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') => Form::Xml,
        _ => Form::Json,
    }
}

/// Parses a document in either form ([`sniff`]); `charset` is the transport's (HTTP or MIME)
/// charset parameter, which only XML heeds.
pub fn parse(
    bytes: &[u8],
    charset: Option<&str>,
    limits: &Limits,
) -> Result<Vec<Alert>, FormatError> {
    match sniff(bytes) {
        Form::Json => json::parse(bytes, limits),
        Form::Xml => xml::parse(bytes, charset, limits),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `bytes`.
pub fn line_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Parses an RFC 3339 timestamp (`2026-12-01T10:00:00Z`, `…+01:00`, fractions allowed) into
/// Unix milliseconds.
pub fn rfc3339_unix_ms(text: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// Unix milliseconds as RFC 3339 in UTC (`2026-12-01T10:00:00Z`), for reports.
pub fn unix_ms_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}

/// A name list entry (group, user) must say something.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        Err(format!("{what} names must not be empty"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\nÖlc\nd".as_bytes();
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(
            line_column(text, text.iter().position(|&b| b == b'c').unwrap()),
            (2, 3)
        );
        assert_eq!(line_column(text, 99), (3, 2));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_unix_ms("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(
            rfc3339_unix_ms("2026-12-01T10:00:00+01:00"),
            Ok(1_796_115_600_000)
        );
        assert!(
            rfc3339_unix_ms("2026-12-01 10:00")
                .unwrap_err()
                .contains("not an RFC 3339")
        );
        assert_eq!(unix_ms_rfc3339(1_796_119_200_000), "2026-12-01T10:00:00Z");
    }

    #[test]
    fn sniffing_the_form() {
        assert_eq!(sniff(b"  {\"subject\":\"x\"}"), Form::Json);
        assert_eq!(sniff(b"[]"), Form::Json);
        assert_eq!(sniff(b""), Form::Json);
        assert_eq!(sniff(b"\n<alert/>"), Form::Xml);
        assert_eq!(sniff(b"\xEF\xBB\xBF<?xml version=\"1.0\"?>"), Form::Xml);
        assert_eq!(sniff(b"\xFF\xFE<\0"), Form::Xml);
        assert_eq!(sniff(b"\0<\0?"), Form::Xml);
    }
}
