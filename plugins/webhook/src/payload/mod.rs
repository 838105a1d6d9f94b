//! Request bodies → alerts: pure functions over bytes, one module per format, and the error
//! that says precisely what is wrong (which field, which line and column).
//!
//! - [`json`]: our alert as JSON, one object or an array (DESIGN §5).
//! - [`xml`]: our `<alert xmlns="urn:alertbridge:alert:1">` document (or several in `<alerts>`).
//! - [`alertmanager`]: the Prometheus Alertmanager webhook payload version 4, and Grafana's
//!   superset of it (version 1).

pub mod alertmanager;
pub mod json;
pub mod xml;

use alertbridge_plugin_api::Severity;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Why a body cannot be taken. The `Display` text is what a client gets in the 400 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The body is not well-formed in its format.
    #[error("invalid {format} at line {line} column {column}: {message}")]
    Syntax {
        format: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    /// The body is well-formed but a field is missing or has a wrong value.
    #[error("`{field}` at line {line} column {column}: {message}")]
    Field {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The body as a whole cannot be taken.
    #[error("{0}")]
    Invalid(String),
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

/// Parses a severity name as our formats write it (`info` … `critical`).
pub fn severity(name: &str) -> Result<Severity, String> {
    Severity::from_name(name).ok_or_else(|| {
        format!("unknown severity {name:?}, expected info, low, normal, high or critical")
    })
}

/// Parses an RFC 3339 timestamp into Unix milliseconds.
pub fn rfc3339_unix_ms(text: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp ({e})"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| format!("{text:?} is out of range"))
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
    }
}
