//! The `<alert xmlns="urn:alertbridge:alert:1">` document (`docs/alert-format.md` §2), or
//! several `<alert>`s in an `<alerts>` root.
//!
//! Safe by construction: the document's size and nesting are bounded ([`Limits`]); a
//! `<!DOCTYPE>` is refused, so there is no DTD and no entity but the five predefined ones and
//! character references; only the elements of the format are accepted. Elements must be in our
//! namespace or in none.
//!
//! Encoding ([`parse`]): the transport's `charset` parameter when there is one (RFC 7303), else
//! the byte order mark or the XML declaration's `encoding` (XML 1.0 appendix F), else UTF-8. Any
//! encoding the WHATWG Encoding Standard names is taken (ISO-8859-1, windows-1252, UTF-16, ...);
//! bytes that are not valid in it are refused rather than replaced.

use std::collections::BTreeMap;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};
use quick_xml::{
    events::{BytesStart, Event},
    name::{Namespace, ResolveResult},
    reader::NsReader,
};

use super::{FormatError, Limits};
use crate::{Alert, AlertStatus};

/// The namespace of the alert document.
pub const NAMESPACE: &str = "urn:alertbridge:alert:1";

/// True if and only if `text` looks like an XML document worth parsing as an alert (it starts
/// with `<?xml` or `<alert`, or with `<` and names our namespace): the test for a mail's text
/// body, which is usually not XML at all.
pub fn looks_like_xml(text: &str) -> bool {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<?xml") || t.starts_with("<alert") || t.starts_with('<') && t.contains(NAMESPACE)
}

/// Parses a document in the encoding named by `charset` (the HTTP or MIME parameter), or else
/// by its byte order mark or XML declaration, or else UTF-8.
pub fn parse(
    bytes: &[u8],
    charset: Option<&str>,
    limits: &Limits,
) -> Result<Vec<Alert>, FormatError> {
    if bytes.len() > limits.max_bytes {
        return Err(FormatError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let (encoding, bom) = match charset {
        Some(label) => {
            let label = label.trim().trim_matches('"');
            let encoding = Encoding::for_label(label.as_bytes())
                .ok_or_else(|| FormatError::Invalid(format!("unsupported charset {label:?}")))?;
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
        return parse_utf8(body, limits);
    }
    let text = encoding
        .decode_without_bom_handling_and_without_replacement(body)
        .ok_or_else(|| {
            FormatError::Invalid(format!("the body is not valid {} text", encoding.name()))
        })?;
    parse_utf8(text.as_bytes(), limits)
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
fn declared(bytes: &[u8]) -> Result<&'static Encoding, FormatError> {
    let Some(decl) = bytes.trim_ascii_start().strip_prefix(b"<?xml") else {
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
        FormatError::Invalid(format!(
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

/// Parses an `<alert>` document, or an `<alerts>` document holding several, in UTF-8.
fn parse_utf8(bytes: &[u8], limits: &Limits) -> Result<Vec<Alert>, FormatError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = super::line_column(bytes, e.valid_up_to());
        FormatError::Syntax {
            format: "XML",
            line,
            column,
            message: "the body is not UTF-8".into(),
        }
    })?;
    let mut doc = Doc {
        reader: NsReader::from_str(text),
        bytes,
        depth: 0,
        max_depth: limits.max_depth,
    };
    doc.reader.config_mut().check_end_names = true;
    doc.document()
}

struct Doc<'a> {
    reader: NsReader<&'a [u8]>,
    bytes: &'a [u8],
    /// Elements open now.
    depth: usize,
    max_depth: usize,
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
    fn document(&mut self) -> Result<Vec<Alert>, FormatError> {
        let (name, empty) = loop {
            match self.item() {
                Ok(Some(Item::Child(name, _, empty))) => break (name, empty),
                Ok(Some(Item::Text(t))) if t.trim().is_empty() => {}
                Ok(Some(Item::Text(_))) => {
                    return Err(self.field("alert", "text before the root element"));
                }
                Ok(Some(Item::End)) => return Err(self.field("alert", "unexpected end tag")),
                Ok(None) => {
                    return Err(FormatError::NotAnAlert(Box::new(FormatError::Invalid(
                        "the body holds no XML element".into(),
                    ))));
                }
                // An element in another namespace at the root: some other XML document.
                Err(e @ FormatError::Field { .. }) if matches!(&e, FormatError::Field { field, .. } if field == "namespace") =>
                {
                    return Err(FormatError::NotAnAlert(Box::new(e)));
                }
                Err(e) => return Err(e),
            }
        };
        let alerts = match name.as_str() {
            "alert" if empty => return Err(self.field("subject", "missing element <subject>")),
            "alert" => vec![self.alert()?],
            "alerts" if empty => {
                return Err(FormatError::Invalid("<alerts> holds no <alert>".into()));
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
                    return Err(FormatError::Invalid("<alerts> holds no <alert>".into()));
                }
                alerts
            }
            other => {
                return Err(FormatError::NotAnAlert(Box::new(
                    self.field(other, "expected <alert> or <alerts> as the root element"),
                )));
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
    fn alert(&mut self) -> Result<Alert, FormatError> {
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
                    alert.severity = text
                        .parse()
                        .map_err(|e| self.field("severity", &format!("{e}")))?;
                }
                "status" => {
                    let text = self.text(&name, empty)?;
                    let status: AlertStatus = text
                        .parse()
                        .map_err(|e| self.field("status", &format!("{e}")))?;
                    alert.set_status(status);
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

    fn recipients(&mut self, alert: &mut Alert) -> Result<(), FormatError> {
        loop {
            let (list, what) = match self.item()? {
                Some(Item::Child(name, _, empty)) if name == "group" || name == "user" => {
                    let value = self.text(&name, empty)?;
                    super::check_name(&name, &value).map_err(|m| self.field(&name, &m))?;
                    let list = if name == "group" {
                        &mut alert.groups
                    } else {
                        &mut alert.users
                    };
                    (list, value)
                }
                Some(Item::Child(name, _, _)) => {
                    return Err(self.field(&name, "expected <group> or <user>"));
                }
                Some(Item::Text(t)) if t.trim().is_empty() => continue,
                Some(Item::Text(_)) => return Err(self.field("recipients", "unexpected text")),
                Some(Item::End) => return Ok(()),
                None => return Err(self.unclosed("recipients")),
            };
            list.push(what);
        }
    }

    fn labels(&mut self, labels: &mut BTreeMap<String, String>) -> Result<(), FormatError> {
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
    fn text(&mut self, name: &str, empty: bool) -> Result<String, FormatError> {
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
    fn item(&mut self) -> Result<Option<Item<'a>>, FormatError> {
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
                Event::Start(s) | Event::Empty(s) if self.depth >= self.max_depth => {
                    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
                    let message = format!("nested deeper than {} elements", self.max_depth);
                    Err(self.field(&name, &message))
                }
                Event::Start(s) => {
                    let name = checked(&s).map_err(|m| self.field("namespace", &m))?;
                    self.depth += 1;
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
                Event::End(_) => {
                    self.depth = self.depth.saturating_sub(1);
                    Ok(Some(Item::End))
                }
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

    fn syntax(&self, e: &dyn std::fmt::Display) -> FormatError {
        let (line, column) = self.position(self.reader.error_position());
        FormatError::Syntax {
            format: "XML",
            line,
            column,
            message: e.to_string(),
        }
    }

    /// An entity or character reference error in text that starts at byte `base`.
    fn escape_error(&self, e: quick_xml::Error, base: u64) -> FormatError {
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
        FormatError::Syntax {
            format: "XML",
            line,
            column,
            message,
        }
    }

    fn unclosed(&self, name: &str) -> FormatError {
        let (line, column) = self.position(self.reader.buffer_position());
        let message = format!("the document ends before </{name}>");
        FormatError::Syntax {
            format: "XML",
            line,
            column,
            message,
        }
    }

    /// An error about the element just read: the position is that of its end.
    fn field(&self, field: &str, message: &str) -> FormatError {
        let (line, column) = self.position(self.reader.buffer_position());
        FormatError::Field {
            field: field.to_owned(),
            line,
            column,
            message: message.to_owned(),
        }
    }
}

#[cfg(test)]
#[path = "xml_tests.rs"]
mod tests;
