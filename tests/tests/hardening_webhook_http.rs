//! Issue 11 §6, webhook: plain HTTP on a non-loopback address is allowed but `alertbridge check`
//! warns about it (bearer tokens and alerts would cross the network in clear text); loopback
//! and HTTPS do not warn; and the shipped example config serves loopback or HTTPS, so it checks
//! without that warning.

use std::{fs, path::Path, process::Command};

use alertbridge_testbed::harness::{bin_dir, free_port};

const WARNING: &str = "Serving plain HTTP on a non-loopback address";

fn config(dir: &Path, listen: &str, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"[host]
data_dir = "{d}/data"

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "{listen}"
tokens_file = "{d}/tokens"
{extra}
[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@x"]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["sink"]
"#
    )
}

fn check(path: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(bin_dir().join("alertbridge"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .output()
        .expect("run alertbridge check");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn write_cert(dir: &Path) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    fs::write(dir.join("key.pem"), key_pair.serialize_pem()).unwrap();
}

#[test]
fn check_warns_about_plain_http_off_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = d.join("alertbridge.toml");
    fs::write(d.join("tokens"), "a-token-for-the-check\n").unwrap();
    let port = free_port();

    fs::write(&path, config(d, &format!("0.0.0.0:{port}"), "")).unwrap();
    let (ok, out) = check(&path, &[]);
    assert!(ok, "plain HTTP off loopback is allowed:\n{out}");
    let warning = out
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning about plain HTTP on 0.0.0.0:\n{out}"));
    assert!(
        warning.contains("WARN") && warning.contains("plugin::hook") && warning.contains("[tls]"),
        "{warning}"
    );

    fs::write(&path, config(d, &format!("127.0.0.1:{port}"), "")).unwrap();
    let (ok, out) = check(&path, &[]);
    assert!(ok && !out.contains(WARNING), "loopback warned:\n{out}");

    write_cert(d);
    let tls = format!(
        "[source.config.tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n",
        d.display()
    );
    fs::write(&path, config(d, &format!("0.0.0.0:{port}"), &tls)).unwrap();
    let (ok, out) = check(&path, &[]);
    assert!(ok && !out.contains(WARNING), "HTTPS warned:\n{out}");
}

#[test]
fn the_shipped_example_config_does_not_serve_plain_http_off_loopback() {
    // The repository's copy, wherever the target folder is (CARGO_TARGET_DIR may be elsewhere).
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/alertbridge.example.toml");
    let (ok, out) = check(
        &example,
        &[
            ("ALERTBRIDGE_POP3_PASSWORD", "x"),
            ("ALERTBRIDGE_WEBHOOK_TOKENS", "x"),
            ("ALERTBRIDGE_UCWA_PASSWORD", "x"),
            ("ALERTBRIDGE_UCMA_SECRET", "0123456789abcdef"),
            ("ALERTBRIDGE_ADMIN_TOKEN", "0123456789abcdef0123"),
        ],
    );
    assert!(ok, "{out}");
    assert!(!out.contains(WARNING), "{out}");
    // And by its text: every webhook block listens on loopback or configures TLS.
    let text = fs::read_to_string(&example).unwrap();
    let blocks: Vec<&str> = text
        .split("\n[[")
        .filter(|b| b.contains("plugin = \"webhook\""))
        .collect();
    assert!(!blocks.is_empty(), "no webhook block in the example");
    for block in blocks {
        let listen = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = "))
            .expect("the webhook block sets listen");
        let tls = block
            .lines()
            .any(|l| l.trim_start().starts_with("[source.config.tls]"));
        assert!(
            listen.starts_with("\"127.") || listen.starts_with("\"[::1]") || tls,
            "the example webhook serves plain HTTP on {listen}"
        );
    }
}
