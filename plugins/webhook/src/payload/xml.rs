//! Our `<alert xmlns="urn:alertbridge:alert:1">` document (DESIGN §5), or several `<alert>`s in
//! an `<alerts>` root.
//!
//! Safe by construction: a `<!DOCTYPE>` is refused (so no DTD and no entity but the five
//! predefined ones and character references), only the elements of the format are accepted (so
//! nesting is at most four deep), and the body size is capped by the server before it gets here.
//! Elements must be in our namespace or in none.
//!
//! Encoding ([`parse_encoded`]): the HTTP `charset` parameter when there is one (RFC 7303), else
//! the byte order mark or the XML declaration's `encoding` (XML 1.0 appendix F), else UTF-8. Any
//! encoding the WHATWG Encoding Standard names is taken (ISO-8859-1, windows-1252, UTF-16, ...);
//! bytes that are not valid in it are refused rather than replaced.

use std::collections::BTreeMap;

use alertbridge_plugin_api::Alert;
use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use quick_xml::{
    events::{BytesStart, Event},
    name::{Namespace, ResolveResult},
    reader::NsReader,
};

use super::PayloadError;

/// The namespace of the alert document.
pub const NAMESPACE: &str = "urn:alertbridge:alert:1";

/// Parses a document in the encoding named by `charset` (the HTTP parameter), or else by its
/// byte order mark or XML declaration, or else UTF-8.
pub fn parse_encoded(bytes: &[u8], charset: Option<&str>) -> Result<Vec<Alert>, PayloadError> {
    let (encoding, bom) = match charset {
        Some(label) => {
            let label = label.trim().trim_matches('"');
            let encoding = Encoding::for_label(label.as_bytes())
                .ok_or_else(|| PayloadError::Invalid(format!("unsupported charset {label:?}")))?;
            let (sniffed, bom) = sniff_bom(bytes);
            // A byte order mark of the named encoding is not content.
            (encoding, if sniffed == Some(encoding) { bom } else { 0 })
        }
        None => match sniff_bom(bytes) {
            (Some(encoding), bom) => (encoding, bom),
            (None, _) => (declared(bytes)?, 0),
        },
    };
    let body = &bytes[bom..];
    if encoding == UTF_8 {
        return parse(body);
    }
    let text = encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .ok_or_else(|| {
            PayloadError::Invalid(format!("the body is not valid {} text", encoding.name()))
        })?;
    parse(text.as_bytes())
}

/// The encoding a byte order mark (or, for UTF-16 without one, the first `<?`) shows, and the
/// length of the mark.
fn sniff_bom(bytes: &[u8]) -> (Option<&'static Encoding>, usize) {
    match bytes {
        [0xEF, 0xBB, 0xBF, ..] => (Some(UTF_8), 3),
        [0xFF, 0xFE, ..] => (Some(UTF_16LE), 2),
        [0xFE, 0xFF, ..] => (Some(UTF_16BE), 2),
        [b'<', 0, b'?', 0, ..] => (Some(UTF_16LE), 0),
        [0, b'<', 0, b'?', ..] => (Some(UTF_16BE), 0),
        _ => (None, 0),
    }
}

/// The encoding the XML declaration names, read as ASCII; UTF-8 when there is no declaration
/// or it names none. A UTF-16 name in a declaration readable as ASCII cannot be right, and the
/// body is read as UTF-8.
fn declared(bytes: &[u8]) -> Result<&'static Encoding, PayloadError> {
    let Some(decl) = bytes.strip_prefix(b"<?xml") else {
        return Ok(UTF_8);
    };
    let end = decl
        .windows(2)
        .take(1024)
        .position(|w| w == b"?>")
        .unwrap_or(0);
    let decl = &decl[..end];
    let Some(at) = decl.windows(8).position(|w| w == b"encoding") else {
        return Ok(UTF_8);
    };
    let rest = decl[at + 8..].trim_ascii_start();
    let Some(rest) = rest.strip_prefix(b"=") else {
        return Ok(UTF_8);
    };
    let rest = rest.trim_ascii_start();
    let (quote, rest) = match rest.split_first() {
        Some((q @ (b'"' | b'\''), rest)) => (*q, rest),
        _ => return Ok(UTF_8),
    };
    let label = &rest[..rest.iter().position(|b| *b == quote).unwrap_or(rest.len())];
    let encoding = Encoding::for_label(label).ok_or_else(|| {
        PayloadError::Invalid(format!(
            "unsupported encoding {:?} in the XML declaration",
            String::from_utf8_lossy(label)
        ))
    })?;
    Ok(if encoding == UTF_16LE || encoding == UTF_16BE {
        UTF_8
    } else {
        encoding
    })
}

/// Parses an `<alert>` document, or an `<alerts>` document holding several.
pub fn parse(bytes: &[u8]) -> Result<Vec<Alert>, PayloadError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = super::line_column(bytes, e.valid_up_to());
        PayloadError::Syntax {
            format: "XML",
            line,
            column,
            message: "the body is not UTF-8".into(),
        }
    })?;
    let mut doc = Doc {
        reader: NsReader::from_str(text),
        bytes,
    };
    doc.reader.config_mut().check_end_names = true;
    doc.document()
}

struct Doc<'a> {
    reader: NsReader<&'a [u8]>,
    bytes: &'a [u8],
}

/// What the next piece of content inside an element is.
enum Item<'a> {
    /// A child element: its local name, its start tag, and whether it is empty (`<x/>`).
    Child(String, BytesStart<'a>, bool),
    /// Character data (entities resolved).
    Text(String),
    /// The end of the enclosing element.
    End,
}

impl<'a> Doc<'a> {
    fn document(&mut self) -> Result<Vec<Alert>, PayloadError> {
        let (name, _start, empty) = loop {
            match self.item()? {
                Some(Item::Child(name, start, empty)) => break (name, start, empty),
                Some(Item::Text(t)) if t.trim().is_empty() => {}
                Some(Item::Text(_)) => {
                    return Err(self.field("alert", "text before the root element"));
                }
                Some(Item::End) => return Err(self.field("alert", "unexpected end tag")),
                None => {
                    return Err(PayloadError::Invalid(
                        "the body holds no XML element".into(),
                    ));
                }
            }
        };
        let alerts = match name.as_str() {
            "alert" if empty => return Err(self.field("subject", "missing element <subject>")),
            "alert" => vec![self.alert()?],
            "alerts" if empty => {
                return Err(PayloadError::Invalid("<alerts> holds no <alert>".into()));
            }
            "alerts" => {
                let mut alerts = Vec::new();
                loop {
                    match self.item()? {
                        Some(Item::Child(n, _, false)) if n == "alert" => {
                            alerts.push(self.alert()?)
                        }
                        Some(Item::Child(n, _, _)) => {
                            return Err(self.field(&n, "expected <alert>"));
                        }
                        Some(Item::Text(t)) if t.trim().is_empty() => {}
                        Some(Item::Text(_)) => return Err(self.field("alerts", "unexpected text")),
                        Some(Item::End) => break,
                        None => return Err(self.unclosed("alerts")),
                    }
                }
                if alerts.is_empty() {
                    return Err(PayloadError::Invalid("<alerts> holds no <alert>".into()));
                }
                alerts
            }
            other => {
                return Err(self.field(other, "expected <alert> or <alerts> as the root element"));
            }
        };
        loop {
            match self.item()? {
                None => return Ok(alerts),
                Some(Item::Text(t)) if t.trim().is_empty() => {}
                Some(_) => return Err(self.field(&name, "content after the root element")),
            }
        }
    }

    /// Reads the content of an `<alert>` whose start tag was just read.
    fn alert(&mut self) -> Result<Alert, PayloadError> {
        let mut alert = Alert::default();
        let mut subject = false;
        loop {
            let (name, empty) = match self.item()? {
                Some(Item::Child(name, _, empty)) => (name, empty),
                Some(Item::Text(t)) if t.trim().is_empty() => continue,
                Some(Item::Text(_)) => {
                    return Err(self.field("alert", "unexpected text; put it in an element"));
                }
                Some(Item::End) => break,
                None => return Err(self.unclosed("alert")),
            };
            match name.as_str() {
                "subject" => {
                    alert.subject = self.text(&name, empty)?;
                    if alert.subject.is_empty() {
                        return Err(self.field("subject", "must not be empty"));
                    }
                    subject = true;
                }
                "body" => alert.body = self.text(&name, empty)?,
                "severity" => {
                    let text = self.text(&name, empty)?;
                    alert.severity =
                        super::severity(&text).map_err(|m| self.field("severity", &m))?;
                }
                "dedup-key" => {
                    alert.dedup_key = Some(self.text(&name, empty)?).filter(|k| !k.is_empty())
                }
                "expires" => {
                    let text = self.text(&name, empty)?;
                    alert.expires_unix_ms =
                        Some(super::rfc3339_unix_ms(&text).map_err(|m| self.field("expires", &m))?);
                }
                "recipients" if !empty => self.recipients(&mut alert)?,
                "labels" if !empty => self.labels(&mut alert.labels)?,
                "recipients" | "labels" => {}
                other => return Err(self.field(other, "unknown element")),
            }
        }
        if !subject {
            return Err(self.field("subject", "missing element <subject> in <alert>"));
        }
        Ok(alert)
    }

    fn recipients(&mut self, alert: &mut Alert) -> Result<(), PayloadError> {
        loop {
            match self.item()? {
                Some(Item::Child(name, _, empty)) if name == "group" => {
                    alert.groups.push(self.text(&name, empty)?)
                }
                Some(Item::Child(name, _, empty)) if name == "user" => {
                    alert.users.push(self.text(&name, empty)?)
                }
                Some(Item::Child(name, _, _)) => {
                    return Err(self.field(&name, "expected <group> or <user>"));
                }
                Some(Item::Text(t)) if t.trim().is_empty() => {}
                Some(Item::Text(_)) => return Err(self.field("recipients", "unexpected text")),
                Some(Item::End) => return Ok(()),
                None => return Err(self.unclosed("recipients")),
            }
        }
    }

    fn labels(&mut self, labels: &mut BTreeMap<String, String>) -> Result<(), PayloadError> {
        loop {
            match self.item()? {
                Some(Item::Child(name, start, empty)) if name == "label" => {
                    let key = match start.try_get_attribute("name") {
                        Ok(Some(attr)) => match attr.unescape_value() {
                            Ok(v) => v.into_owned(),
                            Err(e) => {
                                return Err(self.escape_error(e, self.reader.buffer_position()));
                            }
                        },
                        Ok(None) => return Err(self.field("label", "missing attribute `name`")),
                        Err(e) => return Err(self.syntax(&e)),
                    };
                    if key.is_empty() {
                        return Err(self.field("label", "attribute `name` must not be empty"));
                    }
                    let value = self.text(&name, empty)?;
                    labels.insert(key, value);
                }
                Some(Item::Child(name, _, _)) => {
                    return Err(self.field(&name, "expected <label name=\"...\">"));
                }
                Some(Item::Text(t)) if t.trim().is_empty() => {}
                Some(Item::Text(_)) => return Err(self.field("labels", "unexpected text")),
                Some(Item::End) => return Ok(()),
                None => return Err(self.unclosed("labels")),
            }
        }
    }

    /// The trimmed text content of a leaf element whose start tag was just read.
    fn text(&mut self, name: &str, empty: bool) -> Result<String, PayloadError> {
        let mut text = String::new();
        if !empty {
            loop {
                match self.item()? {
                    Some(Item::Text(t)) => text.push_str(&t),
                    Some(Item::Child(child, _, _)) => {
                        return Err(
                            self.field(&child, &format!("no element allowed inside <{name}>"))
                        );
                    }
                    Some(Item::End) => break,
                    None => return Err(self.unclosed(name)),
                }
            }
        }
        Ok(text.trim().to_owned())
    }

    /// The next item, skipping comments, processing instructions and the XML declaration.
    fn item(&mut self) -> Result<Option<Item<'a>>, PayloadError> {
        loop {
            let start = self.reader.buffer_position();
            let (ours, event) = match self.reader.read_resolved_event() {
                Ok((ns, event)) => {
                    let ours = match ns {
                        ResolveResult::Bound(Namespace(n)) => n == NAMESPACE.as_bytes(),
                        ResolveResult::Unbound => true,
                        ResolveResult::Unknown(_) => false,
                    };
                    (ours, event)
                }
                Err(e) => return Err(self.syntax(&e)),
            };
            let checked = |start: &BytesStart<'_>| -> Result<String, String> {
                let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                if ours {
                    Ok(local)
                } else {
                    Err(format!("<{local}> is not in namespace {NAMESPACE}"))
                }
            };
            return match event {
                Event::Start(s) => {
                    let name = checked(&s).map_err(|m| self.field("namespace", &m))?;
                    Ok(Some(Item::Child(name, s, false)))
                }
                Event::Empty(s) => {
                    let name = checked(&s).map_err(|m| self.field("namespace", &m))?;
                    Ok(Some(Item::Child(name, s, true)))
                }
                Event::Text(t) => match t.unescape() {
                    Ok(text) => Ok(Some(Item::Text(text.into_owned()))),
                    Err(e) => Err(self.escape_error(e, start)),
                },
                Event::CData(c) => {
                    let text = std::str::from_utf8(&c)
                        .map_err(|e| self.syntax(&e))?
                        .to_owned();
                    Ok(Some(Item::Text(text)))
                }
                Event::End(_) => Ok(Some(Item::End)),
                Event::DocType(_) => {
                    Err(self.field("DOCTYPE", "a document type declaration is not allowed"))
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) => continue,
                Event::Eof => Ok(None),
            };
        }
    }

    fn position(&self, offset: u64) -> (usize, usize) {
        super::line_column(self.bytes, usize::try_from(offset).unwrap_or(usize::MAX))
    }

    fn syntax(&self, e: &dyn std::fmt::Display) -> PayloadError {
        let (line, column) = self.position(self.reader.error_position());
        PayloadError::Syntax {
            format: "XML",
            line,
            column,
            message: e.to_string(),
        }
    }

    /// An entity or character reference error in text that starts at byte `base`.
    fn escape_error(&self, e: quick_xml::Error, base: u64) -> PayloadError {
        use quick_xml::escape::EscapeError;
        let (offset, message) = match e {
            quick_xml::Error::Escape(EscapeError::UnrecognizedEntity(range, name)) => (
                range.start,
                format!(
                    "unknown entity `&{name};` (only the five XML entities and character references are allowed)"
                ),
            ),
            quick_xml::Error::Escape(EscapeError::UnterminatedEntity(range)) => {
                (range.start, "`&` without `;`".to_owned())
            }
            other => (0, other.to_string()),
        };
        let (line, column) = self.position(base.saturating_add(offset as u64));
        PayloadError::Syntax {
            format: "XML",
            line,
            column,
            message,
        }
    }

    fn unclosed(&self, name: &str) -> PayloadError {
        let (line, column) = self.position(self.reader.buffer_position());
        let message = format!("the document ends before </{name}>");
        PayloadError::Syntax {
            format: "XML",
            line,
            column,
            message,
        }
    }

    /// An error about the element just read: the position is that of its end.
    fn field(&self, field: &str, message: &str) -> PayloadError {
        let (line, column) = self.position(self.reader.buffer_position());
        PayloadError::Field {
            field: field.to_owned(),
            line,
            column,
            message: message.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::Severity;

    use super::*;

    #[test]
    fn text_in_any_declared_encoding() {
        let latin1 = b"<alert><subject>K\xf6ln</subject></alert>";
        let got = parse_encoded(latin1, Some("iso-8859-1")).unwrap();
        assert_eq!(got[0].subject, "K\u{f6}ln");
        let declared =
            b"<?xml version=\"1.0\" encoding='ISO-8859-1'?>\n<alert><subject>K\xf6ln</subject></alert>";
        assert_eq!(
            parse_encoded(declared, None).unwrap()[0].subject,
            "K\u{f6}ln"
        );
        // The HTTP parameter wins over the declaration (RFC 7303).
        let utf8_declared_latin1 = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><alert><subject>K\u{f6}ln</subject></alert>";
        assert_eq!(
            parse_encoded(utf8_declared_latin1.as_bytes(), Some("UTF-8")).unwrap()[0].subject,
            "K\u{f6}ln"
        );
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "<alert><subject>K\u{f6}ln</subject></alert>".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(parse_encoded(&utf16, None).unwrap()[0].subject, "K\u{f6}ln");
        let with_bom = b"\xEF\xBB\xBF<alert><subject>x</subject></alert>";
        assert_eq!(parse_encoded(with_bom, None).unwrap()[0].subject, "x");
        assert_eq!(
            parse_encoded(latin1, Some("klingon"))
                .unwrap_err()
                .to_string(),
            "unsupported charset \"klingon\""
        );
        assert!(
            parse_encoded(latin1, Some("utf-8"))
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        let sjis_bad = b"<alert><subject>\x81</subject></alert>";
        assert_eq!(
            parse_encoded(sjis_bad, Some("shift_jis"))
                .unwrap_err()
                .to_string(),
            "the body is not valid Shift_JIS text"
        );
    }

    const DESIGN_EXAMPLE: &str = r#"<alert xmlns="urn:alertbridge:alert:1">
  <subject>Disk full on db01</subject>
  <body>/var is at 98%</body>
  <severity>critical</severity>            <!-- info | low | normal | high | critical -->
  <recipients><group>ops</group><user>sip:carol@contoso.com</user></recipients>
  <labels><label name="host">db01</label></labels>
  <dedup-key>db01-disk</dedup-key>
  <expires>2026-12-01T10:00:00Z</expires>
</alert>
"#;

    #[test]
    fn the_design_example_parses_like_its_json_twin() {
        let json =
            br#"{"subject": "Disk full on db01", "body": "/var is at 98%", "severity": "critical",
 "recipients": {"groups": ["ops"], "users": ["sip:carol@contoso.com"]},
 "labels": {"host": "db01"}, "dedup_key": "db01-disk", "expires": "2026-12-01T10:00:00Z"}"#;
        assert_eq!(
            parse(DESIGN_EXAMPLE.as_bytes()),
            super::super::json::parse(json)
        );
    }

    #[test]
    fn several_alerts_entities_cdata_and_prefixes() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<a:alerts xmlns:a="urn:alertbridge:alert:1">
  <a:alert><a:subject>R&amp;D &#x2014; down</a:subject><a:severity>low</a:severity></a:alert>
  <a:alert><a:subject><![CDATA[<b>raw</b>]]></a:subject><a:labels/><a:body/></a:alert>
</a:alerts>"#;
        let alerts = parse(doc.as_bytes()).expect("valid");
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].subject, "R&D \u{2014} down");
        assert_eq!(alerts[0].severity, Severity::LOW);
        assert_eq!(alerts[1].subject, "<b>raw</b>");
        assert_eq!(alerts[1].severity, Severity::NORMAL);
        let plain = parse(b"<alert><subject>no namespace</subject></alert>").expect("valid");
        assert_eq!(plain[0].subject, "no namespace");
    }

    fn err(doc: &str) -> String {
        parse(doc.as_bytes()).expect_err(doc).to_string()
    }

    #[test]
    fn errors_name_element_line_and_column() {
        assert_eq!(
            err("<alert>\n  <subject>x</subject>\n  <severity>urgent</severity>\n</alert>"),
            "`severity` at line 3 column 30: unknown severity \"urgent\", expected info, low, normal, high or critical"
        );
        assert_eq!(
            err("<alert>\n<body>b</body>\n</alert>"),
            "`subject` at line 3 column 9: missing element <subject> in <alert>"
        );
        assert_eq!(
            err("<alert><subject>x</subject><colour>red</colour></alert>"),
            "`colour` at line 1 column 36: unknown element"
        );
        assert_eq!(
            err("<alert>\n<subject>x</subjct>\n</alert>"),
            "invalid XML at line 2 column 11: ill-formed document: expected `</subject>`, but `</subjct>` was found"
        );
        assert_eq!(
            err("<alert><subject>a &ent;</subject></alert>"),
            "invalid XML at line 1 column 20: unknown entity `&ent;` (only the five XML entities and character references are allowed)"
        );
        assert_eq!(
            err("<!DOCTYPE alert [<!ENTITY x \"boom\">]>\n<alert><subject>&x;</subject></alert>"),
            "`DOCTYPE` at line 1 column 38: a document type declaration is not allowed"
        );
        assert_eq!(
            err("<alert xmlns=\"urn:other\"><subject>x</subject></alert>"),
            "`namespace` at line 1 column 26: <alert> is not in namespace urn:alertbridge:alert:1"
        );
        assert_eq!(
            err("<alert><subject>x<b>y</b></subject></alert>"),
            "`b` at line 1 column 21: no element allowed inside <subject>"
        );
        assert_eq!(
            err("<alert><labels><label>v</label></labels><subject>x</subject></alert>"),
            "`label` at line 1 column 23: missing attribute `name`"
        );
        assert_eq!(
            err("<alert><subject>x</subject></alert><alert/>"),
            "`alert` at line 1 column 44: content after the root element"
        );
        assert_eq!(
            err("<alert><subject>x</subject>"),
            "invalid XML at line 1 column 28: the document ends before </alert>"
        );
        assert_eq!(
            err("<alert><subject>x"),
            "invalid XML at line 1 column 18: the document ends before </subject>"
        );
        assert_eq!(
            err("<alert/>"),
            "`subject` at line 1 column 9: missing element <subject>"
        );
        assert_eq!(err(" "), "the body holds no XML element");
        assert_eq!(err("<alerts></alerts>"), "<alerts> holds no <alert>");
        assert!(
            parse(b"<alert><subject>\xff</subject></alert>")
                .unwrap_err()
                .to_string()
                .starts_with("invalid XML at line 1 column 17: the body is not UTF-8")
        );
    }
}
