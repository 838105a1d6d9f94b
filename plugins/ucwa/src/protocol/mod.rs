//! The UCWA wire format as pure functions over response bodies and headers: autodiscover,
//! the challenge and token, the application, presence, event channel bodies, inbound messages
//! and invitations, and the startMessaging request. Nothing here does I/O.

pub mod application;
pub mod batch;
pub mod discover;
pub mod events;
pub mod inbound;
pub mod messaging;

use serde_json::Value;

/// `_links.<rel>.href` of a resource (the first one when the rel is an array).
pub fn link<'a>(resource: &'a Value, rel: &str) -> Option<&'a str> {
    let l = resource.get("_links")?.get(rel)?;
    let l = if let Some(list) = l.as_array() {
        list.first()?
    } else {
        l
    };
    l.get("href")?.as_str()
}

/// The most of a server's free text (error `message`, failure `reason`) that is kept: it ends
/// up in delivery outcomes, health and logs, so a hostile server cannot make it large.
pub const MAX_SERVER_TEXT: usize = 512;

/// `text` cut to [`MAX_SERVER_TEXT`] bytes at a character boundary, marked with `…` if cut.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_SERVER_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_SERVER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The UCWA error body `{"code":..,"subcode":..,"message":..}`, leniently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub subcode: Option<String>,
    pub message: Option<String>,
}

/// Parses an error body; anything that is not one gives the empty body.
pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return ErrorBody::default();
    };
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(clip);
    ErrorBody {
        code: field("code"),
        subcode: field("subcode"),
        message: field("message"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_and_links_parse() {
        let e = parse_error_body(br#"{"code":"NotFound","subcode":"ApplicationNotFound","message":"An error occurred."}"#);
        assert_eq!(e.subcode.as_deref(), Some("ApplicationNotFound"));
        assert_eq!(parse_error_body(b"<html>401</html>"), ErrorBody::default());
        let v: Value = serde_json::from_str(
            r#"{"_links":{"self":{"href":"/a"},"many":[{"href":"/b"},{"href":"/c"}]}}"#,
        )
        .unwrap();
        assert_eq!(link(&v, "self"), Some("/a"));
        assert_eq!(link(&v, "many"), Some("/b"));
        assert_eq!(link(&v, "none"), None);
        let long = format!(r#"{{"code":"x","message":"{}"}}"#, "ä".repeat(10_000));
        let e = parse_error_body(long.as_bytes());
        let message = e.message.unwrap();
        assert!(message.len() <= MAX_SERVER_TEXT + 3 && message.ends_with('…'));
    }
}
