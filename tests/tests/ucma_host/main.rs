//! End-to-end tests host → `ucma` sink → bridge simulator: the real `alertbridge` binary with
//! the real `test-source` and `ucma` plugin files, against `ucma_sim` running in this process.
//! Every per-recipient outcome and request-level error is checked where an operator sees it:
//! the admin API's recipient `outcome` / `reason` / `attempts`, `/healthz`, and what the
//! simulated users received.
//!
//! - `outcomes`: each per-recipient outcome (480, 486, 408, 603, 404, page mode, presence).
//! - `request_errors`: request-level errors (401, 409, 429, 503, bridge down).
//! - `limits`: batches within the bridge's limits, presence that cannot be had, and request
//!   errors that stay with their own recipients (issue 18).
//! - `resilience`: lost responses, health, signing, `check`, a host killed mid-send, fan-out.

mod limits;
mod outcomes;
mod request_errors;
mod resilience;

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use alertbridge_testbed::{
    harness::{Host, bin_dir, emit, free_port, post, wait_until},
    ucma_sim::{
        Availability, Fault, FaultAction, FaultTarget, HealthStatus, Outcome, SimConfig, SimHandle,
        Simulator,
    },
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "e2e-shared-secret-0123456789";

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";
const CAROL: &str = "sip:carol@contoso.com";

/// Fast retries, no presence cache, no rate limit.
const DELIVERY: &str = "per_recipient_per_minute = 0
retry_initial_ms = 50
retry_max_ms = 200
hold_recheck_ms = 100
presence_cache_ms = 0
max_attempts = 3";

/// Short sink timeouts.
const TIMEOUTS: &str = "presence_timeout_ms = 1000
send_timeout_ms = 2000
request_timeout_ms = 5000";

/// What a test varies in the host's config.
struct Spec<'a> {
    /// The secret the sink sends (the bridge's is [`SECRET`]).
    secret: &'a str,
    /// The sink's timeouts.
    timeouts: &'a str,
    /// More keys of the sink's `[sink.config]`.
    sink: &'a str,
    /// The body of `[delivery]`.
    delivery: &'a str,
    /// The members of group `ops`, which route `r` sends to through the sink.
    ops: &'a [&'a str],
    /// Route `r`'s offline policy (inline TOML table).
    offline: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            secret: SECRET,
            timeouts: TIMEOUTS,
            sink: "",
            delivery: DELIVERY,
            ops: &[ALICE],
            offline: r#"{ policy = "skip" }"#,
        }
    }
}

/// A simulated bridge on its own runtime and a host whose `ucma` sink `ocs` points at it.
struct Bed {
    host: Host,
    sim: SimHandle,
    _rt: tokio::runtime::Runtime,
    control: u16,
    emitted: AtomicU32,
    _dir: tempfile::TempDir,
}

impl Bed {
    fn start(sim: SimConfig, spec: &Spec<'_>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sim = rt
            .block_on(Simulator::start(sim))
            .expect("start the bridge simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let (admin, control) = (free_port(), free_port());
        let host = Host::start(
            dir.path(),
            admin,
            &config(dir.path(), admin, control, &sim.url(), spec),
        );
        Self {
            host,
            sim,
            _rt: rt,
            control,
            emitted: AtomicU32::new(0),
            _dir: dir,
        }
    }

    /// Submits one alert through the test source and returns its id. `subject` may hold any
    /// UTF-8 but no `&`, `=`, `?` or space (write `%20`).
    fn emit(&self, subject: &str, severity: &str) -> u64 {
        let n = self.emitted.fetch_add(1, Ordering::Relaxed);
        let v = emit(
            self.control,
            &format!("count=1&prefix=e{n}&subject={subject}&severity={severity}"),
        );
        assert_eq!(v["accepted"], 1, "{v}");
        v["ids"][0].as_u64().expect("an alert id")
    }

    fn alert(&self, id: u64) -> Value {
        self.host.api(&format!("/api/v1/alerts/{id}"))
    }

    /// The alert once `done` holds for it (polled every 20 ms).
    fn alert_when(&self, id: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = std::time::Instant::now();
        loop {
            let last = self.alert(id);
            if done(&last) {
                return last;
            }
            assert!(
                start.elapsed() < LONG,
                "timed out waiting for {what}; alert {id}: {last:#}\nhost log:\n{}",
                self.host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finished(&self, id: u64) -> Value {
        self.alert_when(id, "the alert to finish", |a| a["state"] == "finished")
    }

    /// The `ocs` instance as `/healthz` lists it, once `done` holds for `/healthz`.
    fn healthz_when(&self, what: &str, done: impl Fn(&Value, &Value) -> bool) -> Value {
        let mut h = Value::Null;
        wait_until(what, LONG, || {
            h = self.host.api("/healthz");
            done(&h, &ocs(&h))
        });
        h
    }
}

fn config(
    dir: &std::path::Path,
    admin: u16,
    control: u16,
    endpoint: &str,
    spec: &Spec<'_>,
) -> String {
    let d = dir.display();
    let ops: Vec<String> = spec.ops.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
{delivery}

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "ocs"
plugin = "ucma"
[sink.config]
endpoint = "{endpoint}"
secret = "{secret}"
health_interval_ms = 200
{timeouts}
{sink}

[groups]
ops = [{ops}]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["ocs"]
offline = {offline}
"#,
        delivery = spec.delivery,
        secret = spec.secret,
        timeouts = spec.timeouts,
        sink = spec.sink,
        ops = ops.join(", "),
        offline = spec.offline,
    )
}

/// The recipient record of `user` in an alert document.
fn recipient<'a>(alert: &'a Value, user: &str) -> &'a Value {
    alert["recipients"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["user"] == user))
        .unwrap_or_else(|| panic!("no recipient {user} in {alert:#}"))
}

/// `(outcome, reason, attempts)` of `user`.
fn outcome(alert: &Value, user: &str) -> (String, String, u64) {
    let r = recipient(alert, user);
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
    (
        s("outcome"),
        s("reason"),
        r["attempts"].as_u64().unwrap_or(0),
    )
}

fn ocs(healthz: &Value) -> Value {
    healthz["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "ocs").cloned())
        .unwrap_or_default()
}

fn users(list: &[(&str, Availability)]) -> SimConfig {
    list.iter()
        .fold(SimConfig::new(SECRET), |c, (u, a)| c.user(u, *a))
}

fn i64_of(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no `{key}` in {v:#}"))
}
