//! The `<alert xmlns="urn:alertbridge:alert:1">` document (docs/design.md §5), parsed with quick-xml
//! within limits: bounded size and depth, no DTD, no entities beyond the five predefined ones.

use std::collections::BTreeMap;

use alertbridge_plugin_api::Severity;
use quick_xml::{
    events::Event,
    name::{Namespace, ResolveResult},
    reader::NsReader,
};

/// The namespace of the alert document.
pub const NAMESPACE: &str = "urn:alertbridge:alert:1";

/// Bounds on an alert document.
#[derive(Debug, Clone, Copy)]
pub struct XmlLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 10,
            max_depth: 16,
        }
    }
}

/// The fields of an alert document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XmlAlert {
    pub subject: String,
    pub body: String,
    pub severity: Option<Severity>,
    pub groups: Vec<String>,
    pub users: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub dedup_key: Option<String>,
    pub expires_unix_ms: Option<i64>,
}

/// Why an alert document was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XmlError {
    #[error("alert document larger than {0} bytes")]
    TooLarge(usize),
    #[error("alert document nested deeper than {0} elements")]
    TooDeep(usize),
    #[error("alert document has a DTD, which is not allowed")]
    Dtd,
    #[error("alert document is not well-formed XML")]
    Syntax(#[source] quick_xml::Error),
    #[error("alert document has no <subject>")]
    NoSubject,
    #[error("unknown severity {0:?} (info, low, normal, high, critical)")]
    Severity(String),
    #[error("invalid <expires> {0:?} (RFC 3339 expected)")]
    Expires(String),
    #[error("<label> without a name attribute")]
    LabelName,
}

impl From<quick_xml::Error> for XmlError {
    fn from(e: quick_xml::Error) -> Self {
        Self::Syntax(e)
    }
}

/// True if and only if `text` looks like an XML document (so it is worth parsing).
pub fn looks_like_xml(text: &str) -> bool {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<?xml") || t.starts_with("<alert") || t.starts_with('<') && t.contains(NAMESPACE)
}

/// Parses an alert document. `Ok(None)` if the root element is not an alert of our namespace
/// (or without a namespace): such XML is just text. An alert document that breaks the rules
/// is an error.
pub fn parse_alert(text: &str, limits: XmlLimits) -> Result<Option<XmlAlert>, XmlError> {
    if text.len() > limits.max_bytes {
        return Err(XmlError::TooLarge(limits.max_bytes));
    }
    let mut reader = NsReader::from_str(text);
    reader.config_mut().expand_empty_elements = true;
    let mut alert = XmlAlert::default();
    let mut path: Vec<String> = Vec::new();
    let mut label_name: Option<String> = None;
    let mut buf = String::new();
    let (mut seen_root, mut has_subject) = (false, false);
    loop {
        let (ns, event) = reader.read_resolved_event()?;
        match event {
            Event::DocType(_) => return Err(XmlError::Dtd),
            Event::Start(e) => {
                if path.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let ours = matches!(ns, ResolveResult::Unbound)
                    || matches!(ns, ResolveResult::Bound(Namespace(n)) if n == NAMESPACE.as_bytes());
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if !seen_root {
                    if local != "alert" || !ours {
                        return Ok(None);
                    }
                    seen_root = true;
                }
                if path == ["alert", "labels"] && local == "label" && ours {
                    let name = e
                        .try_get_attribute("name")
                        .map_err(quick_xml::Error::from)?;
                    let name = name.ok_or(XmlError::LabelName)?;
                    label_name = Some(name.unescape_value()?.into_owned());
                }
                path.push(if ours {
                    local
                } else {
                    format!("{{other}}{local}")
                });
                buf.clear();
            }
            Event::Text(t) => buf.push_str(&t.unescape()?),
            Event::CData(c) => buf.push_str(&String::from_utf8_lossy(&c)),
            Event::End(_) => {
                let value = std::mem::take(&mut buf);
                let value = value.trim();
                let segments: Vec<&str> = path.iter().map(String::as_str).collect();
                match segments.as_slice() {
                    ["alert", "subject"] => {
                        alert.subject = value.to_owned();
                        has_subject = true;
                    }
                    ["alert", "body"] => alert.body = value.to_owned(),
                    ["alert", "severity"] => {
                        let s = Severity::from_name(&value.to_ascii_lowercase())
                            .ok_or_else(|| XmlError::Severity(value.to_owned()))?;
                        alert.severity = Some(s);
                    }
                    ["alert", "dedup-key"] if !value.is_empty() => {
                        alert.dedup_key = Some(value.to_owned())
                    }
                    ["alert", "expires"] if !value.is_empty() => {
                        let at = mail_parser::DateTime::parse_rfc3339(value)
                            .ok_or_else(|| XmlError::Expires(value.to_owned()))?;
                        alert.expires_unix_ms = Some(at.to_timestamp().saturating_mul(1000));
                    }
                    ["alert", "recipients", "group"] if !value.is_empty() => {
                        alert.groups.push(value.to_owned())
                    }
                    ["alert", "recipients", "user"] if !value.is_empty() => {
                        alert.users.push(value.to_owned())
                    }
                    ["alert", "labels", "label"] => {
                        if let Some(name) = label_name.take() {
                            alert.labels.insert(name, value.to_owned());
                        }
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Ok(None);
    }
    if !has_subject || alert.subject.is_empty() {
        return Err(XmlError::NoSubject);
    }
    Ok(Some(alert))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_EXAMPLE: &str = r#"<alert xmlns="urn:alertbridge:alert:1">
  <subject>Disk full on db01</subject>
  <body>/var is at 98%</body>
  <severity>critical</severity>
  <recipients><group>ops</group><user>sip:carol@contoso.com</user></recipients>
  <labels><label name="host">db01</label></labels>
  <dedup-key>db01-disk</dedup-key>
  <expires>2026-12-01T10:00:00Z</expires>
</alert>"#;

    fn parse(text: &str) -> Result<Option<XmlAlert>, XmlError> {
        parse_alert(text, XmlLimits::default())
    }

    #[test]
    fn the_design_example() {
        let a = parse(DESIGN_EXAMPLE).expect("valid").expect("an alert");
        assert_eq!(a.subject, "Disk full on db01");
        assert_eq!(a.body, "/var is at 98%");
        assert_eq!(a.severity, Some(Severity::CRITICAL));
        assert_eq!(
            (a.groups, a.users),
            (
                vec!["ops".to_owned()],
                vec!["sip:carol@contoso.com".to_owned()]
            )
        );
        assert_eq!(a.labels.get("host").map(String::as_str), Some("db01"));
        assert_eq!(a.dedup_key.as_deref(), Some("db01-disk"));
        assert_eq!(a.expires_unix_ms, Some(1_796_119_200_000));
    }

    #[test]
    fn prefixes_entities_cdata_and_unknown_elements() {
        let doc = r#"<?xml version="1.0"?><a:alert xmlns:a="urn:alertbridge:alert:1"><a:subject>A &amp; B &#x2192; C</a:subject>
            <a:body><![CDATA[<raw>]]></a:body><x:extra xmlns:x="urn:other"><a:subject>ignored</a:subject></x:extra>
            <a:future>ignored</a:future></a:alert>"#;
        let a = parse(doc).expect("valid").expect("an alert");
        assert_eq!(
            (a.subject.as_str(), a.body.as_str(), a.severity),
            ("A & B \u{2192} C", "<raw>", None)
        );
    }

    #[test]
    fn other_documents_are_not_alerts() {
        assert_eq!(
            parse(r#"<alert xmlns="urn:example:alerting:1"><id>1</id></alert>"#).expect("ok"),
            None
        );
        assert_eq!(parse("<html><body>hi</body></html>").expect("ok"), None);
        assert_eq!(parse("").expect("ok"), None);
    }

    #[test]
    fn limits_and_refusals() {
        let e =
            parse(r#"<!DOCTYPE alert [<!ENTITY x "boom">]><alert><subject>&x;</subject></alert>"#)
                .unwrap_err();
        assert!(matches!(e, XmlError::Dtd), "{e}");
        let e = parse("<alert><subject>&x;</subject></alert>").unwrap_err();
        assert!(matches!(e, XmlError::Syntax(_)), "{e}");
        let deep = format!("<alert>{}{}</alert>", "<a>".repeat(20), "</a>".repeat(20));
        assert!(matches!(parse(&deep).unwrap_err(), XmlError::TooDeep(16)));
        let big = format!(
            "<alert><subject>{}</subject></alert>",
            "x".repeat(300 << 10)
        );
        assert!(matches!(parse(&big).unwrap_err(), XmlError::TooLarge(_)));
        assert!(matches!(
            parse("<alert><body>x</body></alert>").unwrap_err(),
            XmlError::NoSubject
        ));
        assert!(matches!(
            parse("<alert><subject>s</subject><severity>urgent</severity></alert>").unwrap_err(),
            XmlError::Severity(_)
        ));
        assert!(matches!(
            parse("<alert><subject>s</subject><expires>tomorrow</expires></alert>").unwrap_err(),
            XmlError::Expires(_)
        ));
        assert!(matches!(
            parse("<alert><subject>s</subject></alert"),
            Err(XmlError::Syntax(_))
        ));
        assert!(matches!(
            parse("<alert><subject>s</subject><labels><label>v</label></labels></alert>"),
            Err(XmlError::LabelName)
        ));
    }

    #[test]
    fn sniffing() {
        assert!(looks_like_xml("\n  <?xml version=\"1.0\"?><alert/>") && looks_like_xml("<alert>"));
        assert!(!looks_like_xml("Disk <full> on db01") && !looks_like_xml("<p>hi</p>"));
    }
}
