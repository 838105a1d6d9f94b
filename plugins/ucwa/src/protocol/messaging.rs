//! The startMessaging request: importance from severity, the IM text (plain, or HTML with the
//! subject in bold and everything escaped) as a percent-encoded `data:` URL.

use alertbridge_plugin_api::{Message, Severity};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::config::MessageFormat;

/// Characters escaped in data URLs: everything but `A-Z a-z 0-9 - . _ ~`.
const DATA: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// UCWA importance for a severity: high and critical are `Urgent`.
pub fn importance(severity: Severity) -> &'static str {
    if severity >= Severity::HIGH {
        "Urgent"
    } else {
        "Normal"
    }
}

/// The IM's content type and text. Plain: the body (the subject when the body is empty; the
/// subject always travels as the conversation subject). HTML: the subject in bold, then the
/// body with line breaks kept, both escaped.
pub fn content(message: &Message, format: MessageFormat) -> (&'static str, String) {
    match format {
        MessageFormat::Plain => {
            let text = if message.body.is_empty() {
                &message.subject
            } else {
                &message.body
            };
            ("text/plain", text.clone())
        }
        MessageFormat::Html => {
            let mut html = format!("<b>{}</b>", escape_html(&message.subject));
            if let Some(body) = message.html_body() {
                // The host rendered it from the operator's template, alert values escaped.
                html.push_str("<br/>");
                html.push_str(body);
            } else if !message.body.is_empty() {
                html.push_str("<br/>");
                html.push_str(
                    &escape_html(&message.body)
                        .replace("\r\n", "\n")
                        .replace('\n', "<br/>"),
                );
            }
            ("text/html", html)
        }
    }
}

/// Escapes `& < > " '` for HTML text.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `data:<type>;charset=utf-8,<percent-encoded text>`.
pub fn data_url(content_type: &str, text: &str) -> String {
    format!(
        "data:{content_type};charset=utf-8,{}",
        utf8_percent_encode(text, DATA)
    )
}

/// The body of `POST <startMessaging>`, carrying the first message when given.
pub fn start_messaging_request(
    to: &str,
    subject: &str,
    importance: &str,
    operation_id: &str,
    message_url: Option<&str>,
) -> Value {
    // Subjects are limited to 250 characters.
    let subject: String = subject.chars().take(250).collect();
    let mut body = json!({
        "importance": importance,
        "sessionContext": operation_id,
        "subject": subject,
        "telemetryId": null,
        "to": to,
        "operationId": operation_id,
    });
    if let Some(url) = message_url {
        body["_links"] = json!({ "message": { "href": url } });
    }
    body
}

/// `alice@contoso.com` for `sip:alice@contoso.com` or `alice@contoso.com`.
pub fn bare_user(user: &str) -> &str {
    let user = user.trim();
    match user.get(..4) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sip:") => &user[4..],
        _ => user,
    }
}

/// `sip:alice@contoso.com` for `alice@contoso.com` or `sip:alice@contoso.com`.
pub fn sip_uri(user: &str) -> String {
    format!("sip:{}", bare_user(user))
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::HTML_BODY_ATTRIBUTE;

    use super::*;

    fn message(subject: &str, body: &str) -> Message {
        Message {
            subject: subject.into(),
            body: body.into(),
            ..Message::default()
        }
    }

    #[test]
    fn plain_and_html_content() {
        let m = message("Disk <full> & \"db01\"", "/var at 98%\nnow");
        assert_eq!(
            content(&m, MessageFormat::Plain),
            ("text/plain", "/var at 98%\nnow".to_owned())
        );
        assert_eq!(
            content(&m, MessageFormat::Html).1,
            "<b>Disk &lt;full&gt; &amp; &quot;db01&quot;</b><br/>/var at 98%<br/>now"
        );
        assert_eq!(
            content(&message("only subject", ""), MessageFormat::Plain).1,
            "only subject"
        );
    }

    #[test]
    fn html_content_sends_the_hosts_rendered_html_as_it_is() {
        let mut m = message("Disk <full>", "<i>plain</i>");
        m.attributes.insert(
            HTML_BODY_ATTRIBUTE.into(),
            "<i>seq</i> &lt;script&gt;".into(),
        );
        assert_eq!(
            content(&m, MessageFormat::Html).1,
            "<b>Disk &lt;full&gt;</b><br/><i>seq</i> &lt;script&gt;"
        );
        assert_eq!(content(&m, MessageFormat::Plain).1, "<i>plain</i>");
    }

    #[test]
    fn data_url_is_percent_encoded_utf8() {
        assert_eq!(
            data_url("text/plain", "Hi Tosh\r\nü+1"),
            "data:text/plain;charset=utf-8,Hi%20Tosh%0D%0A%C3%BC%2B1"
        );
    }

    #[test]
    fn request_body_importance_and_sip_uris() {
        assert_eq!(importance(Severity::CRITICAL), "Urgent");
        assert_eq!(importance(Severity::NORMAL), "Normal");
        assert_eq!(sip_uri("alice@contoso.com"), "sip:alice@contoso.com");
        assert_eq!(sip_uri("SIP:bob@contoso.com"), "sip:bob@contoso.com");
        assert_eq!(bare_user(" sip:bob@contoso.com"), "bob@contoso.com");
        let body = start_messaging_request(
            "sip:a@c.com",
            &"s".repeat(300),
            "Normal",
            "op-1",
            Some("data:text/plain;charset=utf-8,x"),
        );
        assert_eq!(body["subject"].as_str().map(str::len), Some(250));
        assert_eq!(
            body["_links"]["message"]["href"],
            "data:text/plain;charset=utf-8,x"
        );
        assert_eq!(body["operationId"], "op-1");
        assert!(
            start_messaging_request("sip:a@c.com", "s", "Normal", "op-2", None)
                .get("_links")
                .is_none()
        );
    }
}
