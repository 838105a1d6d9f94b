//! The `heartbeat` source: submits an alert every `interval_ms`, so an operator sees that the
//! path from a source to people's screens works.
//!
//! Each beat's dedup key is the instance name plus the number of the interval it falls in
//! (wall-clock aligned). A beat resubmitted after an unknown outcome, or by an instance
//! restarted within the same interval, is therefore taken at most once.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alertbridge_plugin_api::{
    Alert, ErrorKind, Health, HealthState, PluginError, Severity,
    kit::{Setup, Source, SourceContext, config_error},
};
use serde::Deserialize;
use tokio::time::MissedTickBehavior;

/// The `[source.config]` table of a `heartbeat` source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Time between two beats; at least 100.
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    /// The alert's subject; default `Heartbeat from <instance>`.
    subject: Option<String>,
    /// `info`, `low`, `normal`, `high` or `critical`.
    #[serde(default = "default_severity")]
    severity: String,
    /// Groups named in the alert (honoured where a route sets `allow_alert_recipients`).
    #[serde(default)]
    groups: Vec<String>,
    /// Users named in the alert (likewise).
    #[serde(default)]
    users: Vec<String>,
    /// Labels routes can match on; `heartbeat = "<instance>"` is always added.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn default_interval_ms() -> u64 {
    60_000
}

fn default_severity() -> String {
    "info".into()
}

/// A `heartbeat` source instance.
pub struct Heartbeat {
    instance: String,
    interval: Duration,
    /// Every beat is this alert plus its body and dedup key.
    template: Alert,
    health: Mutex<Health>,
}

impl Heartbeat {
    /// Reads and checks the config. Touches nothing: `alertbridge check` calls this too.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: Config = setup.config()?;
        if config.interval_ms < 100 {
            return Err(config_error("interval_ms", "must be at least 100"));
        }
        let severity: Severity = config
            .severity
            .parse()
            .map_err(|e| config_error("severity", e))?;
        let subject = config
            .subject
            .unwrap_or_else(|| format!("Heartbeat from {}", setup.instance));
        if subject.trim().is_empty() {
            return Err(config_error("subject", "must not be empty"));
        }
        let mut template = Alert::new(subject);
        template.severity = severity;
        template.groups = config.groups;
        template.users = config.users;
        template.labels = config.labels;
        template
            .labels
            .insert("heartbeat".into(), setup.instance.clone());
        Ok(Self {
            instance: setup.instance,
            interval: Duration::from_millis(config.interval_ms),
            template,
            health: Mutex::new(Health::new(HealthState::STARTING, "no beat yet")),
        })
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// The beat for the interval that contains `now`.
    fn beat(&self, now: Duration) -> Alert {
        let tick = now.as_millis() / self.interval.as_millis().max(1);
        let mut alert = self.template.clone();
        alert.body = format!("Beat {tick} of heartbeat source `{}`.", self.instance);
        alert.dedup_key = Some(format!("heartbeat:{}:{tick}", self.instance));
        alert
    }

    /// Submits one beat, retrying refusals that say "try later" until the host takes it, the
    /// next beat is due, or the instance stops.
    async fn submit(&self, ctx: &SourceContext, alert: &Alert) {
        let mut wait = Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + self.interval;
        loop {
            let error = match ctx.host.submit(alert).await {
                Ok(receipt) => {
                    tracing::info!(
                        alert_id = receipt.alert_id,
                        duplicate = receipt.duplicate,
                        "Beat queued."
                    );
                    self.set_health(Health::ok());
                    return;
                }
                Err(e) => e,
            };
            tracing::warn!(kind = %error.kind, error = %error.message, "Beat not taken.");
            self.set_health(Health::new(
                HealthState::DEGRADED,
                format!("last beat not taken: {}", error.message),
            ));
            if error.kind != ErrorKind::TRANSIENT {
                // PERMANENT (the host refuses this alert) or SHUTTING_DOWN: retrying will not help.
                return;
            }
            let pause = error.retry_after.unwrap_or(wait);
            if tokio::time::Instant::now() + pause >= give_up {
                return;
            }
            tokio::select! {
                () = ctx.shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            wait = (wait * 2).min(self.interval);
        }
    }
}

impl Source for Heartbeat {
    async fn run(self: Arc<Self>, ctx: SourceContext) -> Result<(), PluginError> {
        tracing::info!(
            interval_ms = self.interval.as_millis() as u64,
            "Heartbeat started."
        );
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                _ = ticks.tick() => {}
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            // Not raced against shutdown: a submit in flight is finished, then the loop ends.
            self.submit(&ctx, &self.beat(now)).await;
        }
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::testing::TestHost;

    use super::*;

    fn heartbeat(host: &TestHost, config_toml: &str) -> Result<Heartbeat, PluginError> {
        Heartbeat::new(Setup {
            instance: "beat".into(),
            kind: "heartbeat".into(),
            config_toml: config_toml.into(),
            host: host.host(),
        })
    }

    #[test]
    fn config_errors_name_their_key() {
        let host = TestHost::new("beat");
        let err = |text: &str| heartbeat(&host, text).err().expect("refused").to_string();
        assert_eq!(
            err("interval_ms = 5\n"),
            "`interval_ms`: must be at least 100"
        );
        assert!(
            err("severity = \"urgent\"\n").starts_with("`severity`: unknown severity \"urgent\"")
        );
        assert!(
            err("interval_ms = \"soon\"\n").starts_with("`interval_ms`: invalid type"),
            "{}",
            err("interval_ms = \"soon\"\n")
        );
    }

    #[test]
    fn a_beat_carries_its_interval_in_the_dedup_key() {
        let host = TestHost::new("beat");
        let h = heartbeat(&host, "interval_ms = 1000\nseverity = \"low\"\ngroups = [\"ops\"]\n[labels]\nteam = \"noc\"\n").unwrap();
        let a = h.beat(Duration::from_millis(5_999));
        assert_eq!(
            (a.subject.as_str(), a.severity, a.dedup_key.as_deref()),
            (
                "Heartbeat from beat",
                Severity::LOW,
                Some("heartbeat:beat:5")
            )
        );
        assert_eq!(a.groups, ["ops"]);
        assert_eq!(a.labels.get("team").map(String::as_str), Some("noc"));
        assert_eq!(a.labels.get("heartbeat").map(String::as_str), Some("beat"));
        assert_eq!(h.beat(Duration::from_millis(5_000)).dedup_key, a.dedup_key);
    }

    #[tokio::test]
    async fn beats_are_submitted_refusals_retried_and_shutdown_honoured() {
        let host = TestHost::new("beat");
        host.refuse_next(2);
        let source = Arc::new(heartbeat(&host, "interval_ms = 300\n").unwrap());
        let (ctx, stop) = host.source_context();
        let run = tokio::spawn(Arc::clone(&source).run(ctx));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while host.accepted().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "two beats within 10 s; health: {}",
                source.health()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(source.health(), Health::ok());
        stop.cancel();
        assert_eq!(run.await.expect("run does not panic"), Ok(()));
        let keys: Vec<_> = host
            .accepted()
            .iter()
            .map(|a| a.dedup_key.clone())
            .collect();
        assert_ne!(keys[0], keys[1]);
    }
}
