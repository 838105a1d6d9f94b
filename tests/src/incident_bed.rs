//! A bed for incident tests through UCWA: the UCWA simulator on its own runtime (users
//! `alerts@` (the bot), Alice, Bob, Carol, Erin, all online) and the real host with the
//! `test-source` plugin (`src`) and the `ucwa` sink (`lync`), whose route `critical` (severity
//! high or critical) names the escalation policy `oncall`: group `first` (Alice) at once, Bob after
//! `bob_secs`, Carol after `carol_secs`; offline recipients are skipped.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    harness::{Host, emit, free_port, wait_until},
    ucwa_sim::{ReceivedIm, SimConfig, SimHandle, Simulator, UserSpec},
};

pub const ALICE: &str = "sip:alice@contoso.com";
pub const BOB: &str = "sip:bob@contoso.com";
pub const CAROL: &str = "sip:carol@contoso.com";
pub const ERIN: &str = "sip:erin@contoso.com";

/// How long a wait for something the host should do soon may take before the test fails.
pub const LONG: Duration = Duration::from_secs(30);

/// The simulator, the host and the test source's control port.
pub struct IncidentBed {
    pub host: Host,
    pub sim: SimHandle,
    /// The simulator's runtime; enter it to start a new conversation from a person
    /// (`SimHandle::reply` with `new`), whose ring-out timer runs there.
    pub rt: tokio::runtime::Runtime,
    pub control: u16,
}

impl IncidentBed {
    /// Starts both, the host in `dir` (its config, log and data folder).
    pub fn start(dir: &std::path::Path, bob_secs: u64, carol_secs: u64) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let users = [
            ("alerts@contoso.com", "alert-pw"),
            (ALICE, "a"),
            (BOB, "b"),
            (CAROL, "c"),
            (ERIN, "e"),
        ]
        .map(|(u, p)| UserSpec::new(u, p, "Online"))
        .to_vec();
        let sim = rt
            .block_on(Simulator::start(SimConfig {
                users,
                invitation_timeout: Duration::from_millis(2000),
                ..SimConfig::default()
            }))
            .expect("start the UCWA simulator");
        let (admin, control) = (free_port(), free_port());
        let config = config(
            dir,
            admin,
            control,
            &sim.discover_url(),
            bob_secs,
            carol_secs,
        );
        let host = Host::start(dir, admin, &config);
        Self {
            host,
            sim,
            rt,
            control,
        }
    }

    /// Submits one critical alert with dedup key `<key>:0` through the test source (which ends
    /// the subject with ` 0`); returns the source's answer.
    pub fn emit(&self, subject: &str, key: &str) -> Value {
        emit(
            self.control,
            &format!("count=1&prefix={key}&subject={subject}&severity=critical"),
        )
    }

    /// `GET /api/v1/incidents/{id}`.
    pub fn incident(&self, id: u64) -> Value {
        self.host.api(&format!("/api/v1/incidents/{id}"))
    }

    /// The texts `user` received, oldest first.
    pub fn texts(&self, user: &str) -> Vec<String> {
        self.sim
            .received(user)
            .into_iter()
            .map(|im| im.text)
            .collect()
    }

    /// The pages of incident `n` (IMs whose text holds `[#n]`) `user` received.
    pub fn pages(&self, user: &str, n: u64) -> Vec<ReceivedIm> {
        let tag = format!("[#{n}]");
        self.sim
            .received(user)
            .into_iter()
            .filter(|im| im.text.contains(&tag))
            .collect()
    }

    /// Waits until `user` received an IM whose text starts with `prefix`; returns it.
    pub fn wait_for(&self, user: &str, prefix: &str) -> ReceivedIm {
        let start = Instant::now();
        loop {
            if let Some(im) = self
                .sim
                .received(user)
                .into_iter()
                .find(|im| im.text.starts_with(prefix))
            {
                return im;
            }
            assert!(
                start.elapsed() < LONG,
                "{user} never got `{prefix}…`; got {:#?}\nhost log:\n{}",
                self.texts(user),
                self.host.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `user` was paged for incident `n`; returns the first page.
    pub fn wait_paged(&self, user: &str, n: u64) -> ReceivedIm {
        let mut page = None;
        wait_until(&format!("{user} paged for #{n}"), LONG, || {
            page = self.pages(user, n).into_iter().next();
            page.is_some()
        });
        page.unwrap_or_else(|| unreachable!("waited for it"))
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn config(
    dir: &std::path::Path,
    admin: u16,
    control: u16,
    discover: &str,
    bob_secs: u64,
    carol_secs: u64,
) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
presence_cache_ms = 0

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
first = ["{ALICE}"]

[[escalation]]
name = "oncall"
levels = [
  {{ groups = ["first"], after_secs = 0 }},
  {{ users = ["{BOB}"], after_secs = {bob_secs} }},
  {{ users = ["{CAROL}"], after_secs = {carol_secs} }},
]

[[route]]
name = "critical"
match = {{ severity = ">=high" }}
escalation = "oncall"
sinks = ["lync"]
offline = {{ policy = "skip" }}
"#
    )
}
