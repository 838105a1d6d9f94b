//! End-to-end tests of the host with the test plugins, through real loading of real cdylibs:
//! loader refusals, panicking instances restarted, plugin logs, routing and offline policies,
//! retries and dead letters, a sink slow to start, dedup, `check`, and a graceful stop.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{Host, bin_dir, emit, free_port, plugin_file, post, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// A config with the test source (control port) and the test sink, plus `extra` TOML.
fn config(dir: &Path, admin: u16, control: u16, sink_extra: &str, extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 50
retry_max_ms = 200
hold_recheck_ms = 100
presence_cache_ms = 0
max_attempts = 3

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
{sink_extra}

{extra}
"#
    )
}

const OPS: &str = r#"
[groups]
ops = ["sip:alice@x", "sip:bob@x"]
"#;

/// The `ops` group and one route `r` sending everything to it through `sink`.
fn ops_route() -> String {
    format!("{OPS}\n[[route]]\nname = \"r\"\ngroups = [\"ops\"]\nsinks = [\"sink\"]\n")
}

fn delivered(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The outcome of each recipient of alert `id`, as `user=outcome`.
fn outcomes(host: &Host, id: u64) -> Vec<String> {
    let a = host.api(&format!("/api/v1/alerts/{id}"));
    a["recipients"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{}={}",
                        r["user"].as_str().unwrap_or(""),
                        r["outcome"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn finished(host: &Host, id: u64) -> bool {
    host.api(&format!("/api/v1/alerts/{id}"))["state"] == "finished"
}

#[test]
fn loader_refuses_bad_files_in_one_line_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    fs::create_dir(&plugins).unwrap();
    for name in [
        "test_sink",
        "test_source",
        "fixture_bad_root",
        "fixture_other_api",
    ] {
        fs::copy(
            plugin_file(name),
            plugins.join(format!("libalertbridge_{name}.so")),
        )
        .unwrap();
    }
    fs::write(dir.path().join("x.c"), "int x;\n").unwrap();
    let gcc = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(plugins.join("libnotaplugin.so"))
        .arg(dir.path().join("x.c"))
        .status()
        .unwrap();
    assert!(gcc.success());
    let world_writable = plugins.join("libalertbridge_copy.so");
    fs::copy(plugin_file("test_sink"), &world_writable).unwrap();
    Command::new("chmod")
        .arg("o+w")
        .arg(&world_writable)
        .status()
        .unwrap();

    for (mode, root_reason) in [
        (
            "error",
            "its root module failed: fixture: root module fails on purpose",
        ),
        ("panic", "its root module panicked while loading"),
    ] {
        let out = Command::new(bin_dir().join("alertbridge"))
            .args(["plugins", "--dir"])
            .arg(&plugins)
            .env("ALERTBRIDGE_FIXTURE_ROOT", mode)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = |file: &str| {
            text.lines()
                .find(|l| l.contains(file))
                .unwrap_or_else(|| panic!("no line for {file} in:\n{text}"))
                .to_owned()
        };
        assert!(
            line("libalertbridge_test_sink.so")
                .ends_with("test-sink 0.1.0 (api 1.0.0): sink test-sink"),
            "{text}"
        );
        assert!(
            line("libalertbridge_test_source.so").contains("source test-source"),
            "{text}"
        );
        assert!(line("fixture_bad_root").ends_with(root_reason), "{text}");
        assert!(line("fixture_other_api").ends_with("built against plugin API 0.0.9, this host speaks 1.0.0: rebuild the plugin with this release"), "{text}");
        assert!(
            line("libnotaplugin.so")
                .ends_with("not an alertbridge plugin (no abi_stable root module)"),
            "{text}"
        );
        assert!(
            line("libalertbridge_copy.so").contains("writable by every user"),
            "{text}"
        );
        assert_eq!(
            text.lines().count(),
            7,
            "one line per file, never a layout dump:\n{text}"
        );
    }

    // And the host runs with the good ones.
    let (admin, control) = (free_port(), free_port());
    let cfg = config(dir.path(), admin, control, "", &ops_route()).replace(
        "stop_deadline_ms = 3000",
        &format!(
            "stop_deadline_ms = 3000\nplugin_dir = \"{}\"",
            plugins.display()
        ),
    );
    let host = Host::start(dir.path(), admin, &cfg);
    let r = emit(control, "count=1&prefix=load");
    assert_eq!(r["accepted"], 1);
    wait_until("delivery", LONG, || delivered(dir.path()).len() == 2);
    assert!(host.log().contains("Plugin file refused"), "{}", host.log());
}

#[test]
fn panicking_sink_is_restarted_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let routes = ops_route();
    let host = Host::start(
        dir.path(),
        admin,
        &config(
            dir.path(),
            admin,
            control,
            "panic_on_subject = \"PANIC\"",
            &routes,
        ),
    );
    let r = emit(control, "count=1&prefix=p&subject=PANIC");
    let id = r["ids"][0].as_u64().unwrap();
    wait_until("the panicking alert to be given up", LONG, || {
        finished(&host, id)
    });
    let a = host.api(&format!("/api/v1/alerts/{id}"));
    let reason = a["recipients"][0]["reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("gave up after 3 attempts: sink call failed (panicked): deliver panicked: test sink: scripted panic in deliver"), "{reason}");
    wait_until("the sink to be restarted", LONG, || {
        host.instance("sink")["restarts"].as_u64() >= Some(1)
            && host.instance("sink")["state"] == "ok"
    });
    let r = emit(control, "count=2&prefix=after");
    let ids: Vec<u64> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    wait_until("later alerts to be delivered", LONG, || {
        ids.iter().all(|id| finished(&host, *id))
    });
    assert_eq!(delivered(dir.path()).len(), 4);
    assert!(
        host.log().contains("Instance panicked; recreating it."),
        "{}",
        host.log()
    );
}

#[test]
fn panicking_source_is_restarted_and_its_logs_reach_the_host_log() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let routes = ops_route();
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, "", &routes),
    );
    let _ = post(&format!("http://127.0.0.1:{control}/panic"));
    wait_until("the source to be restarted", LONG, || {
        host.instance("src")["restarts"].as_u64() >= Some(1)
            && host.instance("src")["state"] == "ok"
    });
    let r = emit(control, "count=1&prefix=again");
    assert_eq!(r["accepted"], 1, "the recreated source submits again");
    let log = host.log();
    assert!(
        log.contains("plugin::src::alertbridge_test_source")
            && log.contains("Test source running. instance=src"),
        "{log}"
    );
    assert!(
        log.contains("plugin::src::panic") && log.contains("test source: panic on command"),
        "the plugin's panic message is in the host log:\n{log}"
    );
    assert!(host.api("/healthz")["status"] == "ok");
}

#[test]
fn offline_policies_retries_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let presence = dir.path().join("presence.txt");
    fs::write(&presence, "sip:held@x offline\n").unwrap();
    let sink = format!(
        r#"presence_file = "{}"
presence = {{ "sip:away@x" = "away", "sip:gone@x" = "offline", "sip:dnd@x" = "do_not_disturb" }}
outcome = {{ "sip:nobody@x" = "not_found", "sip:no@x" = "declined", "sip:flaky@x" = "failed_transient" }}
fail_times = {{ "sip:retry@x" = 2 }}"#,
        presence.display()
    );
    let routes = r#"
[groups]
skip = ["sip:away@x", "sip:gone@x", "sip:dnd@x"]
hold = ["sip:held@x"]
fails = ["sip:nobody@x", "sip:no@x", "sip:flaky@x", "sip:retry@x"]
backup = ["sip:backup@x"]

[[route]]
name = "holding"
match = { subject = "^hold" }
groups = ["hold"]
sinks = ["sink"]
offline = { policy = "hold", max_wait_secs = 60, then = "skip" }

[[route]]
name = "falling-back"
match = { subject = "^fallback" }
groups = ["skip"]
sinks = ["sink"]
offline = { policy = "fallback", fallback = "backup" }

[[route]]
name = "always"
match = { subject = "^always" }
groups = ["skip"]
sinks = ["sink"]
offline = { policy = "always" }

[[route]]
name = "failing"
match = { subject = "^fail" }
groups = ["fails"]
sinks = ["sink"]

[[route]]
name = "backup"
match = { subject = "^never" }
groups = ["backup"]
sinks = ["sink"]

[[route]]
name = "skipping"
groups = ["skip"]
sinks = ["sink"]
"#;
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, &sink, routes),
    );
    let id = |subject: &str| {
        emit(
            control,
            &format!("count=1&prefix={subject}&subject={subject}"),
        )["ids"][0]
            .as_u64()
            .unwrap()
    };

    let skip = id("skip");
    wait_until("skip", LONG, || finished(&host, skip));
    assert_eq!(
        outcomes(&host, skip),
        [
            "sip:away@x=delivered",
            "sip:gone@x=skipped",
            "sip:dnd@x=skipped"
        ],
        "away counts as reachable by default"
    );

    let fb = id("fallback");
    wait_until("fallback", LONG, || finished(&host, fb));
    assert_eq!(
        outcomes(&host, fb),
        [
            "sip:away@x=delivered",
            "sip:gone@x=skipped",
            "sip:dnd@x=skipped",
            "sip:backup@x=delivered"
        ]
    );

    let always = id("always");
    wait_until("always", LONG, || finished(&host, always));
    assert_eq!(
        outcomes(&host, always),
        [
            "sip:away@x=delivered",
            "sip:gone@x=delivered",
            "sip:dnd@x=delivered"
        ]
    );

    let held = id("hold");
    wait_until("held", LONG, || {
        outcomes(&host, held) == ["sip:held@x=held"]
    });
    fs::write(&presence, "sip:held@x available\n").unwrap();
    wait_until("held recipient delivered once online", LONG, || {
        finished(&host, held)
    });
    assert_eq!(outcomes(&host, held), ["sip:held@x=delivered"]);

    let fail = id("fail");
    wait_until("failures", LONG, || finished(&host, fail));
    assert_eq!(
        outcomes(&host, fail),
        [
            "sip:nobody@x=failed",
            "sip:no@x=failed",
            "sip:flaky@x=failed",
            "sip:retry@x=delivered"
        ]
    );
    let a = host.api(&format!("/api/v1/alerts/{fail}"));
    let reasons: Vec<&str> = a["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(reasons[0], "no such user: scripted not_found");
    assert_eq!(reasons[1], "declined: scripted declined");
    assert_eq!(
        reasons[2],
        "gave up after 3 attempts: failed_transient: scripted failed_transient"
    );
    assert_eq!(
        a["recipients"][3]["attempts"], 3,
        "two scripted transient failures, then delivered"
    );

    let metrics = alertbridge_testbed::harness::get(&format!("{}/metrics", host.admin)).unwrap();
    assert!(
        metrics.contains("alertbridge_deliveries_total{sink=\"sink\",outcome=\"held\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("alertbridge_deliveries_total{sink=\"sink\",outcome=\"failed\"} 3"),
        "{metrics}"
    );
}

#[test]
fn an_alert_that_arrives_while_its_sink_is_starting_goes_out_as_soon_as_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let routes = ops_route();
    // The sink takes 400 ms to come up; the source is up at once.
    let text = config(dir.path(), admin, control, "create_delay_ms = 400", &routes);
    let _host = Host::start(dir.path(), admin, &text);
    let submitted = Instant::now();
    emit(control, "count=1&prefix=early");
    wait_until("the deliveries", LONG, || delivered(dir.path()).len() == 2);
    // Treated as a sink that is down, the alert would wait a retry delay (1 s) first.
    let took = submitted.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "delivered {took:?} after the submit; the sink was up after at most 400 ms"
    );
}

#[test]
fn dedup_takes_a_key_once_across_restarts_and_stop_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let routes = ops_route();
    let mut host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, "", &routes),
    );
    let first = emit(control, "count=3&prefix=d");
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    let again = emit(control, "count=3&prefix=d");
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3))
    );
    wait_until("deliveries", LONG, || delivered(dir.path()).len() == 6);
    assert!(host.stop(), "SIGTERM stops cleanly; log:\n{}", host.log());
    host.restart();
    let after = emit(control, "count=3&prefix=d");
    assert_eq!(
        after["duplicates"].as_u64(),
        Some(3),
        "the dedup window survives a restart"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(dir.path()).len(), 6, "no second IM");
    assert!(
        host.log()
            .contains("Stopping: sources first, then deliveries, then sinks.")
    );
}

#[test]
fn check_lists_every_mistake_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let good = config(dir.path(), admin, control, "", &ops_route());
    let path = dir.path().join("good.toml");
    fs::write(&path, &good).unwrap();
    let out = Command::new(bin_dir().join("alertbridge"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let bad =
        good.replace(
            "stop_deadline_ms = 3000",
            "stop_deadline_ms = 3000\nstop_deadline_secs = 3",
        )
        .replace(
            "groups = [\"ops\"]\nsinks = [\"sink\"]",
            "groups = [\"opps\"]\nsinks = [\"sinc\"]",
        ) + "\n[notifications]\nemail = true\n";
    let path = dir.path().join("bad.toml");
    fs::write(&path, &bad).unwrap();
    let out = Command::new(bin_dir().join("alertbridge"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let p = path.display();
    let at =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).expect(needle) + 1;
    assert!(
        lines[0].starts_with(&format!(
            "{p}:{}:1: [host]: unknown field `stop_deadline_secs`",
            at(&bad, "stop_deadline_secs")
        )),
        "{text}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{p}:{}:11: route `r`: no group `opps` in [groups]",
            at(&bad, "opps")
        ),
        "{text}"
    );
    assert_eq!(
        lines[2],
        format!(
            "{p}:{}:10: route `r`: no [[sink]] named `sinc`",
            at(&bad, "sinc")
        ),
        "{text}"
    );
    assert!(
        lines[3].starts_with(&format!(
            "{p}:{}:2: unknown table `notifications`",
            at(&bad, "[notifications]")
        )),
        "{text}"
    );
    assert_eq!(lines[4], "4 errors found");

    // A plugin's own complaint points at the key inside the instance's config table.
    let plugin_bad = good.replace("record_file =", "colour = \"red\"\nrecord_file =");
    fs::write(&path, &plugin_bad).unwrap();
    let out = Command::new(bin_dir().join("alertbridge"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with(&format!(
            "{p}:{}:1: instance `sink`: unknown field `colour`",
            at(&plugin_bad, "colour")
        )),
        "{text}"
    );
}

#[test]
fn shipped_example_configs_check_clean() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config");
    let mut n = 0;
    for entry in fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            n += 1;
            let out = Command::new(bin_dir().join("alertbridge"))
                .arg("check")
                .arg("--config")
                .arg(&path)
                .envs([
                    ("ALERTBRIDGE_POP3_PASSWORD", "x"),
                    ("ALERTBRIDGE_WEBHOOK_TOKENS", "x"),
                    ("ALERTBRIDGE_UCWA_PASSWORD", "x"),
                    ("ALERTBRIDGE_UCMA_SECRET", "0123456789abcdef"),
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}{}",
                path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(n > 0, "no example configs in {}", examples.display());
}

#[test]
fn sigterm_drains_in_flight_deliveries_and_leaves_the_rest_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let routes = ops_route();
    let cfg = config(dir.path(), admin, control, "delay_ms = 400", &routes)
        .replace("stop_deadline_ms = 3000", "stop_deadline_ms = 1000")
        .replace("max_attempts = 3", "max_attempts = 3\nsink_concurrency = 2");
    let mut host = Host::start(dir.path(), admin, &cfg);
    let r = emit(control, "count=20&prefix=drain");
    assert_eq!(r["accepted"], 20);
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert!(
        host.stop(),
        "SIGTERM ends the process cleanly; log:\n{}",
        host.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the stop deadline is kept: {:?}",
        started.elapsed()
    );
    let log = host.log();
    let queued: u64 = log
        .lines()
        .find_map(|l| l.split("Stopped. queued=").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stop summary in:\n{log}"));
    assert!(
        queued > 0,
        "with a slow sink some alerts are still queued at the deadline:\n{log}"
    );
    let before = delivered(dir.path()).len();
    assert!(before < 40, "{before} deliveries before the stop");

    host.restart();
    wait_until("the rest after the restart", LONG, || {
        delivered(dir.path()).len() == 40
    });
    assert!(host.log().contains("Resuming unfinished alerts."));
    let mut seen = std::collections::BTreeSet::new();
    for d in delivered(dir.path()) {
        assert!(
            seen.insert((
                d["alert_id"].as_u64(),
                d["user"].as_str().map(str::to_owned)
            )),
            "delivered twice: {d}"
        );
    }
}
