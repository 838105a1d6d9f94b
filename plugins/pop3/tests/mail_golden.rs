//! Golden files for mail → alert: every `fixtures/mail/NNN.eml` must map to the alert in
//! `NNN.json` beside it. On a mismatch the actual alert is written to `NNN.failed` and the test
//! fails with its path; `ALERTBRIDGE_UPDATE_GOLDEN=1` rewrites the `.json` files instead
//! (review the diff before committing them).

use std::path::Path;

use alertbridge_plugin_api::Alert;
use alertbridge_pop3::mail::{MailOptions, alert_from_mail};
use serde_json::json;

fn alert_json(alert: &Alert) -> serde_json::Value {
    json!({
        "subject": alert.subject,
        "body": alert.body,
        "severity": alert.severity.name(),
        "groups": alert.groups,
        "users": alert.users,
        "labels": alert.labels,
        "dedup_key": alert.dedup_key,
        "expires_unix_ms": alert.expires_unix_ms,
        "attributes": alert.attributes,
    })
}

#[test]
fn mails_map_to_the_expected_alerts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mail");
    let update = std::env::var_os("ALERTBRIDGE_UPDATE_GOLDEN").is_some();
    let options = MailOptions {
        label_headers: vec!["X-Priority".into(), "X-Alert-Severity".into()],
    };
    let mut emls: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    emls.sort();
    let mut failures = Vec::new();
    for eml in &emls {
        let raw = std::fs::read(eml).unwrap_or_else(|e| panic!("read {}: {e}", eml.display()));
        for (variant, bytes) in [("as stored", raw.clone()), ("with CRLF", crlf(&raw))] {
            let actual =
                serde_json::to_string_pretty(&alert_json(&alert_from_mail(&bytes, &options).alert))
                    .expect("serializable")
                    + "\n";
            let expected_path = eml.with_extension("json");
            if update {
                std::fs::write(&expected_path, &actual).expect("write golden file");
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != actual {
                let failed = eml.with_extension("failed");
                std::fs::write(&failed, &actual).expect("write .failed file");
                failures.push(format!(
                    "{} ({variant}): actual alert saved to {}",
                    eml.display(),
                    failed.display()
                ));
            }
        }
    }
    assert!(
        !emls.is_empty(),
        "did not find any .eml fixture in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

/// The message with every bare LF turned into CRLF, as a POP3 server sends it.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
