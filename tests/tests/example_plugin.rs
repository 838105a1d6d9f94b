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
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository").to_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs cargo on the example crate as its author would, with its own target folder beside
/// the workspace's (so it neither waits for the workspace's lock nor rebuilds every run).
fn cargo_on_example(args: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = repo().join("examples/hello-plugin/Cargo.toml");
    let target = bin_dir().parent().expect("target/<profile>").join("hello-plugin");
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
    let file = bin_dir().parent().expect("target/<profile>").join("hello-plugin/debug/libalertbridge_hello.so");
    assert!(file.exists(), "{} is missing after the build", file.display());
    file
}

fn alertbridge(args: &[&str], config: Option<&Path>) -> Output {
    let mut cmd = Command::new(bin_dir().join("alertbridge"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.output().expect("run alertbridge")
}

#[test]
fn example_plugin_unit_tests_pass_outside_the_workspace() {
    let out = cargo_on_example(&["test"]);
    let t = text(&out);
    assert!(t.contains("test result: ok.") && !t.contains("ok. 0 passed"), "the example's own tests (with testing::TestHost) ran:\n{t}");
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
    fs::copy(plugin_file("test_source"), plugins.join("libalertbridge_test_source.so")).unwrap();

    let out = alertbridge(&["plugins", "--dir", &plugins.display().to_string()], None);
    let listing = text(&out);
    assert!(out.status.success(), "{listing}");
    assert!(listing.contains("libalertbridge_hello.so  hello 0.1.0 (api 0.1.0): source heartbeat, sink hello-file"), "{listing}");

    let (admin, control) = (free_port(), free_port());
    let config = e2e_config(dir.path(), &plugins, admin, control);

    // `check` runs the plugin's constructor; its `config_error` points at the line.
    let bad = config.replace("interval_ms = 300", "interval_ms = 5");
    let bad_path = dir.path().join("bad.toml");
    fs::write(&bad_path, &bad).unwrap();
    let out = alertbridge(&["check"], Some(&bad_path));
    let line = bad.lines().position(|l| l.starts_with("interval_ms = 5")).unwrap() + 1;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(format!("{}:{line}:1: instance `beat`: must be at least 100", bad_path.display()).as_str()),
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
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["ids"][0].as_u64().expect("an alert id");

    let path = format!("/api/v1/alerts/{id}");
    wait_until("the alert to be finished", LONG, || host.api(&path)["state"] == "finished");
    let alert = host.api(&path);
    let outcomes: Vec<String> = alert["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}={}", r["user"].as_str().unwrap_or(""), r["outcome"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(outcomes, ["sip:alice@contoso.com=delivered", "sip:bob@contoso.com=skipped"], "{alert}");

    let log_file = dir.path().join("im.log");
    let lines = || fs::read_to_string(&log_file).unwrap_or_default();
    let uid = alert["uid"].as_str().expect("the alert's uid").to_owned();
    assert!(
        lines().lines().any(|l| l.starts_with(&format!("{uid}\tsip:alice@contoso.com\tnormal\tDisk full 0\t"))),
        "the sink wrote the message, keyed by the alert_uid attribute:\n{}",
        lines()
    );
    wait_until("two heartbeats written", LONG, || lines().matches("\tsip:noc@contoso.com\tlow\tHeartbeat from beat\t").count() >= 2);

    // The host polls health twice a second; the heartbeat reports `starting` until its first beat.
    wait_until("every instance healthy", LONG, || host.api("/healthz")["status"] == "ok");
    assert!(host.stop(), "SIGTERM stops the plugin's instances cleanly; log:\n{}", host.log());
    let log = host.log();
    for needle in ["plugin::im::alertbridge_hello::file_sink", "Message written.", "plugin::beat::alertbridge_hello::heartbeat", "Beat queued."] {
        assert!(log.contains(needle), "the plugin's tracing events reach the host's log ({needle}):\n{log}");
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
    let all = |key: &str| -> Vec<&str> { settings.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect() };
    let last = |key: &str| all(key).last().copied().unwrap_or_else(|| panic!("[Service] has no {key}="));
    let yes = |key: &str| assert!(["yes", "true", "on", "1"].contains(&last(key)), "{key}= must be yes, is {}", last(key));

    assert_eq!(last("ExecStart"), "/usr/bin/alertbridge run --config /etc/alertbridge/alertbridge.toml");
    assert_eq!(last("ExecReload"), "/bin/kill -HUP $MAINPID", "the host reloads on SIGHUP");
    assert_eq!(last("Restart"), "on-failure");
    assert_eq!(last("User"), "alertbridge", "a dedicated user");
    yes("DynamicUser");
    assert_eq!(last("StateDirectory"), "alertbridge");
    assert_eq!(last("ProtectSystem"), "strict");
    yes("ProtectHome");
    yes("NoNewPrivileges");
    yes("PrivateTmp");
    assert_eq!(all("CapabilityBoundingSet"), [""], "no capabilities: CapabilityBoundingSet= empty");
    let families: Vec<&str> = last("RestrictAddressFamilies").split_whitespace().collect();
    assert!(!families.is_empty() && families.iter().all(|f| ["AF_INET", "AF_INET6", "AF_UNIX"].contains(f)), "{families:?}");
    assert!(all("ReadWritePaths").iter().all(|p| p.starts_with("/var/lib/alertbridge")), "writable: the state folder only");

    // systemd's own reading, where it is installed: no warning about any line, and a low
    // exposure score. The binary paths must exist for `verify`, so they point at this build.
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: checked the unit's settings only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("alertbridge.service");
    fs::write(&copy, unit.replace("/usr/bin/alertbridge", &bin_dir().join("alertbridge").display().to_string())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let said = text(&out);
    assert!(out.status.success() && !said.contains("alertbridge.service"), "systemd-analyze verify:\n{said}");
    // Exposure is 0.0 (best) to 10.0; --threshold is in tenths. 2.0 is "OK"; the unit scores 1.2.
    let out = Command::new("systemd-analyze").args(["security", "--offline=yes", "--threshold=20"]).arg(&copy).output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "systemd-analyze security: exposure above 2.0:\n{said}");
}
