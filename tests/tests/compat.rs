//! The plugin API 1.x promise, proven with plugin files built outside the workspace
//! (`tests/compat/`, each with its own Cargo.lock, built here with `cargo build --locked`):
//!
//! - `api-1.0`: a source and a sink built against a FROZEN COPY of the 1.0 interface load into
//!   today's host and run end to end (submit → route → presence → deliver), listed and checked;
//! - `api-1.1-preview`: a plugin built against a newer minor (tables grown after their last
//!   prefix field) loads too, runs without its newer capabilities, and is logged as such;
//! - `api-2.0-preview`: another major is refused in one line naming both versions.
//!
//! That today's interface types keep the frozen 1.0 layouts is checked where they live, by
//! `plugin-abi/tests/frozen_1_0.rs`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use alertbridge_plugin_api::API_VERSION;
use alertbridge_testbed::harness::{Host, bin_dir, free_port, wait_until};

const LONG: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_owned()
}

/// Builds one compat workspace (`tests/compat/<name>`) as its author would, `--locked`, into
/// one target folder the compat fixtures share beside the workspace's (no wait for the
/// workspace's lock, no rebuild when nothing changed), and returns its output folder.
fn build(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = repo().join("tests/compat").join(name).join("Cargo.toml");
    let target = bin_dir().parent().expect("target/<profile>").join("compat");
    let out = Command::new(&cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --locked on {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug")
}

/// A compat plugin file, built.
fn fixture(workspace: &str, lib: &str) -> PathBuf {
    let file = build(workspace).join(format!("lib{lib}.so"));
    assert!(
        file.exists(),
        "{} is missing after the build",
        file.display()
    );
    file
}

/// A plugin folder holding the three compat plugin files.
fn plugin_dir(dir: &Path) -> PathBuf {
    let plugins = dir.join("plugins");
    fs::create_dir(&plugins).unwrap();
    for (workspace, lib) in [
        ("api-1.0", "alertbridge_compat_v1_0"),
        ("api-1.1-preview", "alertbridge_compat_v1_1"),
        ("api-2.0-preview", "alertbridge_compat_v2_0"),
    ] {
        fs::copy(
            fixture(workspace, lib),
            plugins.join(format!("lib{lib}.so")),
        )
        .unwrap();
    }
    plugins
}

fn alertbridge(args: &[&str], extra: &Path) -> (bool, String) {
    let out = Command::new(bin_dir().join("alertbridge"))
        .args(args)
        .arg(extra)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Two sources and two sinks, one of each per API version, wired across: the 1.0 source's
/// alert goes out through the 1.1 sink and the 1.1 source's through the 1.0 sink.
fn config(dir: &Path, plugins: &Path, admin: u16) -> String {
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
name = "old"
plugin = "compat-source"
[source.config]
subject = "Disk full"
body = "var at 98%"
severity = "critical"
dedup_key = "compat-old"

[[source]]
name = "new"
plugin = "preview-source"
[source.config]
subject = "Backup late"
severity = "high"
dedup_key = "compat-new"

[[sink]]
name = "im-old"
plugin = "compat-sink"
[sink.config]
out_file = "{d}/im-old.log"
offline = "sip:bob@contoso.com"

[[sink]]
name = "im-new"
plugin = "preview-sink"
[sink.config]
out_file = "{d}/im-new.log"
offline = "sip:bob@contoso.com"

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com"]

[[route]]
name = "from-old"
match = {{ source = "old" }}
groups = ["ops"]
sinks = ["im-new"]
offline = {{ policy = "skip" }}

[[route]]
name = "from-new"
match = {{ source = "new" }}
groups = ["ops"]
sinks = ["im-old"]
offline = {{ policy = "skip" }}
"#,
        plugins = plugins.display()
    )
}

#[test]
fn plugins_built_against_api_1_0_and_a_newer_1_1_run_end_to_end_in_todays_host() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(dir.path());

    let (ok, listing) = alertbridge(&["plugins", "--dir"], &plugins);
    assert!(ok, "{listing}");
    let major = API_VERSION.split('.').next().unwrap();
    for line in [
        "  libalertbridge_compat_v1_0.so  compat-v1-0 0.1.0 (api 1.0.0): source compat-source, sink compat-sink".to_owned(),
        "  libalertbridge_compat_v1_1.so  compat-v1-1 0.1.0 (api 1.1.0): source preview-source, sink preview-sink".to_owned(),
        format!("  libalertbridge_compat_v2_0.so  refused: built against plugin API 2.0.0, this host speaks {API_VERSION}: rebuild the plugin with this release"),
    ] {
        assert!(
            listing.lines().any(|l| l == line),
            "missing {line:?} in:\n{listing}"
        );
    }
    assert_eq!(major, "1", "this test is about the 1.x promise");

    let admin = free_port();
    let config = config(dir.path(), &plugins, admin);

    // A 1.0 plugin's config error carries its key as data: `check` points at the line.
    let bad = config.replace("severity = \"critical\"", "severity = \"urgent\"");
    let bad_path = dir.path().join("bad.toml");
    fs::write(&bad_path, &bad).unwrap();
    let (ok, said) = alertbridge(&["check", "--config"], &bad_path);
    let line = bad
        .lines()
        .position(|l| l == "severity = \"urgent\"")
        .unwrap()
        + 1;
    assert!(!ok, "{said}");
    assert_eq!(
        said.lines().next(),
        Some(
            format!(
                "{}:{line}:1: instance `old`: unknown severity `urgent`",
                bad_path.display()
            )
            .as_str()
        ),
        "{said}"
    );

    let mut host = Host::start(dir.path(), admin, &config);
    let finished = |host: &Host| {
        let all = host.api("/api/v1/alerts");
        let alerts = all["alerts"].as_array().cloned().unwrap_or_default();
        (alerts.len() == 2 && alerts.iter().all(|a| a["state"] == "finished")).then_some(alerts)
    };
    wait_until("both alerts finished", LONG, || finished(&host).is_some());
    let mut outcomes: Vec<String> = finished(&host)
        .unwrap()
        .iter()
        .flat_map(|a| {
            let subject = a["alert"]["subject"].as_str().unwrap_or("").to_owned();
            a["recipients"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |r| {
                    format!(
                        "{subject}: {} {}={}",
                        r["sink"].as_str().unwrap_or("?"),
                        r["user"].as_str().unwrap_or(""),
                        r["outcome"].as_str().unwrap_or("")
                    )
                })
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "Backup late: im-old sip:alice@contoso.com=delivered",
            "Backup late: im-old sip:bob@contoso.com=skipped",
            "Disk full: im-new sip:alice@contoso.com=delivered",
            "Disk full: im-new sip:bob@contoso.com=skipped",
        ],
        "presence from each sink decided who got the IM"
    );

    // The IMs as each sink wrote them: the 1.0 sink delivered the 1.1 source's alert and the
    // 1.1 sink the 1.0 source's, with the fields as submitted.
    let read = |f: &str| fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert_eq!(
        read("im-old.log"),
        "api 1.0.0\tnew\tsip:alice@contoso.com\thigh\tBackup late\t\n"
    );
    assert_eq!(
        read("im-new.log"),
        "api 1.1.0\told\tsip:alice@contoso.com\tcritical\tDisk full\tvar at 98%\n"
    );

    wait_until("every instance healthy", LONG, || {
        host.api("/healthz")["status"] == "ok"
    });
    assert!(host.stop(), "a clean stop; log:\n{}", host.log());
    let log = host.log();
    for needle in [
        // Both plugins' logs reach the host's, under the instance.
        "plugin::old::alertbridge_compat_v1_0",
        "Submitted alert 1 (duplicate: false).",
        "plugin::new::alertbridge_compat_v1_1",
        // The 1.1 plugin asked for its newer capabilities and carried on without them.
        "Host capabilities: 0 listed.",
        "Capability replies/1: absent.",
        // The loader said so at info.
        "Plugin built for a newer plugin API; it runs without the capabilities added after this host's.",
        "plugin_api=1.1.0",
    ] {
        assert!(
            log.contains(needle),
            "missing {needle:?} in the log:\n{log}"
        );
    }
}
