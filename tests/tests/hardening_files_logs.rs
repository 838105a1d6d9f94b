//! Issue 11 §6, replayed with the real binary: an alert's text (through the webhook, into the
//! host's own log) and a mail's subject (through real Dovecot and the pop3 plugin's log, which
//! the host re-emits) cannot forge a log line or carry a terminal escape; the data folder is
//! 0700 and the queue file 0600 even under `umask 000`; the demo works in a fresh private
//! folder with an unpredictable name.
//!
//! The mail test needs Dovecot (`scripts/dovecot.sh env DIR`, as `scripts/test` runs it).

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use alertbridge_testbed::{
    dovecot::{Mailbox, dovecot},
    harness::{Host, bin_dir, build_dir, free_port, get, request, wait_until},
};

const LONG: Duration = Duration::from_secs(60);
const TOKEN: &str = "hardening-token";
/// What a forged line would start with: a timestamp and a level, as the host writes them.
const FORGED: &str = "2026-12-07T09:00:00.000000Z ERROR alertbridge::admin: FORGED";

/// The log must hold the forged text only escaped, inside the real line, and no ESC at all.
fn assert_not_forged(log: &str, escaped_fragment: &str) {
    assert!(
        !log.lines().any(|l| l.starts_with(FORGED)),
        "a log line was forged:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "an escape sequence reached the log:\n{log:?}"
    );
    assert!(
        log.lines().any(|l| l.contains(escaped_fragment)),
        "the text is not in the log, escaped ({escaped_fragment}):\n{log}"
    );
}

fn webhook_config(dir: &Path, admin: u16, hook: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{d}/tokens"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@x"]

[[route]]
name = "critical-only"
match = {{ severity = ">=critical" }}
groups = ["ops"]
sinks = ["sink"]
"#
    )
}

#[test]
fn alert_text_cannot_forge_a_host_log_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let (admin, hook) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &webhook_config(dir.path(), admin, hook));
    // No route takes a normal alert, so the host logs it with its subject.
    let subject = format!("disk full\n{FORGED} admin password reset\x1b[2J\x1b]0;owned\x07");
    let body = serde_json::json!({ "subject": subject }).to_string();
    let url = format!("http://127.0.0.1:{hook}/api/v1/alerts");
    let auth = format!("Bearer {TOKEN}");
    let mut answer = None;
    wait_until("the webhook", LONG, || {
        answer = request(
            "POST",
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        );
        answer.is_some()
    });
    assert_eq!(answer.unwrap().0, 202);
    wait_until("the no-route warning", LONG, || {
        host.log().contains("No route matched")
    });
    assert_not_forged(
        &host.log(),
        &format!("disk full\\n{FORGED} admin password reset\\u{{1b}}[2J\\u{{1b}}]0;owned\\u{{7}}"),
    );
}

/// A plugin's own log record: the webhook logs (at debug) why it refused a request, and serde
/// quotes an unknown JSON key raw — newline included. The host re-emits the record escaped.
#[test]
fn a_plugin_log_record_cannot_forge_a_host_log_line() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let (admin, hook) = (free_port(), free_port());
    let config = dir.path().join("alertbridge.toml");
    fs::write(&config, webhook_config(dir.path(), admin, hook)).unwrap();
    let log = dir.path().join("host.log");
    let mut child = Command::new(bin_dir().join("alertbridge"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info,plugin::hook=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("run alertbridge");
    let key = format!("x\n{FORGED} from a plugin\r\x1b[2J");
    let body = format!("{{\"subject\": \"s\", {}: 1}}", serde_json::json!(key));
    let url = format!("http://127.0.0.1:{hook}/api/v1/alerts");
    let auth = format!("Bearer {TOKEN}");
    let mut answer = None;
    for _ in 0..600 {
        answer = request(
            "POST",
            &url,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            &body,
        );
        if answer.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = || fs::read_to_string(&log).unwrap_or_default();
    let refused = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        text().contains("Request refused.")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.map(|a| a.0), Some(400), "{}", text());
    assert!(refused, "no refusal logged:\n{}", text());
    assert_not_forged(
        &text(),
        &format!("x\\n{FORGED} from a plugin\\r\\u{{1b}}[2J"),
    );
}

#[test]
fn a_mail_subject_cannot_forge_a_line_through_a_plugin_log() {
    let Some(env) = dovecot() else { return };
    let user = format!("hardening{}", std::process::id());
    // RFC 2047 lets a subject carry any byte: a newline, a forged line, an escape sequence.
    let subject = format!("disk full\r{FORGED} via pop3\x0b\x1b[31m");
    let encoded = base64(subject.as_bytes());
    let mail = format!(
        "From: Mallory <mallory@evil.test>\r\nTo: {user}@example.test\r\nSubject: =?utf-8?b?{encoded}?=\r\nMessage-ID: <hardening-{user}@evil.test>\r\n\r\nhello\r\n"
    );
    let mailbox = Mailbox::create(&env, &user);
    mailbox.deliver("hardening", &mail);
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let d = dir.path().display();
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{server}"
tls = "none"
username = "{user}"
password = "{user}pass"
state_dir = "{d}/pop3-state"
allowed_senders = ["ops@example.test"]

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@x"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        server = env.addr
    );
    let host = Host::start(dir.path(), admin, &config);
    // The plugin logs the refused mail with its subject; the host re-emits that record. (The
    // mail parser already turns CR, LF and VT into spaces; the ESC reaches the log.)
    wait_until("the pop3 plugin's warning", LONG, || {
        host.log().contains("not in allowed_senders")
    });
    assert_not_forged(&host.log(), &format!("{FORGED} via pop3"));
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn data_dir_and_queue_file_are_private_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("tokens"), format!("{TOKEN}\n")).unwrap();
    let (admin, hook) = (free_port(), free_port());
    let config = dir.path().join("alertbridge.toml");
    fs::write(&config, webhook_config(dir.path(), admin, hook)).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" run --config \"$1\""])
        .arg(bin_dir().join("alertbridge"))
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run alertbridge under umask 000");
    let up = (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        get(&format!("http://127.0.0.1:{admin}/healthz")).is_some()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "alertbridge did not start");
    let data = dir.path().join("data");
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data_dir mode {:o}", mode(&data));
    let mut files = 0;
    for entry in fs::read_dir(&data).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".redb") {
            files += 1;
            assert_eq!(
                mode(&entry.path()),
                0o600,
                "{name} mode {:o}",
                mode(&entry.path())
            );
        }
    }
    assert!(files >= 1, "no queue file in {}", data.display());
}

#[test]
fn the_demo_works_in_a_fresh_private_folder() {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (admin, webhook) = (free_port(), free_port());
        // The demo as an operator runs it: from the build folder, its simulators beside it.
        let mut child = Command::new(build_dir().join("alertbridge"))
            .args(["demo", "--admin-port", &admin.to_string()])
            .args(["--webhook-port", &webhook.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut sims = Vec::new();
        let config = stdout.lines().map_while(Result::ok).find_map(|l| {
            if l.contains("simulator")
                && let Some(addr) = l.split("http://").nth(1).and_then(|a| a.split('/').next())
            {
                sims.push(addr.to_owned());
            }
            l.trim_start()
                .strip_prefix("config")
                .map(|p| PathBuf::from(p.trim()))
        });
        // Ctrl-C while the demo is still coming up (it has more to do after naming its config).
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        assert_eq!(sims.len(), 2, "the demo names its two simulators");
        for addr in sims {
            assert!(
                std::net::TcpStream::connect(&addr).is_err(),
                "simulator {addr} still listens after a Ctrl-C while the demo came up"
            );
        }
        let folder = config
            .expect("the demo names its config")
            .parent()
            .unwrap()
            .to_owned();
        let meta = fs::metadata(&folder).unwrap();
        assert_eq!(
            meta.mode() & 0o777,
            0o700,
            "{} is not private",
            folder.display()
        );
        let name = folder.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains(&child.id().to_string()),
            "{name}: named after the process id, which anyone can predict"
        );
        seen.push(folder);
    }
    assert_ne!(seen[0], seen[1]);
    for folder in seen {
        let _ = fs::remove_dir_all(folder);
    }
}
