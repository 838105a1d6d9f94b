//! Tests of the XML alert document: encodings, the rules, and the exact error texts.

use super::*;
use crate::Severity;

fn parse_default(bytes: &[u8]) -> Result<Vec<Alert>, FormatError> {
    super::parse(bytes, None, &Limits::DEFAULT)
}

fn parse_encoded(bytes: &[u8], charset: Option<&str>) -> Result<Vec<Alert>, FormatError> {
    super::parse(bytes, charset, &Limits::DEFAULT)
}

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
    // A mail part may start with a line break before the declaration.
    let mut leading = b"\r\n".to_vec();
    leading.extend_from_slice(declared);
    assert_eq!(
        parse_encoded(&leading, None).unwrap()[0].subject,
        "K\u{f6}ln"
    );
    // The transport's parameter wins over the declaration (RFC 7303).
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
    let be: Vec<u8> =
        "<?xml version=\"1.0\" encoding=\"UTF-16\"?><alert><subject>K\u{f6}ln</subject></alert>"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
    assert_eq!(parse_encoded(&be, None).unwrap()[0].subject, "K\u{f6}ln");
    let with_bom = b"\xEF\xBB\xBF<alert><subject>x</subject></alert>";
    assert_eq!(parse_encoded(with_bom, None).unwrap()[0].subject, "x");
    // A declaration that names UTF-16 in ASCII bytes is not believed.
    let lying = b"<?xml version='1.0' encoding='UTF-16'?><alert><subject>x</subject></alert>";
    assert_eq!(parse_encoded(lying, None).unwrap()[0].subject, "x");
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

const SPEC_EXAMPLE: &str = r#"<alert xmlns="urn:alertbridge:alert:1">
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
fn the_spec_example_parses_like_its_json_twin() {
    let json =
        br#"{"subject": "Disk full on db01", "body": "/var is at 98%", "severity": "critical",
 "recipients": {"groups": ["ops"], "users": ["sip:carol@contoso.com"]},
 "labels": {"host": "db01"}, "dedup_key": "db01-disk", "expires": "2026-12-01T10:00:00Z"}"#;
    let xml = parse_default(SPEC_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(
        xml,
        super::super::json::parse(json, &Limits::DEFAULT).unwrap()
    );
    assert_eq!(xml[0].expires_unix_ms, Some(1_796_119_200_000));
    assert_eq!(xml[0].severity, Severity::CRITICAL);
}

#[test]
fn several_alerts_entities_cdata_and_prefixes() {
    let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<a:alerts xmlns:a="urn:alertbridge:alert:1">
  <a:alert><a:subject>R&amp;D &#x2014; down</a:subject><a:severity>Low</a:severity></a:alert>
  <a:alert><a:subject><![CDATA[<b>raw</b>]]></a:subject><a:labels/><a:body/></a:alert>
</a:alerts>"#;
    let alerts = parse_default(doc.as_bytes()).expect("valid");
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].subject, "R&D \u{2014} down");
    assert_eq!(alerts[0].severity, Severity::LOW);
    assert_eq!(alerts[1].subject, "<b>raw</b>");
    assert_eq!(alerts[1].severity, Severity::NORMAL);
    let plain = parse_default(b"<alert><subject>no namespace</subject></alert>").expect("valid");
    assert_eq!(plain[0].subject, "no namespace");
}

#[test]
fn status_resolved_or_firing() {
    let doc = "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>x</subject>\
        <dedup-key>db01-disk</dedup-key><status> Resolved </status></alert>";
    let a = parse_default(doc.as_bytes()).expect("valid");
    assert_eq!(a[0].status(), AlertStatus::Resolved);
    assert_eq!(a[0].dedup_key.as_deref(), Some("db01-disk"));
    let a = parse_default(b"<alert><subject>x</subject><status>firing</status></alert>").unwrap();
    assert_eq!(a[0].status(), AlertStatus::Firing);
    assert!(a[0].attributes.is_empty());
    assert_eq!(
        err("<alert><subject>x</subject><status/></alert>"),
        "`status` at line 1 column 37: unknown status \"\", expected firing or resolved"
    );
}

fn err(doc: &str) -> String {
    parse_default(doc.as_bytes()).expect_err(doc).to_string()
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
        err("<alert><subject>x</subject><x:extra xmlns:x=\"urn:other\"/></alert>"),
        "`namespace` at line 1 column 58: <extra> is not in namespace urn:alertbridge:alert:1"
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
        err("<alert><labels><label name=\"\">v</label></labels><subject>x</subject></alert>"),
        "`label` at line 1 column 31: attribute `name` must not be empty"
    );
    assert_eq!(
        err("<alert><subject>x</subject><recipients><group> </group></recipients></alert>"),
        "`group` at line 1 column 56: group names must not be empty"
    );
    assert_eq!(
        err("<alert><subject>x</subject><recipients><user/></recipients></alert>"),
        "`user` at line 1 column 47: user names must not be empty"
    );
    assert_eq!(
        err("<alert><subject>x</subject><expires/></alert>"),
        "`expires` at line 1 column 38: \"\" is not an RFC 3339 timestamp (the 'year' component could not be parsed)"
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
    assert_eq!(err("<alerts></alerts>"), "<alerts> holds no <alert>");
    assert!(
        parse_default(b"<alert><subject>\xff</subject></alert>")
            .unwrap_err()
            .to_string()
            .starts_with("invalid XML at line 1 column 17: the body is not UTF-8")
    );
}

#[test]
fn other_documents_are_not_alerts() {
    for (doc, text) in [
        (
            "<alert xmlns=\"urn:other\"><subject>x</subject></alert>",
            "`namespace` at line 1 column 26: <alert> is not in namespace urn:alertbridge:alert:1",
        ),
        (
            "<html><body>hi</body></html>",
            "`html` at line 1 column 7: expected <alert> or <alerts> as the root element",
        ),
        (" ", "the body holds no XML element"),
        ("<!-- nothing -->", "the body holds no XML element"),
    ] {
        let e = parse_default(doc.as_bytes()).unwrap_err();
        assert!(matches!(e, FormatError::NotAnAlert(_)), "{doc}: {e:?}");
        assert_eq!(e.to_string(), text);
    }
    // A refused alert document is an error, not "some other document".
    for doc in [
        "<!DOCTYPE alert><alert><subject>x</subject></alert>",
        "<alert><subject>x</subject><severity>bad</severity></alert>",
        "<alert><subject>x</subject><x:a xmlns:x=\"urn:other\"/></alert>",
        "text<alert/>",
    ] {
        let e = parse_default(doc.as_bytes()).unwrap_err();
        assert!(!matches!(e, FormatError::NotAnAlert(_)), "{doc}: {e:?}");
    }
}

#[test]
fn size_and_depth_are_bounded() {
    let small = Limits {
        max_bytes: 64,
        max_depth: 2,
    };
    let doc = b"<alert><subject>x</subject></alert>";
    assert_eq!(super::parse(doc, None, &small).unwrap()[0].subject, "x");
    let big = format!("<alert><subject>{}</subject></alert>", "x".repeat(64));
    assert_eq!(
        super::parse(big.as_bytes(), None, &small).unwrap_err(),
        FormatError::TooLarge { limit: 64 }
    );
    // The bound is on the bytes received: UTF-16 counts twice.
    let utf16: Vec<u8> = "<alert><subject>x</subject></alert>"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert!(matches!(
        super::parse(&utf16, Some("utf-16le"), &small),
        Err(FormatError::TooLarge { .. })
    ));
    let deep = b"<alert><subject>x</subject><recipients><group>g</group></recipients></alert>";
    assert_eq!(
        super::parse(
            deep,
            None,
            &Limits {
                max_bytes: 1 << 10,
                max_depth: 2
            }
        )
        .unwrap_err()
        .to_string(),
        "`group` at line 1 column 47: nested deeper than 2 elements"
    );
    let nested = format!("<alert>{}", "<a>".repeat(100));
    assert_eq!(err(&nested), "`a` at line 1 column 11: unknown element");
}

#[test]
fn sniffing() {
    assert!(looks_like_xml("\n  <?xml version=\"1.0\"?><alert/>") && looks_like_xml("<alert>"));
    assert!(looks_like_xml(
        "<a:alert xmlns:a=\"urn:alertbridge:alert:1\">"
    ));
    assert!(!looks_like_xml("Disk <full> on db01") && !looks_like_xml("<p>hi</p>"));
}
