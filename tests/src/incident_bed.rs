//! A bed for incident tests through UCWA: the UCWA simulator on its own runtime (users
//! `alerts@` (the bot), Alice, Bob, Carol, Erin, all online) and the real host with the
//! `test-source` plugin (`src`) and the `ucwa` sink (`lync`), whose route `critical` (severity
//! high or critical) names the escalation policy `oncall`: group `first` (Alice) at once, Bob after
//! `bob_secs`, Carol after `carol_secs`; offline recipients are skipped.
//!
//! [`WebhookBed`]: the same host and simulator with the `webhook` source instead (Alertmanager's
//! resolved notices resolve), whose route `nodes` escalates through the levels a test names.

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
        let (rt, sim) = start_sim(&[ALICE, BOB, CAROL, ERIN], Duration::from_millis(2000));
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

/// The UCWA simulator on a runtime of its own, with the bot (`alerts@contoso.com`) and `users`
/// (each with the password of its first letter), all online.
pub fn start_sim(
    users: &[&str],
    invitation_timeout: Duration,
) -> (tokio::runtime::Runtime, SimHandle) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut specs = vec![UserSpec::new("alerts@contoso.com", "alert-pw", "Online")];
    for user in users {
        let password = user.trim_start_matches("sip:").get(..1).unwrap_or("x");
        specs.push(UserSpec::new(user, password, "Online"));
    }
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            users: specs,
            invitation_timeout,
            ..SimConfig::default()
        }))
        .expect("start the UCWA simulator");
    (rt, sim)
}

/// The real host with the `webhook` source `monitoring` (Alertmanager's resolved notices
/// resolve) and the `ucwa` sink `lync` against the simulator; route `nodes` (every alert of
/// `monitoring`) escalates through `node-oncall`, one user per level.
pub struct WebhookBed {
    /// The host's folder (config, log, data), kept for a look if the test failed.
    pub dir: crate::ha::Scratch,
    pub sim: SimHandle,
    pub rt: tokio::runtime::Runtime,
    /// The webhook's port.
    pub hook: u16,
    admin: u16,
}

impl WebhookBed {
    /// Starts the simulator (users `users`, a ring-out of 500 ms) and picks the ports; the host
    /// starts with [`WebhookBed::start_host`], once its webhook's token file exists.
    pub fn new(users: &[&str]) -> Self {
        let (rt, sim) = start_sim(users, Duration::from_millis(500));
        Self {
            dir: crate::ha::Scratch::new(),
            sim,
            rt,
            hook: free_port(),
            admin: free_port(),
        }
    }

    /// `http://127.0.0.1:<hook><path>`.
    pub fn hook_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.hook)
    }

    /// Writes a webhook tokens file holding `token`; its path.
    pub fn tokens_file(&self, token: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("webhook.tokens");
        std::fs::write(&path, format!("{token}\n")).expect("write the tokens file");
        path
    }

    /// Starts the host, its webhook taking the tokens in `tokens`; `levels` are the policy's
    /// (user, `after_secs`), in order.
    pub fn start_host(&self, tokens: &std::path::Path, levels: &[(&str, u64)]) -> Host {
        let d = self.dir.path();
        let levels: String = levels
            .iter()
            .map(|(user, secs)| format!("  {{ users = [\"{user}\"], after_secs = {secs} }},\n"))
            .collect();
        let source = format!(
            r#"
[[source]]
name = "monitoring"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"
alertmanager = {{ resolved = "resolve" }}
"#,
            hook = self.hook,
            tokens = tokens.display(),
        );
        let config = format!(
            r#"{base}
[[escalation]]
name = "node-oncall"
levels = [
{levels}]
{route}"#,
            base = ucwa_host(d, self.admin, &self.sim.discover_url(), &source),
            route = escalation_route("nodes", "source = \"monitoring\"", "node-oncall"),
        );
        Host::start(d, self.admin, &config)
    }

    /// The texts `user` received, oldest first.
    pub fn texts(&self, user: &str) -> Vec<String> {
        self.sim
            .received(user)
            .into_iter()
            .map(|im| im.text)
            .collect()
    }

    /// Whether `user` received an IM whose subject or text holds `needle`.
    pub fn paged(&self, user: &str, needle: &str) -> bool {
        self.sim
            .received(user)
            .iter()
            .any(|im| im.subject.contains(needle) || im.text.contains(needle))
    }
}

/// `[host]`, `[delivery]` (quick retries, no presence cache), the `source` block and the `ucwa`
/// sink `lync` logging in as the bot at `discover`, for a host in `dir` with its admin API on
/// `admin`.
fn ucwa_host(dir: &std::path::Path, admin: u16, discover: &str, source: &str) -> String {
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
{source}
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
"#
    )
}

/// Route `name` (alerts matching `matcher`) escalating through `policy` on `lync`, offline
/// recipients skipped.
fn escalation_route(name: &str, matcher: &str, policy: &str) -> String {
    format!(
        r#"
[[route]]
name = "{name}"
match = {{ {matcher} }}
escalation = "{policy}"
sinks = ["lync"]
offline = {{ policy = "skip" }}
"#
    )
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
    let source = format!(
        r#"
[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"
"#
    );
    format!(
        r#"{base}
[groups]
first = ["{ALICE}"]

[[escalation]]
name = "oncall"
levels = [
  {{ groups = ["first"], after_secs = 0 }},
  {{ users = ["{BOB}"], after_secs = {bob_secs} }},
  {{ users = ["{CAROL}"], after_secs = {carol_secs} }},
]
{route}"#,
        base = ucwa_host(dir, admin, discover, &source),
        route = escalation_route("critical", "severity = \">=high\"", "oncall"),
    )
}
