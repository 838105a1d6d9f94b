//! End-to-end tests host → `ucwa` sink → UCWA simulator: the real `alertbridge` binary with
//! the real `test-source` and `ucwa` plugin files, against `ucwa_sim` running in this process.
//! Outcomes are checked where an operator sees them (the admin API's recipient `outcome` /
//! `reason`) and in what the simulated users received.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use alertbridge_testbed::{
    harness::{Host, emit, free_port},
    ucwa_sim::{Behaviour, SimConfig, SimHandle, Simulator, UserSpec},
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const DAVE: &str = "sip:dave@contoso.com";
const ERIN: &str = "sip:erin@contoso.com";

/// Fast retries, no presence cache, enough attempts to ride out a server restart.
const DELIVERY: &str = "per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
hold_recheck_ms = 100
presence_cache_ms = 0
max_attempts = 40";

fn sim_config() -> SimConfig {
    let users = vec![
        UserSpec::new("alerts@contoso.com", "alert-pw", "Online"),
        UserSpec::new(ALICE, "a", "Online"),
        UserSpec::new(BOB, "b", "Offline"),
        UserSpec::new(DAVE, "d", "Online"),
        UserSpec::new(ERIN, "e", "Online"),
    ];
    SimConfig {
        users,
        invitation_timeout: Duration::from_millis(500),
        ..SimConfig::default()
    }
}

/// A UCWA simulator on its own runtime and a host whose `ucwa` sink `lync` points at it.
struct Bed {
    host: Host,
    sim: Option<SimHandle>,
    rt: tokio::runtime::Runtime,
    control: u16,
    emitted: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn start(ops: &[&str]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sim = rt
            .block_on(Simulator::start(sim_config()))
            .expect("start the UCWA simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let (admin, control) = (free_port(), free_port());
        let host = Host::start(
            dir.path(),
            admin,
            &config(dir.path(), admin, control, &sim.discover_url(), ops),
        );
        Self {
            host,
            sim: Some(sim),
            rt,
            control,
            emitted: AtomicU32::new(0),
            _dir: dir,
        }
    }

    fn sim(&self) -> &SimHandle {
        self.sim.as_ref().expect("the simulator is running")
    }

    /// Stops the simulator and starts a new one (empty state) on the same port.
    fn restart_sim(&mut self, down_for: Duration) {
        let sim = self.sim.take().expect("the simulator is running");
        let addr = sim.addr();
        self.rt.block_on(sim.stop());
        std::thread::sleep(down_for);
        let config = SimConfig {
            listen: addr,
            ..sim_config()
        };
        self.sim = Some(
            self.rt
                .block_on(Simulator::start(config))
                .expect("restart the simulator on the same port"),
        );
    }

    /// Submits one alert through the test source and returns its id. `subject` may hold any
    /// UTF-8 but no `&`, `=`, `?` or space (write `%20`).
    fn emit(&self, subject: &str, severity: &str) -> u64 {
        let n = self.emitted.fetch_add(1, Ordering::Relaxed);
        let v = emit(
            self.control,
            &format!("count=1&prefix=e{n}&subject={subject}&severity={severity}"),
        );
        v["ids"][0].as_u64().expect("an alert id")
    }

    /// The alert once it is finished (polled every 20 ms).
    fn finished(&self, id: u64) -> Value {
        let start = std::time::Instant::now();
        loop {
            let last = self.host.api(&format!("/api/v1/alerts/{id}"));
            if last["state"] == "finished" {
                return last;
            }
            assert!(
                start.elapsed() < LONG,
                "timed out waiting for alert {id}: {last:#}\nhost log:\n{}",
                self.host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn config(dir: &std::path::Path, admin: u16, control: u16, discover: &str, ops: &[&str]) -> String {
    let d = dir.display();
    let ops: Vec<String> = ops.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
{DELIVERY}

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
presence_cache_ms = 0
request_timeout_secs = 5

[groups]
ops = [{ops}]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["lync"]
offline = {{ policy = "skip" }}
"#,
        ops = ops.join(", "),
    )
}

/// `(outcome, reason)` of `user` in an alert document.
fn outcome(alert: &Value, user: &str) -> (String, String) {
    let r = alert["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["user"] == user))
        .unwrap_or_else(|| panic!("no recipient {user} in {alert:#}"));
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    (s("outcome"), s("reason"))
}

#[test]
fn delivered_im_keeps_subject_and_body_and_offline_users_follow_the_policy() {
    let bed = Bed::start(&[ALICE, BOB]);
    let a = bed.finished(bed.emit(
        "Plattenplatz%20knapp%20–%20<db01>%20日本語%20🚨",
        "critical",
    ));
    assert_eq!(
        outcome(&a, ALICE),
        ("delivered".into(), String::new()),
        "{a:#}"
    );
    assert_eq!(outcome(&a, BOB).0, "skipped", "{a:#}");
    assert!(outcome(&a, BOB).1.starts_with("offline"), "{a:#}");
    let inbox = bed.sim().received(ALICE);
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].subject, "Plattenplatz knapp – <db01> 日本語 🚨 0");
    assert_eq!(inbox[0].text, "test alert e0:0");
    assert_eq!(
        (inbox[0].content_type.as_str(), inbox[0].importance.as_str()),
        ("text/plain", "Urgent")
    );
    assert!(
        bed.sim().received(BOB).is_empty(),
        "no invitation to an offline user"
    );
}

#[test]
fn declined_and_ignored_invitations_fail_with_their_reason() {
    let bed = Bed::start(&[DAVE, ERIN]);
    bed.sim().set_behaviour(DAVE, Behaviour::decline());
    bed.sim().set_behaviour(ERIN, Behaviour::Ignore);
    let a = bed.finished(bed.emit("Declined", "normal"));
    let (dave, erin) = (outcome(&a, DAVE), outcome(&a, ERIN));
    assert_eq!(dave.0, "failed", "{a:#}");
    assert!(
        dave.1
            .contains("RemoteFailure/Declined: Your invitation was declined."),
        "{a:#}"
    );
    assert_eq!(erin.0, "failed", "{a:#}");
    assert!(erin.1.contains("RemoteFailure/Timeout"), "{a:#}");
    assert!(bed.sim().received(DAVE).is_empty() && bed.sim().received(ERIN).is_empty());
}

#[test]
fn token_expiring_mid_run_is_renewed_without_losing_a_message() {
    let bed = Bed::start(&[ALICE]);
    let first = bed.finished(bed.emit("Before", "normal"));
    assert_eq!(outcome(&first, ALICE).0, "delivered", "{first:#}");
    bed.sim().expire_tokens();
    let second = bed.finished(bed.emit("After", "normal"));
    assert_eq!(
        outcome(&second, ALICE),
        ("delivered".into(), String::new()),
        "{second:#}"
    );
    let subjects: Vec<String> = bed
        .sim()
        .received(ALICE)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, ["Before 0", "After 0"]);
}

#[test]
fn simulator_restart_mid_run_loses_nothing() {
    let mut bed = Bed::start(&[ALICE]);
    let first = bed.finished(bed.emit("Before", "normal"));
    assert_eq!(outcome(&first, ALICE).0, "delivered", "{first:#}");
    let sim = bed.sim.take().expect("running");
    let addr = sim.addr();
    bed.rt.block_on(sim.stop());
    // An alert accepted while the server is down is delivered once it is back.
    let id = bed.emit("During", "normal");
    std::thread::sleep(Duration::from_millis(800));
    bed.sim = Some(
        bed.rt
            .block_on(Simulator::start(SimConfig {
                listen: addr,
                ..sim_config()
            }))
            .expect("restart"),
    );
    let during = bed.finished(id);
    assert_eq!(outcome(&during, ALICE).0, "delivered", "{during:#}");
    let subjects: Vec<String> = bed
        .sim()
        .received(ALICE)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(subjects, ["During 0"]);
    bed.restart_sim(Duration::ZERO);
    let after = bed.finished(bed.emit("After", "normal"));
    assert_eq!(outcome(&after, ALICE).0, "delivered", "{after:#}");
    let subjects: Vec<String> = bed
        .sim()
        .received(ALICE)
        .into_iter()
        .map(|m| m.subject)
        .collect();
    assert_eq!(
        subjects,
        ["After 0"],
        "the restarted server got only what was sent after its restart"
    );
}
