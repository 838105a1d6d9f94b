//! A scriptable sink for alertbridge's tests: presence from its config (or a file re-read on
//! every query), scripted failures, delays and panics, and a record file of every delivery.
//!
//! Deliveries are idempotent by (alert uid, user), like a bridge with idempotency keys: a
//! redelivery after a host crash answers `delivered` again without a second record, and is
//! counted in `redeliveries_file` so tests can report how many there were.

use std::{
    collections::{BTreeMap, HashSet},
    fs::OpenOptions,
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{
    DeliveryStatus, Message, PluginError, Presence, PresenceState, RecipientResult, export_plugin,
    kit::{CancellationToken, Setup, Sink, config_error},
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// JSON lines, one per delivered recipient.
    record_file: PathBuf,
    /// One line per suppressed redelivery.
    redeliveries_file: Option<PathBuf>,
    #[serde(default = "available")]
    default_presence: String,
    #[serde(default)]
    presence: BTreeMap<String, String>,
    /// Lines `user state`, re-read on every presence query; overrides `presence`.
    presence_file: Option<PathBuf>,
    /// user → delivered | offline | declined | not_found | failed_transient | failed_permanent
    #[serde(default)]
    outcome: BTreeMap<String, String>,
    /// user → how many transient failures before it succeeds.
    #[serde(default)]
    fail_times: BTreeMap<String, u32>,
    #[serde(default)]
    delay_ms: u64,
    /// `deliver` panics when the subject contains this.
    panic_on_subject: Option<String>,
    /// The background task panics this long after start.
    panic_after_ms: Option<u64>,
    /// The constructor takes this long: a sink that is slow to come up.
    #[serde(default)]
    create_delay_ms: u64,
}

fn available() -> String {
    "available".into()
}

struct TestSink {
    config: Config,
    /// Opened on the first delivery: a constructor only checks (it also serves `check`).
    record: Mutex<Option<std::fs::File>>,
    delivered: Mutex<HashSet<(String, String)>>,
    failures: Mutex<BTreeMap<String, u32>>,
}

fn state(name: &str, key: &str) -> Result<PresenceState, PluginError> {
    PresenceState::from_name(name)
        .ok_or_else(|| config_error(key, format!("unknown presence state `{name}`")))
}

impl TestSink {
    fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: Config = setup.config()?;
        std::thread::sleep(Duration::from_millis(config.create_delay_ms));
        state(&config.default_presence, "default_presence")?;
        for (user, s) in &config.presence {
            state(s, &format!("presence.{user}"))?;
        }
        for (user, s) in &config.outcome {
            if DeliveryStatus::from_name(s).is_none() {
                return Err(config_error(
                    &format!("outcome.{user}"),
                    format!("unknown outcome `{s}`"),
                ));
            }
        }
        let mut delivered = HashSet::new();
        if let Ok(text) = std::fs::read_to_string(&config.record_file) {
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    delivered.insert((
                        v["uid"].as_str().unwrap_or("").to_owned(),
                        v["user"].as_str().unwrap_or("").to_owned(),
                    ));
                }
            }
        }
        tracing::info!(instance = %setup.instance, already = delivered.len(), "Test sink created.");
        Ok(Self {
            config,
            record: Mutex::new(None),
            delivered: Mutex::new(delivered),
            failures: Mutex::new(BTreeMap::new()),
        })
    }

    fn presence_of(&self, user: &str, overrides: &BTreeMap<String, String>) -> PresenceState {
        let name = overrides
            .get(user)
            .or_else(|| self.config.presence.get(user))
            .unwrap_or(&self.config.default_presence);
        PresenceState::from_name(name).unwrap_or(PresenceState::UNKNOWN)
    }

    fn append(path: &PathBuf, line: &str) -> Result<(), PluginError> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| PluginError::transient(&e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| PluginError::transient(&e))
    }
}

impl Sink for TestSink {
    async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), PluginError> {
        match self.config.panic_after_ms {
            Some(ms) => {
                tokio::select! {
                    () = shutdown.cancelled() => Ok(()),
                    () = tokio::time::sleep(Duration::from_millis(ms)) => panic!("test sink: scripted panic in run"),
                }
            }
            None => {
                shutdown.cancelled().await;
                Ok(())
            }
        }
    }

    async fn presence(&self, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        let mut overrides = BTreeMap::new();
        if let Some(path) = &self.config.presence_file {
            for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
                if let Some((u, s)) = line.split_once(' ') {
                    overrides.insert(u.trim().to_owned(), s.trim().to_owned());
                }
            }
        }
        Ok(users
            .into_iter()
            .map(|u| Presence::new(u.clone(), self.presence_of(&u, &overrides)))
            .collect())
    }

    async fn deliver(&self, m: Message) -> Result<Vec<RecipientResult>, PluginError> {
        if let Some(p) = &self.config.panic_on_subject
            && m.subject.contains(p.as_str())
        {
            panic!("test sink: scripted panic in deliver");
        }
        if self.config.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delay_ms)).await;
        }
        let uid = m
            .attributes
            .get("alert_uid")
            .cloned()
            .unwrap_or_else(|| m.alert_id.to_string());
        let mut out = Vec::new();
        for user in &m.recipients {
            let remaining = {
                let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
                let used = f.entry(user.clone()).or_default();
                let allowed = self.config.fail_times.get(user).copied().unwrap_or(0);
                if *used < allowed {
                    *used += 1;
                    true
                } else {
                    false
                }
            };
            if remaining {
                out.push(RecipientResult::new(
                    user,
                    DeliveryStatus::FAILED_TRANSIENT,
                    "scripted transient failure",
                ));
                continue;
            }
            let status = self
                .config
                .outcome
                .get(user)
                .and_then(|s| DeliveryStatus::from_name(s))
                .unwrap_or(DeliveryStatus::DELIVERED);
            if status != DeliveryStatus::DELIVERED {
                out.push(RecipientResult::new(
                    user,
                    status,
                    format!("scripted {status}"),
                ));
                continue;
            }
            let fresh = self
                .delivered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((uid.clone(), user.clone()));
            if fresh {
                let mut line = serde_json::to_string(&Record {
                    alert_id: m.alert_id,
                    uid: &uid,
                    user,
                    attempt: m.attempt,
                    source: &m.source,
                    subject: &m.subject,
                    body: &m.body,
                    severity: m.severity.name(),
                    labels: &m.labels,
                    delivered_us: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros()),
                })
                .map_err(|e| PluginError::permanent(&e))?;
                line.push('\n');
                let mut f = self.record.lock().unwrap_or_else(PoisonError::into_inner);
                if f.is_none() {
                    if let Some(dir) = self.config.record_file.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| PluginError::transient(&e))?;
                    }
                    *f = Some(
                        OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&self.config.record_file)
                            .map_err(|e| PluginError::transient(&e))?,
                    );
                }
                if let Some(file) = f.as_mut() {
                    file.write_all(line.as_bytes())
                        .map_err(|e| PluginError::transient(&e))?;
                }
                tracing::debug!(alert = m.alert_id, user, "Delivered.");
            } else if let Some(path) = &self.config.redeliveries_file {
                Self::append(path, &format!("{} {user}", m.alert_id))?;
            }
            out.push(RecipientResult::delivered(user));
        }
        Ok(out)
    }
}

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One line of the record file.
#[derive(serde::Serialize)]
struct Record<'a> {
    alert_id: u64,
    uid: &'a str,
    user: &'a str,
    attempt: u32,
    source: &'a str,
    subject: &'a str,
    body: &'a str,
    severity: &'static str,
    labels: &'a BTreeMap<String, String>,
    delivered_us: u128,
}

export_plugin! {
    name: "test-sink",
    version: env!("CARGO_PKG_VERSION"),
    sources: {},
    sinks: { "test-sink" => TestSink::new },
}
