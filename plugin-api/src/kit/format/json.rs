//! The JSON alert (`docs/alert-format.md` §3): one object, or an array of them.
//!
//! Unknown fields are refused so that a misspelt `severty` is an error, not a silently normal
//! alert. Errors carry the field path (`[2].severity`) and the line and column. JSON is UTF-8
//! (RFC 8259); nesting is bounded by the format itself (an unknown field or a wrong type is
//! refused at its first byte).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de::Error as _};

use super::{FormatError, Limits};
use crate::{Alert, AlertStatus, Severity};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAlert {
    #[serde(deserialize_with = "non_empty")]
    subject: String,
    #[serde(default)]
    body: String,
    #[serde(default, deserialize_with = "severity")]
    severity: Severity,
    #[serde(default)]
    recipients: Recipients,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "dedup_key")]
    dedup_key: Option<String>,
    #[serde(default, deserialize_with = "expires")]
    expires: Option<i64>,
    #[serde(default, deserialize_with = "status")]
    status: AlertStatus,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipients {
    #[serde(default, deserialize_with = "groups")]
    groups: Vec<String>,
    #[serde(default, deserialize_with = "users")]
    users: Vec<String>,
}

fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        Err(D::Error::custom("must not be empty"))
    } else {
        Ok(s)
    }
}

/// Through `Severity`'s `FromStr`, after the whole string is read (so the error points just
/// past the value, like every other field's).
fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    String::deserialize(d)?.parse().map_err(D::Error::custom)
}

fn names<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    for name in &names {
        super::check_name(what, name).map_err(D::Error::custom)?;
    }
    Ok(names)
}

fn groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    names(d, "group")
}

fn users<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    names(d, "user")
}

fn dedup_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|k| !k.is_empty()))
}

/// `"firing"` or `"resolved"` through `AlertStatus`'s `FromStr`; `null` is firing.
fn status<'de, D: Deserializer<'de>>(d: D) -> Result<AlertStatus, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) => text.parse().map_err(D::Error::custom),
        None => Ok(AlertStatus::Firing),
    }
}

fn expires<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<String>::deserialize(d)? {
        Some(text) => super::rfc3339_unix_ms(&text)
            .map(Some)
            .map_err(D::Error::custom),
        None => Ok(None),
    }
}

impl From<JsonAlert> for Alert {
    fn from(j: JsonAlert) -> Self {
        Alert {
            subject: j.subject,
            body: j.body,
            severity: j.severity,
            groups: j.recipients.groups,
            users: j.recipients.users,
            labels: j.labels,
            dedup_key: j.dedup_key,
            expires_unix_ms: j.expires,
            attributes: BTreeMap::new(),
        }
        .with_status(j.status)
    }
}

/// Parses a document holding one alert object or an array of them.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Vec<Alert>, FormatError> {
    if bytes.len() > limits.max_bytes {
        return Err(FormatError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let first = bytes.iter().position(|b| !b.is_ascii_whitespace());
    match first.map(|i| bytes[i]) {
        Some(b'[') => {
            let alerts: Vec<JsonAlert> = deserialize(bytes)?;
            if alerts.is_empty() {
                return Err(FormatError::Invalid("the array holds no alert".into()));
            }
            Ok(alerts.into_iter().map(Alert::from).collect())
        }
        Some(b'{') => Ok(vec![deserialize::<JsonAlert>(bytes)?.into()]),
        Some(_) => {
            let (line, column) = super::line_column(bytes, first.unwrap_or(0));
            let message = "expected an alert object or an array of them".into();
            Err(FormatError::Syntax {
                format: "JSON",
                line,
                column,
                message,
            })
        }
        None => Err(FormatError::Invalid("the body is empty".into())),
    }
}

/// Refuses a document that is not a JSON object before serde would read it as a tuple.
pub fn expect_object(bytes: &[u8], what: &str) -> Result<(), FormatError> {
    match bytes.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) if bytes[i] == b'{' => Ok(()),
        Some(i) => {
            let (line, column) = super::line_column(bytes, i);
            Err(FormatError::Syntax {
                format: "JSON",
                line,
                column,
                message: format!("expected {what}"),
            })
        }
        None => Err(FormatError::Invalid("the body is empty".into())),
    }
}

/// Deserializes a whole JSON document into `T`, with errors that carry the field path and the
/// position (for other JSON payloads too, e.g. the webhook's Alertmanager one).
pub fn deserialize<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, FormatError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        json_error(bytes, e.into_inner(), Some(field))
    })?;
    de.end().map_err(|e| json_error(bytes, e, None))?;
    Ok(value)
}

fn json_error(bytes: &[u8], e: serde_json::Error, field: Option<String>) -> FormatError {
    let (mut line, mut column) = (e.line(), e.column());
    // serde_json puts an error at a line break in column 0 of the next line; ours count from 1,
    // so such an error is placed on the line break itself.
    if column == 0
        && let Some(nl) = bytes
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(line.saturating_sub(2))
            .map(|(i, _)| i)
    {
        (line, column) = super::line_column(bytes, nl);
    }
    let text = e.to_string();
    let message = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(m, _)| m)
        .to_owned();
    match (e.classify(), field) {
        (serde_json::error::Category::Data, Some(field)) => FormatError::Field {
            field,
            line,
            column,
            message,
        },
        _ => FormatError::Syntax {
            format: "JSON",
            line,
            column,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Vec<Alert>, FormatError> {
        super::parse(bytes, &Limits::DEFAULT)
    }

    #[test]
    fn the_spec_example_parses_field_by_field() {
        let body =
            br#"{"subject": "Disk full on db01", "body": "/var is at 98%", "severity": "critical",
 "recipients": {"groups": ["ops"], "users": ["sip:carol@contoso.com"]},
 "labels": {"host": "db01"}, "dedup_key": "db01-disk", "expires": "2026-12-01T10:00:00Z"}"#;
        let alerts = parse(body).expect("valid");
        let expected = Alert {
            subject: "Disk full on db01".into(),
            body: "/var is at 98%".into(),
            severity: Severity::CRITICAL,
            groups: vec!["ops".into()],
            users: vec!["sip:carol@contoso.com".into()],
            labels: [("host".to_owned(), "db01".to_owned())].into(),
            dedup_key: Some("db01-disk".into()),
            expires_unix_ms: Some(1_796_119_200_000),
            attributes: BTreeMap::new(),
        };
        assert_eq!(alerts, vec![expected]);
    }

    #[test]
    fn arrays_and_defaults() {
        let alerts = parse(b" [{\"subject\":\"a\"},{\"subject\":\"b\",\"severity\":\"Low\"}]\n")
            .expect("valid");
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            (alerts[0].severity, alerts[1].severity),
            (Severity::NORMAL, Severity::LOW)
        );
        assert_eq!(alerts[0].dedup_key, None);
        let a = parse(b"{\"subject\":\"a\",\"dedup_key\":\"\",\"expires\":null}").unwrap();
        assert_eq!(
            (a[0].dedup_key.as_deref(), a[0].expires_unix_ms),
            (None, None)
        );
    }

    #[test]
    fn status_resolved_or_firing() {
        let a = parse(b"{\"subject\":\"a\",\"dedup_key\":\"k\",\"status\":\"Resolved\"}").unwrap();
        assert_eq!(a[0].status(), AlertStatus::Resolved);
        assert_eq!(a[0].attributes["status"], "resolved");
        for body in [
            &b"{\"subject\":\"a\",\"status\":\"firing\"}"[..],
            b"{\"subject\":\"a\",\"status\":null}",
            b"{\"subject\":\"a\"}",
        ] {
            let a = parse(body).unwrap();
            assert_eq!(a[0].status(), AlertStatus::Firing);
            assert!(a[0].attributes.is_empty());
        }
        assert_eq!(
            err("{\"subject\":\"a\",\"status\":\"ok\"}"),
            "`status` at line 1 column 29: unknown status \"ok\", expected firing or resolved"
        );
    }

    fn err(body: &str) -> String {
        parse(body.as_bytes()).expect_err(body).to_string()
    }

    #[test]
    fn errors_name_field_line_and_column() {
        assert_eq!(
            err("[{\"subject\":\"a\"},\n {\"subject\":\"b\",\"severity\":\"urgent\"}]"),
            "`[1].severity` at line 2 column 36: unknown severity \"urgent\", expected info, low, normal, high or critical"
        );
        assert_eq!(
            err("{\"subject\":\"a\",\"severity\":3}"),
            "`severity` at line 1 column 27: invalid type: integer `3`, expected a string"
        );
        assert_eq!(
            err("{\"body\":\"x\"}"),
            "`.` at line 1 column 12: missing field `subject`"
        );
        assert_eq!(
            err("{\"subject\":\"  \"}"),
            "`subject` at line 1 column 16: must not be empty"
        );
        let e = err("{\"subject\":\"a\",\"severty\":\"low\"}");
        assert!(
            e.starts_with("`severty` at line 1 column 24: unknown field `severty`"),
            "{e}"
        );
        let e = err("{\"subject\":\"a\",\"expires\":\"tomorrow\"}");
        assert!(
            e.starts_with("`expires` at line 1 column 36: \"tomorrow\" is not an RFC 3339"),
            "{e}"
        );
        assert_eq!(
            err("{\"subject\":\"a\",\"labels\":{\"x\":1}}"),
            "`labels.x` at line 1 column 30: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            err("{\"subject\":\"a\",\"recipients\":{\"groups\":[\"ops\",\" \"]}}"),
            "`recipients.groups` at line 1 column 50: group names must not be empty"
        );
        assert_eq!(
            err("{\"subject\":\"a\",\"recipients\":{\"users\":[\"\"]}}"),
            "`recipients.users` at line 1 column 42: user names must not be empty"
        );
        assert_eq!(
            err("{\"subject\": \"a\",\n\"body\": }"),
            "invalid JSON at line 2 column 9: expected value"
        );
        assert_eq!(
            err("{\"subject\":\"a\"} x"),
            "invalid JSON at line 1 column 17: trailing characters"
        );
        assert_eq!(
            err("{\"subject\":\"a\""),
            "invalid JSON at line 1 column 14: EOF while parsing an object"
        );
        assert_eq!(
            err("\n  subject=a"),
            "invalid JSON at line 2 column 3: expected an alert object or an array of them"
        );
        assert_eq!(err("[]"), "the array holds no alert");
        let small = Limits {
            max_bytes: 10,
            ..Limits::DEFAULT
        };
        assert_eq!(
            super::parse(b"{\"subject\":\"a\"}", &small).unwrap_err(),
            FormatError::TooLarge { limit: 10 }
        );
    }

    /// Found by fuzzing (fuzz target `webhook_json`): serde_json places an error at a line
    /// break in column 0 of the next line, and the 400 answer said "column 0" though lines and
    /// columns count from 1. The error is now placed on the line break itself.
    #[test]
    fn an_error_at_a_line_break_has_a_column_from_1() {
        assert_eq!(
            err("{\"subject\":\"a\nb\"}"),
            "invalid JSON at line 1 column 14: control character (\\u0000-\\u001F) found while parsing a string"
        );
        assert_eq!(
            err("{\"subject\":\"a\"\n"),
            "invalid JSON at line 1 column 15: EOF while parsing an object"
        );
        assert_eq!(err("  "), "the body is empty");
    }
}
