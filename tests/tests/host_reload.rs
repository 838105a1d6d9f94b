//! Reload: SIGHUP and `POST /-/reload` apply a changed config without losing or duplicating
//! queued alerts; a broken config is refused with its errors and the running one kept.

use std::{collections::BTreeMap, fs, path::Path, process::Command, time::Duration};

use alertbridge_testbed::harness::{Host, emit, free_port, post, wait_until};

const LONG: Duration = Duration::from_secs(60);

fn config(dir: &Path, admin: u16, control: u16, group: &str, sink_extra: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 50

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

[groups]
ops = ["sip:alice@x"]
dba = ["sip:carol@x"]

[[route]]
name = "r"
groups = ["{group}"]
sinks = ["sink"]
"#
    )
}

fn recipients_by_alert(dir: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        out.entry(v["alert_id"].as_u64().unwrap())
            .or_default()
            .push(v["user"].as_str().unwrap().to_owned());
    }
    out
}

fn reload_api(host: &Host) -> (u16, serde_json::Value) {
    let (status, body) = post(&format!("{}/-/reload", host.admin)).expect("reload answers");
    (status, serde_json::from_str(&body).unwrap_or_default())
}

#[test]
fn a_route_change_takes_effect_by_api_and_by_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, "ops", ""),
    );
    let first = emit(control, "count=1&prefix=a")["ids"][0]
        .as_u64()
        .unwrap();
    wait_until("first delivery", LONG, || {
        recipients_by_alert(dir.path()).contains_key(&first)
    });

    fs::write(&host.config, config(dir.path(), admin, control, "dba", "")).unwrap();
    let (status, body) = reload_api(&host);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["kept"],
        serde_json::json!(["src", "sink"]),
        "unchanged instances keep running: {body}"
    );
    let second = emit(control, "count=1&prefix=b")["ids"][0]
        .as_u64()
        .unwrap();
    wait_until("second delivery", LONG, || {
        recipients_by_alert(dir.path()).contains_key(&second)
    });

    fs::write(&host.config, config(dir.path(), admin, control, "ops", "")).unwrap();
    let pid = host.api("/healthz");
    assert_eq!(pid["status"], "ok");
    Command::new("pkill")
        .args(["-HUP", "-f", &host.config.display().to_string()])
        .status()
        .unwrap();
    wait_until("the SIGHUP reload", LONG, || {
        host.log().matches("Config reloaded.").count() == 2
    });
    let third = emit(control, "count=1&prefix=c")["ids"][0]
        .as_u64()
        .unwrap();
    wait_until("third delivery", LONG, || {
        recipients_by_alert(dir.path()).contains_key(&third)
    });

    let by_alert = recipients_by_alert(dir.path());
    assert_eq!(by_alert[&first], ["sip:alice@x"]);
    assert_eq!(by_alert[&second], ["sip:carol@x"]);
    assert_eq!(by_alert[&third], ["sip:alice@x"]);
}

#[test]
fn a_broken_config_is_refused_and_the_running_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let good = config(dir.path(), admin, control, "ops", "");
    let host = Host::start(dir.path(), admin, &good);
    let broken = good
        .replace("groups = [\"ops\"]", "groups = [\"nobody\"]")
        .replace("record_file", "colour = 1\nrecord_file");
    fs::write(&host.config, &broken).unwrap();
    let (status, body) = reload_api(&host);
    assert_eq!(status, 400, "{body}");
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(errors.len(), 1, "config errors come first: {errors:?}");
    assert!(
        errors[0].contains("no group `nobody` in [groups]"),
        "{errors:?}"
    );

    let plugin_broken = good.replace("record_file", "colour = 1\nrecord_file");
    fs::write(&host.config, &plugin_broken).unwrap();
    let (status, body) = reload_api(&host);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("instance `sink`: unknown field `colour`"),
        "{body}"
    );

    let id = emit(control, "count=1&prefix=still")["ids"][0]
        .as_u64()
        .unwrap();
    wait_until("delivery on the old config", LONG, || {
        recipients_by_alert(dir.path())
            .get(&id)
            .is_some_and(|r| r == &["sip:alice@x"])
    });
    assert_eq!(host.instance("sink")["restarts"], 0);
}

#[test]
fn a_thousand_alerts_in_flight_during_a_reload_are_each_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, "ops", "delay_ms = 20"),
    );
    // The admin API answers before the source has bound its control port: wait for the port,
    // or a loaded machine sends the one-shot emit below into a refused connection.
    wait_until("the test source's control port", LONG, || {
        std::net::TcpStream::connect(("127.0.0.1", control)).is_ok()
    });
    let url = format!("http://127.0.0.1:{control}/emit?count=1000&prefix=inflight&concurrency=16");
    let emitter = std::thread::spawn(move || post(&url));
    wait_until("some deliveries", LONG, || {
        !recipients_by_alert(dir.path()).is_empty()
    });
    // Change the sink's config (it is restarted) and the route's group at once.
    fs::write(
        &host.config,
        config(dir.path(), admin, control, "dba", "delay_ms = 10"),
    )
    .unwrap();
    let (status, body) = reload_api(&host);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["changed"],
        serde_json::json!(["sink"]),
        "{body}"
    );
    let (_, emitted) = emitter.join().unwrap().expect("emit finished");
    let emitted: serde_json::Value = serde_json::from_str(&emitted).unwrap();
    assert_eq!(emitted["accepted"], 1000, "{emitted}");
    wait_until("every alert finished", LONG, || {
        host.api("/healthz")["queue_depth"] == 0 && recipients_by_alert(dir.path()).len() == 1000
    });
    let by_alert = recipients_by_alert(dir.path());
    let ids: Vec<u64> = emitted["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    for id in &ids {
        let got = by_alert
            .get(id)
            .unwrap_or_else(|| panic!("alert {id} not delivered"));
        assert_eq!(
            got.len(),
            1,
            "alert {id} delivered {} times: {got:?}",
            got.len()
        );
    }
    let to_carol = by_alert.values().filter(|r| r[0] == "sip:carol@x").count();
    assert!(to_carol > 0, "alerts after the reload follow the new route");
}
