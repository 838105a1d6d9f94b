//! Golden files of the alert format (`docs/alert-format.md`): every document in
//! `tests/alert-format/` is parsed as its form says (by the file's extension, with the charset
//! named by a `.charset-NAME` part of its name as the transport's parameter), and what comes out
//! (the alerts field by field, or the error) must equal the `.out` file beside it.
//!
//! `ALERTBRIDGE_UPDATE_GOLDEN=1 cargo test -p alertbridge-plugin-api --test alert_format_golden`
//! rewrites the `.out` files; review the diff before committing it.

use std::{fmt::Write as _, path::Path};

use alertbridge_plugin_api::{
    Alert,
    kit::format::{self, FormatError, Limits},
};

fn render(result: &Result<Vec<Alert>, FormatError>) -> String {
    let mut out = String::new();
    match result {
        Ok(alerts) => {
            for (i, a) in alerts.iter().enumerate() {
                let _ = writeln!(out, "alert {i}");
                let _ = writeln!(out, "  subject: {:?}", a.subject);
                let _ = writeln!(out, "  body: {:?}", a.body);
                let _ = writeln!(out, "  severity: {}", a.severity);
                let _ = writeln!(out, "  groups: {:?}", a.groups);
                let _ = writeln!(out, "  users: {:?}", a.users);
                let _ = writeln!(out, "  labels: {:?}", a.labels);
                let _ = writeln!(out, "  dedup_key: {:?}", a.dedup_key);
                let expires = a.expires_unix_ms.map(format::unix_ms_rfc3339);
                let _ = writeln!(out, "  expires: {expires:?} ({:?} ms)", a.expires_unix_ms);
                let _ = writeln!(out, "  status: {}", a.status());
            }
        }
        Err(e) => {
            let kind = match e {
                FormatError::NotAnAlert(_) => "not an alert",
                _ => "error",
            };
            let _ = writeln!(out, "{kind}: {e}");
        }
    }
    out
}

#[test]
fn every_golden_document_parses_as_recorded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alert-format");
    let update = std::env::var_os("ALERTBRIDGE_UPDATE_GOLDEN").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .expect("the golden folder")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml" || e == "json"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "golden documents missing in {dir:?}");
    let mut mismatches = Vec::new();
    for path in &paths {
        let bytes = std::fs::read(path).expect("a golden document");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let charset = name.split('.').find_map(|p| p.strip_prefix("charset-"));
        let result = if name.ends_with(".json") {
            format::json::parse(&bytes, &Limits::DEFAULT)
        } else {
            format::xml::parse(&bytes, charset, &Limits::DEFAULT)
        };
        // The form is found from the bytes as well (`alertbridge route` relies on it).
        assert_eq!(
            format::parse(&bytes, charset, &Limits::DEFAULT),
            result,
            "{name}: sniffed differently"
        );
        let got = render(&result);
        let out = path.with_extension(format!(
            "{}.out",
            path.extension().unwrap().to_string_lossy()
        ));
        if update {
            std::fs::write(&out, &got).expect("write the golden output");
            continue;
        }
        let want = std::fs::read_to_string(&out).unwrap_or_default();
        if want != got {
            mismatches.push(format!("{name}:\n--- want\n{want}--- got\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The two forms of the same alert are the same alert.
#[test]
fn the_xml_and_json_twins_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alert-format");
    for twin in ["spec-example", "minimal", "resolved"] {
        let xml = std::fs::read(dir.join(format!("{twin}.xml"))).unwrap();
        let json = std::fs::read(dir.join(format!("{twin}.json"))).unwrap();
        assert_eq!(
            format::xml::parse(&xml, None, &Limits::DEFAULT).unwrap(),
            format::json::parse(&json, &Limits::DEFAULT).unwrap(),
            "{twin}"
        );
    }
}
