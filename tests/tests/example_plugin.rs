//! What plugin authors and packagers are given: the example third-party plugin
//! (`examples/hello-plugin`, built outside the workspace, loaded and run by the real host),
//! the systemd unit (`packaging/alertbridge.service`), and the documented example config
//! (`examples/config/alertbridge.example.toml`: checked clean, and covering every option).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use alertbridge_testbed::harness::{Host, bin_dir, free_port, plugin_file, post, wait_until};

const LONG: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs cargo on the example crate as its author would, with its own target folder beside
/// the workspace's (so it neither waits for the workspace's lock nor rebuilds every run).
fn cargo_on_example(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = repo().join("examples/hello-plugin/Cargo.toml");
    let target = bin_dir()
        .parent()
        .expect("target/<profile>")
        .join("hello-plugin");
    let out = Command::new(&cargo)
        .args(args)
        .arg("--locked")
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo {} on {} failed (if Cargo.lock is stale, run the command without --locked once and commit it):\n{}",
        args.join(" "),
        manifest.display(),
        text(&out)
    );
    out
}

/// Builds the example plugin and returns its file.
fn example_plugin() -> PathBuf {
    cargo_on_example(&["build"]);
    let file = bin_dir()
        .parent()
        .expect("target/<profile>")
        .join("hello-plugin/debug/libalertbridge_hello.so");
    assert!(
        file.exists(),
        "{} is missing after the build",
        file.display()
    );
    file
}

/// The workspace's `alertbridge` binary.
fn alertbridge() -> Command {
    Command::new(bin_dir().join("alertbridge"))
}

#[test]
fn example_plugin_unit_tests_pass_outside_the_workspace() {
    let out = cargo_on_example(&["test"]);
    let t = text(&out);
    assert!(
        t.contains("test result: ok.") && !t.contains("ok. 0 passed"),
        "the example's own tests (with testing::TestHost) ran:\n{t}"
    );
}

/// The config of the end-to-end test: test-source and heartbeat in, hello-file out.
fn e2e_config(dir: &Path, plugins: &Path, admin: u16, control: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
plugin_dir = "{plugins}"
admin_listen = "127.0.0.1:{admin}"

[delivery]
presence_cache_ms = 0
retry_initial_ms = 100

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[source]]
name = "beat"
plugin = "heartbeat"
[source.config]
interval_ms = 300
severity = "low"

[[sink]]
name = "im"
plugin = "hello-file"
[sink.config]
path = "{d}/im.log"
presence = {{ "sip:bob@contoso.com" = "offline" }}

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com"]

[[route]]
name = "beats"
match = {{ labels = {{ heartbeat = "beat" }} }}
users = ["sip:noc@contoso.com"]
sinks = ["im"]

[[route]]
name = "ops"
groups = ["ops"]
sinks = ["im"]
offline = {{ policy = "skip" }}
"#,
        plugins = plugins.display()
    )
}

#[test]
fn example_plugin_is_listed_checked_and_delivers_through_the_real_host() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    fs::copy(example_plugin(), plugins.join("libalertbridge_hello.so")).unwrap();
    fs::copy(
        plugin_file("test_source"),
        plugins.join("libalertbridge_test_source.so"),
    )
    .unwrap();

    let out = alertbridge()
        .arg("plugins")
        .arg("--dir")
        .arg(&plugins)
        .output()
        .unwrap();
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(
        listing.contains(
            "libalertbridge_hello.so  hello 0.1.0 (api 1.0.0): source heartbeat, sink hello-file"
        ),
        "{listing}"
    );

    let (admin, control) = (free_port(), free_port());
    let config = e2e_config(dir.path(), &plugins, admin, control);

    // `check` runs the plugin's constructor; its `config_error` points at the line.
    let bad = config.replace("interval_ms = 300", "interval_ms = 5");
    let bad_path = dir.path().join("bad.toml");
    fs::write(&bad_path, &bad).unwrap();
    let out = alertbridge()
        .arg("check")
        .arg("--config")
        .arg(&bad_path)
        .output()
        .unwrap();
    let line = bad
        .lines()
        .position(|l| l.starts_with("interval_ms = 5"))
        .unwrap()
        + 1;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(
            format!(
                "{}:{line}:1: instance `beat`: must be at least 100",
                bad_path.display()
            )
            .as_str()
        ),
        "{}",
        text(&out)
    );

    let mut host = Host::start(dir.path(), admin, &config);
    let url = format!("http://127.0.0.1:{control}/emit?count=1&prefix=e2e&subject=Disk+full");
    let mut answer = None;
    wait_until("the test source's control port", LONG, || {
        answer = post(&url);
        answer.is_some()
    });
    let (status, body) = answer.unwrap_or_default();
    assert_eq!(status, 200, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ids"][0]
        .as_u64()
        .expect("an alert id");

    let path = format!("/api/v1/alerts/{id}");
    wait_until("the alert to be finished", LONG, || {
        host.api(&path)["state"] == "finished"
    });
    let alert = host.api(&path);
    let outcomes: Vec<String> = alert["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}={}",
                r["user"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "sip:alice@contoso.com=delivered",
            "sip:bob@contoso.com=skipped"
        ],
        "{alert}"
    );

    let log_file = dir.path().join("im.log");
    let lines = || fs::read_to_string(&log_file).unwrap_or_default();
    let uid = alert["uid"].as_str().expect("the alert's uid").to_owned();
    assert!(
        lines().lines().any(|l| l.starts_with(&format!(
            "{uid}\tsip:alice@contoso.com\tnormal\tDisk full 0\t"
        ))),
        "the sink wrote the message, keyed by the alert_uid attribute:\n{}",
        lines()
    );
    wait_until("two heartbeats written", LONG, || {
        lines()
            .matches("\tsip:noc@contoso.com\tlow\tHeartbeat from beat\t")
            .count()
            >= 2
    });

    // The host polls health twice a second; the heartbeat reports `starting` until its first beat.
    wait_until("every instance healthy", LONG, || {
        host.api("/healthz")["status"] == "ok"
    });
    assert!(
        host.stop(),
        "SIGTERM stops the plugin's instances cleanly; log:\n{}",
        host.log()
    );
    let log = host.log();
    for needle in [
        "plugin::im::alertbridge_hello::file_sink",
        "Message written.",
        "plugin::beat::alertbridge_hello::heartbeat",
        "Beat queued.",
    ] {
        assert!(
            log.contains(needle),
            "the plugin's tracing events reach the host's log ({needle}):\n{log}"
        );
    }
}

/// The `[Service]` settings of a unit file, in order (a key may repeat).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if section == "Service"
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

#[test]
fn systemd_unit_is_sandboxed_and_systemd_accepts_it() {
    let path = repo().join("packaging/alertbridge.service");
    let unit = fs::read_to_string(&path).unwrap();
    let settings = service_settings(&unit);
    let all = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let last = |key: &str| {
        all(key)
            .last()
            .copied()
            .unwrap_or_else(|| panic!("[Service] has no {key}="))
    };
    let yes = |key: &str| {
        assert!(
            ["yes", "true", "on", "1"].contains(&last(key)),
            "{key}= must be yes, is {}",
            last(key)
        )
    };

    assert_eq!(
        last("ExecStart"),
        "/usr/bin/alertbridge run --config /etc/alertbridge/alertbridge.toml"
    );
    assert_eq!(
        last("ExecReload"),
        "/bin/kill -HUP $MAINPID",
        "the host reloads on SIGHUP"
    );
    assert_eq!(last("Restart"), "on-failure");
    assert_eq!(last("User"), "alertbridge", "a dedicated user");
    yes("DynamicUser");
    assert_eq!(last("StateDirectory"), "alertbridge");
    assert_eq!(last("ProtectSystem"), "strict");
    yes("ProtectHome");
    yes("NoNewPrivileges");
    yes("PrivateTmp");
    assert_eq!(
        all("CapabilityBoundingSet"),
        [""],
        "no capabilities: CapabilityBoundingSet= empty"
    );
    let families: Vec<&str> = last("RestrictAddressFamilies").split_whitespace().collect();
    assert!(
        !families.is_empty()
            && families
                .iter()
                .all(|f| ["AF_INET", "AF_INET6", "AF_UNIX"].contains(f)),
        "{families:?}"
    );
    assert!(
        all("ReadWritePaths")
            .iter()
            .all(|p| p.starts_with("/var/lib/alertbridge")),
        "writable: the state folder only"
    );

    // systemd's own reading, where it is installed: no warning about any line, and a low
    // exposure score. The binary paths must exist for `verify`, so they point at this build.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: checked the unit's settings only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("alertbridge.service");
    fs::write(
        &copy,
        unit.replace(
            "/usr/bin/alertbridge",
            &bin_dir().join("alertbridge").display().to_string(),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        out.status.success() && !said.contains("alertbridge.service"),
        "systemd-analyze verify:\n{said}"
    );
    // Exposure is 0.0 (best) to 10.0; --threshold is in tenths. 2.0 is "OK"; the unit scores 1.2.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze security: exposure above 2.0:\n{said}"
    );
}

const EXAMPLE_CONFIG: &str = "examples/config/alertbridge.example.toml";

/// The secrets the example config reads through `*_env` keys, with dummy values.
const EXAMPLE_SECRETS: [(&str, &str); 4] = [
    ("ALERTBRIDGE_POP3_PASSWORD", "x"),
    ("ALERTBRIDGE_WEBHOOK_TOKENS", "x"),
    ("ALERTBRIDGE_UCWA_PASSWORD", "x"),
    ("ALERTBRIDGE_UCMA_SECRET", "0123456789abcdef"),
];

#[test]
fn example_config_checks_clean_with_the_real_plugins_and_routes_as_documented() {
    let config = repo().join(EXAMPLE_CONFIG);
    let out = alertbridge()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .envs(EXAMPLE_SECRETS)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let alert = dir.path().join("alert.json");
    let json = r#"{"subject": "Disk full on db01", "body": "/var is full", "severity": "critical",
        "labels": {"service": "postgres", "host": "db01.contoso.com", "alertname": "DiskFull"}}"#;
    fs::write(&alert, json).unwrap();
    let out = alertbridge()
        .args(["route", "--source", "monitoring", "--config"])
        .arg(&config)
        .arg("--alert")
        .arg(&alert)
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    for line in [
        "  1. database (continue)",
        "     offline recipients: hold up to 600 s, then send anyway",
        "  2. alertmanager-nodes",
        "  ocs -> sip:carol@contoso.com (route database)",
        "  lync -> sip:alice@contoso.com (route alertmanager-nodes)",
    ] {
        assert!(
            report.lines().any(|l| l == line),
            "missing {line:?} in:\n{report}"
        );
    }
}

/// The config blocks of a TOML text: each top-level table (`[host]`, one `[[source]]`, ...)
/// with its sub-tables, as (header, text).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let top =
            line.starts_with('[') && !line.trim_matches(|c| c == '[' || c == ']').contains('.');
        if top {
            out.push((line.to_owned(), String::new()));
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// True if `key` is set in `block`, in a line or an inline table, or is a sub-table of it;
/// commented out counts (alternatives and optional files are shown that way).
fn mentions(block: &str, key: &str) -> bool {
    block.lines().any(|line| {
        let l = line.trim_start().trim_start_matches('#').trim_start();
        l.starts_with(&format!("{key} ="))
            || l.contains(&format!("{{ {key} ="))
            || l.contains(&format!(", {key} ="))
            || (l.starts_with('[')
                && l.trim_end()
                    .trim_end_matches(']')
                    .ends_with(&format!(".{key}")))
    })
}

/// The serde names of the fields of `pub struct name` in `file`.
fn fields(file: &str, name: &str) -> Vec<String> {
    let src = fs::read_to_string(repo().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let start = src
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("no `pub struct {name}` in {file}"));
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("the struct ends")];
    let mut out = Vec::new();
    let mut rename = None;
    for line in body.lines().skip(1).map(str::trim) {
        if line.starts_with("#[serde(") {
            rename = line
                .split("rename = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
                .or(rename);
        } else if let Some((field, _)) = line.strip_prefix("pub ").and_then(|l| l.split_once(':')) {
            out.push(rename.take().unwrap_or_else(|| field.trim().to_owned()));
        }
    }
    assert!(!out.is_empty(), "no fields found in {name} ({file})");
    out
}

#[test]
fn example_config_covers_every_option() {
    let text = fs::read_to_string(repo().join(EXAMPLE_CONFIG)).unwrap();
    let all = blocks(&text);
    let joined = |pick: &dyn Fn(&str, &str) -> bool| -> String {
        all.iter()
            .filter(|(h, b)| pick(h, b))
            .map(|(_, b)| b.as_str())
            .collect()
    };
    let plugin = |kind: &'static str| {
        move |_: &str, b: &str| b.lines().any(|l| l == format!("plugin = \"{kind}\""))
    };
    let raw = "host/src/config/raw.rs";
    let checks = [
        (
            "[host]",
            joined(&|h, _| h == "[host]"),
            vec![(raw, "RawHost")],
        ),
        (
            "[delivery]",
            joined(&|h, _| h == "[delivery]"),
            vec![(raw, "RawDelivery")],
        ),
        (
            "[queue]",
            joined(&|h, _| h == "[queue]"),
            vec![("host/src/config/queue.rs", "RawQueue")],
        ),
        (
            "[[source]] and [[sink]]",
            joined(&|h, _| h == "[[source]]" || h == "[[sink]]"),
            vec![(raw, "RawInstance")],
        ),
        (
            "[[route]]",
            joined(&|h, _| h == "[[route]]"),
            vec![(raw, "RawRoute"), (raw, "RawMatch"), (raw, "RawOffline")],
        ),
        (
            "the pop3 source",
            joined(&plugin("pop3")),
            vec![("plugins/pop3/src/config.rs", "Pop3Config")],
        ),
        (
            "the webhook source",
            joined(&plugin("webhook")),
            ["WebhookConfig", "TlsConfig", "AlertmanagerConfig"]
                .map(|s| ("plugins/webhook/src/config.rs", s))
                .to_vec(),
        ),
        (
            "the ucwa sink",
            joined(&plugin("ucwa")),
            vec![("plugins/ucwa/src/config.rs", "UcwaConfig")],
        ),
        (
            "the ucma sink",
            joined(&plugin("ucma")),
            vec![("plugins/ucma/src/config.rs", "UcmaConfig")],
        ),
    ];
    let mut missing = Vec::new();
    for (what, block, structs) in &checks {
        assert!(!block.is_empty(), "{EXAMPLE_CONFIG} has no {what}");
        for (file, name) in structs {
            missing.extend(
                fields(file, name)
                    .into_iter()
                    .filter(|f| !mentions(block, f))
                    .map(|f| format!("{what}: `{f}` ({name} in {file})")),
            );
        }
    }
    let routes = &checks[4].1;
    for policy in ["skip", "always", "fallback", "hold"] {
        if !routes
            .lines()
            .any(|l| !l.starts_with('#') && l.contains(&format!("policy = \"{policy}\"")))
        {
            missing.push(format!(
                "[[route]]: no route uses offline policy `{policy}`"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "add these options, with a comment, to {EXAMPLE_CONFIG}:\n  {}",
        missing.join("\n  ")
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The trimmed, non-empty lines of a text.
fn code_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn plugin_guide_snippets_match_the_compiled_code() {
    let guide = fs::read_to_string(repo().join("docs/writing-a-plugin.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&repo().join("examples/hello-plugin/src"), &mut files);
    rust_files(&repo().join("plugin-api/src"), &mut files);
    let sources: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|f| (f.clone(), fs::read_to_string(&f).unwrap()))
        .collect();

    let mut snippets = 0;
    let mut stale = Vec::new();
    let mut rest = guide.as_str();
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + "```rust\n".len()..];
        let end = body.find("```").expect("the snippet is closed");
        let snippet = code_lines(&body[..end]);
        rest = &body[end + 3..];
        snippets += 1;
        // Each snippet's lines appear, in order, in one file (lines may be left out between).
        let found = sources.iter().any(|(_, text)| {
            let mut want = snippet.iter().peekable();
            for line in code_lines(text) {
                if want.peek() == Some(&&line) {
                    want.next();
                }
            }
            want.peek().is_none()
        });
        if !found {
            stale.push(snippet.first().copied().unwrap_or("").to_owned());
        }
    }
    assert!(
        snippets >= 10,
        "found only {snippets} rust snippets in docs/writing-a-plugin.md"
    );
    assert!(
        stale.is_empty(),
        "snippets in docs/writing-a-plugin.md no longer match examples/hello-plugin or plugin-api (first lines):\n  {}",
        stale.join("\n  ")
    );
}
