//! Mail → alert: an `<alert>` document in the body or in an `application/xml` / `text/xml` part
//! is read field by field; any other mail becomes an alert from its subject and best text body.
//! Sender, subject, Message-ID, date and chosen headers become `mail.*` labels for routes;
//! only this module sets `mail.*` labels: a document cannot set or override them.
//!
//! The document is read by the kit's alert format parser ([`format::xml`], specified in
//! `docs/alert-format.md`), the same one the webhook uses: it is decoded with the MIME part's
//! charset, or, when the part names none, with its byte-order mark or the `encoding` of its XML
//! declaration (ISO-8859-1, windows-1252, UTF-16, …); bytes not valid in that encoding, a DTD,
//! an unknown element or a bad value make it no alert document (the error, with its line and
//! column, goes into `mail.problem`), and an XML document of another kind is just text.
//!
//! Nothing here fails: a mail that cannot be read well still becomes an alert, carrying what
//! could be read and a `mail.problem` label saying what went wrong.

use std::borrow::Cow;

use alertbridge_plugin_api::{
    Alert,
    kit::format::{self, FormatError, Limits},
};
use mail_parser::{
    Encoding, Message, MessageParser, MessagePart, MimeHeaders as _, PartType,
    decoders::{base64::base64_decode, quoted_printable::quoted_printable_decode},
};

use crate::html::html_to_text;

/// Alert bodies are cut after this many characters (an IM is no place for a whole mail).
pub const MAX_BODY_CHARS: usize = 16 * 1024;

/// Bounds on an alert document in a mail (the format's default nesting depth).
pub const XML_LIMITS: Limits = Limits {
    max_bytes: 256 << 10,
    ..Limits::DEFAULT
};

/// The label prefix this source reserves: labels under it come from the mail itself, never
/// from a document inside it.
pub const RESERVED_LABEL_PREFIX: &str = "mail.";

/// How mails are mapped.
#[derive(Debug, Clone, Default)]
pub struct MailOptions {
    /// Headers copied into labels as `mail.header.<lowercase name>`.
    pub label_headers: Vec<String>,
}

/// The alert made from one mail, and what the source needs to know about the mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailAlert {
    pub alert: Alert,
    /// The From address, if the mail has exactly one `From:` header with exactly one address.
    pub sender: Option<String>,
    pub message_id: Option<String>,
    /// The values of the `Authentication-Results` headers, topmost first.
    pub auth_results: Vec<String>,
    /// What went wrong reading the mail (also in the `mail.problem` label).
    pub problem: Option<String>,
}

/// Builds the alert for a raw RFC 5322 message. Even a panic in the MIME parser on some
/// hostile input only yields an alert saying so: a mail must never stop the mailbox.
pub fn alert_from_mail(raw: &[u8], options: &MailOptions) -> MailAlert {
    std::panic::catch_unwind(|| build(raw, options)).unwrap_or_else(|_| {
        let mut m = unreadable(raw);
        let problem = "the MIME parser failed on this mail".to_owned();
        m.alert
            .labels
            .insert("mail.problem".into(), problem.clone());
        m.problem = Some(problem);
        m
    })
}

fn build(raw: &[u8], options: &MailOptions) -> MailAlert {
    let Some(message) = MessageParser::default().parse(raw) else {
        return unreadable(raw);
    };
    let subject = message.subject().map(clean_line).filter(|s| !s.is_empty());
    let sender = single_sender(&message);
    let message_id = message.message_id().map(str::to_owned);
    let auth_results: Vec<String> = message
        .headers_raw()
        .filter(|(name, _)| name.eq_ignore_ascii_case("Authentication-Results"))
        .map(|(_, value)| value.to_owned())
        .collect();

    let mut problem = None;
    let mut alert = None;
    let candidates = xml_candidates(&message);
    for candidate in &candidates {
        match format::xml::parse(&candidate.bytes, candidate.charset, &XML_LIMITS) {
            Ok(mut docs) if docs.len() == 1 => {
                alert = docs.pop().map(from_xml);
                break;
            }
            Ok(docs) => {
                problem.get_or_insert_with(|| {
                    format!(
                        "the document holds {} alerts; a mail carries one",
                        docs.len()
                    )
                });
            }
            // Some other XML document: just text.
            Err(FormatError::NotAnAlert(_)) => {}
            Err(e) => {
                problem.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let mut alert = alert.unwrap_or_else(|| {
        let mut a = Alert::new(subject.clone().unwrap_or_else(|| "(no subject)".to_owned()));
        // Without a body part (broken MIME, only an XML part that is no alert) the first
        // text-like part stands in.
        let body = best_text(&message).or_else(|| candidates.first().map(|c| c.text.clone()));
        a.body = body.map(|b| clean_body(&b)).unwrap_or_default();
        a
    });

    let mut labels = std::mem::take(&mut alert.labels);
    // `mail.*` describes the real message: a document's own labels there are dropped.
    let forged: Vec<String> = labels
        .keys()
        .filter(|k| is_reserved_label(k))
        .cloned()
        .collect();
    for k in &forged {
        labels.remove(k);
    }
    if !forged.is_empty() {
        tracing::warn!(labels = ?forged, sender = ?sender, "Alert document set labels reserved for the mail source; dropped.");
    }
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            labels.insert(k.to_owned(), v);
        }
    };
    put("mail.from", sender.clone());
    put(
        "mail.from_name",
        message
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .map(clean_line),
    );
    put("mail.subject", subject);
    put("mail.message_id", message_id.clone());
    put("mail.date", message.date().map(|d| d.to_rfc3339()));
    for name in &options.label_headers {
        let value = message
            .header(name.as_str())
            .and_then(|v| v.as_text())
            .or_else(|| message.header_raw(name.as_str()));
        put(
            &format!("mail.header.{}", name.to_ascii_lowercase()),
            value.map(clean_line),
        );
    }
    put("mail.problem", problem.clone());
    alert.labels = labels;
    MailAlert {
        alert,
        sender,
        message_id,
        auth_results,
        problem,
    }
}

/// True if and only if `name` is under [`RESERVED_LABEL_PREFIX`] (in any letter case).
pub fn is_reserved_label(name: &str) -> bool {
    name.get(..RESERVED_LABEL_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_LABEL_PREFIX))
}

/// The one From address: none when the mail has several `From:` headers or several addresses
/// in it (which one would a filter check, which one would the reader see?).
fn single_sender(message: &Message<'_>) -> Option<String> {
    let froms = message
        .headers()
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case("From"))
        .count();
    if froms != 1 {
        return None;
    }
    let from = message.from()?;
    if from.iter().count() != 1 {
        return None;
    }
    from.first()?
        .address()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
}

/// The first text body, HTML converted; else the first text part of any kind.
fn best_text<'a>(message: &'a Message<'a>) -> Option<Cow<'a, str>> {
    let part = message
        .text_part(0)
        .or_else(|| message.parts.iter().find(|p| p.is_text()))?;
    match &part.body {
        PartType::Text(t) => Some(t.clone()),
        PartType::Html(h) => Some(Cow::Owned(html_to_text(h))),
        _ => None,
    }
}

/// A mail part that may hold an alert document: its bytes (transfer encoding undone), its MIME
/// charset, and its text as the MIME parser decoded it (shown when it is no alert).
struct XmlCandidate<'a> {
    bytes: Cow<'a, [u8]>,
    charset: Option<&'a str>,
    text: Cow<'a, str>,
}

/// Parts that may hold an alert document: XML parts first, then the text body if it looks like
/// XML.
fn xml_candidates<'a>(message: &'a Message<'a>) -> Vec<XmlCandidate<'a>> {
    let mut out = Vec::new();
    for part in &message.parts {
        if !(part.is_content_type("application", "xml") || part.is_content_type("text", "xml")) {
            continue;
        }
        let text = match &part.body {
            PartType::Text(t) | PartType::Html(t) => t.clone(),
            PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b),
            _ => continue,
        };
        out.push(match part_bytes(message, part) {
            Some(bytes) => XmlCandidate {
                bytes,
                charset: charset(part),
                text,
            },
            None => as_decoded(text),
        });
    }
    if let Some(body) = best_text(message).filter(|b| format::xml::looks_like_xml(b)) {
        let part = message.text_part(0).filter(|p| !p.is_text_html());
        out.push(
            match part.and_then(|p| Some((p, part_bytes(message, p)?))) {
                Some((p, bytes)) => XmlCandidate {
                    bytes,
                    charset: charset(p),
                    text: body,
                },
                None => as_decoded(body),
            },
        );
    }
    out
}

/// A candidate from text the MIME parser already decoded (broken transfer encoding, HTML).
fn as_decoded(text: Cow<'_, str>) -> XmlCandidate<'_> {
    XmlCandidate {
        bytes: match &text {
            Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
            Cow::Owned(t) => Cow::Owned(t.clone().into_bytes()),
        },
        charset: Some("utf-8"),
        text,
    }
}

fn charset<'a>(part: &'a MessagePart<'a>) -> Option<&'a str> {
    part.content_type()
        .and_then(|c| c.attribute("charset"))
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// A part's body as sent, with its transfer encoding undone.
fn part_bytes<'a>(message: &'a Message<'a>, part: &MessagePart<'_>) -> Option<Cow<'a, [u8]>> {
    let raw = message
        .raw_message
        .get(part.offset_body as usize..part.offset_end as usize)?;
    match part.encoding {
        Encoding::None => Some(Cow::Borrowed(raw)),
        Encoding::Base64 => base64_decode(raw).map(Cow::Owned),
        Encoding::QuotedPrintable => quoted_printable_decode(raw).map(Cow::Owned),
    }
}

/// The alert of a document, its subject on one line and its body cleaned like a mail's.
fn from_xml(doc: Alert) -> Alert {
    Alert {
        subject: clean_line(&doc.subject),
        body: clean_body(&doc.body),
        ..doc
    }
}

/// A mail without even a header block: the alert says so and shows its start.
fn unreadable(raw: &[u8]) -> MailAlert {
    let problem = "not an RFC 5322 message".to_owned();
    let mut alert = Alert::new("(unreadable mail)");
    alert.body = clean_body(&String::from_utf8_lossy(&raw[..raw.len().min(4096)]));
    alert.labels.insert("mail.problem".into(), problem.clone());
    MailAlert {
        alert,
        sender: None,
        message_id: None,
        auth_results: Vec::new(),
        problem: Some(problem),
    }
}

/// One line: whitespace runs (folding, tabs) become one space.
fn clean_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A body: LF line ends, no trailing spaces, at most two blank lines in a row, trimmed, cut at
/// [`MAX_BODY_CHARS`].
fn clean_body(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_BODY_CHARS));
    let mut blanks = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blanks += 1;
            if blanks > 1 {
                continue;
            }
        } else {
            blanks = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim();
    match trimmed.char_indices().nth(MAX_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning() {
        assert_eq!(clean_line(" a\r\n\tb  c "), "a b c");
        assert_eq!(clean_body("\r\n a  \r\n\r\n\r\n\r\nb\r\n"), "a\n\nb");
        let long = "x".repeat(MAX_BODY_CHARS + 5);
        assert_eq!(clean_body(&long).chars().count(), MAX_BODY_CHARS + 1);
    }

    #[test]
    fn empty_input_is_unreadable_not_a_crash() {
        let m = alert_from_mail(b"", &MailOptions::default());
        assert_eq!(m.alert.subject, "(unreadable mail)");
        assert!(m.problem.is_some());
    }

    #[test]
    fn xml_problem_falls_back_to_text_with_a_label() {
        let raw = b"From: a@b.test\r\nSubject: s\r\nContent-Type: application/xml\r\n\r\n<alert><subject>x</subject><severity>bad</severity></alert>\r\n";
        let m = alert_from_mail(raw, &MailOptions::default());
        assert_eq!(m.alert.subject, "s");
        assert_eq!(
            m.alert.labels["mail.problem"],
            "`severity` at line 1 column 52: unknown severity \"bad\", expected info, low, normal, high or critical"
        );
        assert_eq!(m.sender.as_deref(), Some("a@b.test"));
    }

    fn xml_mail(content_type: &str, cte: &str, body: &[u8]) -> Vec<u8> {
        let mut raw = format!(
            "From: a@b.test\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n{cte}\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    fn koeln(decl: &str, extra: &[u8]) -> Vec<u8> {
        let mut doc = format!("<?xml version=\"1.0\" encoding=\"{decl}\"?>\r\n<alert xmlns=\"urn:alertbridge:alert:1\"><subject>K").into_bytes();
        doc.push(0xf6); // ö in ISO-8859-1 and windows-1252
        doc.extend_from_slice(b"ln");
        doc.extend_from_slice(extra);
        doc.extend_from_slice(b"</subject></alert>\r\n");
        doc
    }

    #[test]
    fn xml_honours_its_declaration_when_mime_names_no_charset() {
        let o = MailOptions::default();
        for (ct, decl, extra, want) in [
            ("application/xml", "ISO-8859-1", &b""[..], "K\u{f6}ln"),
            ("text/xml", "iso-8859-1", b"", "K\u{f6}ln"),
            ("text/plain", "ISO-8859-1", b"", "K\u{f6}ln"),
            (
                "application/xml",
                "windows-1252",
                b" \x80",
                "K\u{f6}ln \u{20ac}",
            ),
        ] {
            let m = alert_from_mail(&xml_mail(ct, "", &koeln(decl, extra)), &o);
            assert_eq!(m.alert.subject, want, "{ct} {decl}");
            assert_eq!(m.problem, None);
        }
        // The same in quoted-printable and base64 transfer encodings.
        let qp = xml_mail(
            "application/xml",
            "Content-Transfer-Encoding: quoted-printable\r\n",
            b"<?xml version=3D\"1.0\" encoding=3D\"ISO-8859-1\"?><alert><subject>K=F6ln</subject></alert>\r\n",
        );
        assert_eq!(alert_from_mail(&qp, &o).alert.subject, "K\u{f6}ln");
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><alert><subject>K\u{f6}ln</subject></alert>";
        let mut utf16 = vec![0xff, 0xfe];
        utf16.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&utf16);
        let raw = xml_mail(
            "application/xml",
            "Content-Transfer-Encoding: base64\r\n",
            format!("{b64}\r\n").as_bytes(),
        );
        assert_eq!(alert_from_mail(&raw, &o).alert.subject, "K\u{f6}ln");
        // UTF-16 big-endian without a byte-order mark.
        let be: Vec<u8> = doc.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&be);
        let raw = xml_mail(
            "application/xml",
            "Content-Transfer-Encoding: base64\r\n",
            format!("{b64}\r\n").as_bytes(),
        );
        assert_eq!(alert_from_mail(&raw, &o).alert.subject, "K\u{f6}ln");
        // A MIME charset wins over the declaration.
        let raw = xml_mail(
            "application/xml; charset=utf-8",
            "",
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><alert><subject>K\u{f6}ln</subject></alert>".as_bytes(),
        );
        assert_eq!(alert_from_mail(&raw, &o).alert.subject, "K\u{f6}ln");
        // A declaration that names UTF-16 in ASCII bytes is not believed.
        let raw = xml_mail(
            "application/xml",
            "",
            b"<?xml version='1.0' encoding='UTF-16'?><alert><subject>x</subject></alert>",
        );
        assert_eq!(alert_from_mail(&raw, &o).alert.subject, "x");
    }

    #[test]
    fn documents_cannot_set_mail_labels() {
        let doc = b"<alert xmlns=\"urn:alertbridge:alert:1\"><subject>x</subject><labels>\
            <label name=\"mail.from\">ceo@contoso.com</label><label name=\"MAIL.Problem\">none</label>\
            <label name=\"mail.header.x-priority\">1</label><label name=\"host\">db01</label></labels></alert>\r\n";
        let raw = xml_mail("application/xml", "", doc);
        let m = alert_from_mail(&raw, &MailOptions::default());
        let labels: Vec<(&str, &str)> = m
            .alert
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("host", "db01"),
                ("mail.from", "a@b.test"),
                ("mail.subject", "s")
            ]
        );
    }

    #[test]
    fn the_sender_is_one_address_in_one_from_header() {
        let o = MailOptions::default();
        let two_headers = b"From: ops@contoso.com\r\nFrom: x@evil.test\r\nSubject: s\r\n\r\nb\r\n";
        assert_eq!(alert_from_mail(two_headers, &o).sender, None);
        let two_addresses = b"From: ops@contoso.com, x@evil.test\r\nSubject: s\r\n\r\nb\r\n";
        assert_eq!(alert_from_mail(two_addresses, &o).sender, None);
        let one = b"From: Ops <ops@contoso.com>\r\nAuthentication-Results: mx; spf=pass\r\nSubject: s\r\nAuthentication-Results: b;\r\n dkim=pass\r\n\r\nb\r\n";
        let m = alert_from_mail(one, &o);
        assert_eq!(m.sender.as_deref(), Some("ops@contoso.com"));
        assert_eq!(m.auth_results.len(), 2);
        assert!(
            m.auth_results[0].contains("mx; spf=pass") && m.auth_results[1].contains("dkim=pass")
        );
    }
}
