//! A real Prometheus Alertmanager of one test's own (free port, own folder), started with
//! `scripts/alertmanager.sh` and stopped when dropped, also when the test fails: its only
//! receiver is the webhook URL the test gives, so it never meets the instance `scripts/test`
//! starts (whose receiver is a fixed port other tests listen on).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::harness::{free_port, request};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/alertmanager.sh")
}

/// A running Alertmanager.
pub struct Alertmanager {
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Alertmanager {
    /// Starts one in `dir` whose receiver is `webhook_url`, sending `Authorization: Bearer
    /// <token>` with the token it writes to `dir/webhook.token` (see [`Alertmanager::token_file`]);
    /// group_wait 1 s, group_interval 2 s, resolved notices sent. Call it after
    /// [`crate::servers::alertmanager_program`] said it is installed.
    pub fn start(dir: &Path, webhook_url: &str, token: &str) -> Self {
        let port = free_port();
        let out = Command::new(script())
            .arg("start")
            .arg(dir)
            .arg(webhook_url)
            .env("ALERTBRIDGE_TEST_ALERTMANAGER_PORT", port.to_string())
            .env("ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN", token)
            .output()
            .expect("run scripts/alertmanager.sh");
        let this = Self {
            dir: dir.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
        };
        assert!(
            out.status.success(),
            "scripts/alertmanager.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        this
    }

    /// The file holding the bearer token it sends (a webhook's `tokens_file`).
    pub fn token_file(&self) -> PathBuf {
        self.dir.join("webhook.token")
    }

    /// `POST /api/v2/alerts` (as Prometheus does); panics unless it answers 200.
    pub fn post_alerts(&self, alerts: &Value) {
        let url = format!("{}/api/v2/alerts", self.url);
        let answer = request(
            "POST",
            &url,
            &[("content-type", "application/json")],
            &alerts.to_string(),
        );
        assert!(
            matches!(answer, Some((200, _))),
            "Alertmanager refused the alerts: {answer:?}"
        );
    }

    /// Its log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("am.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).output();
    }
}

/// Now as RFC 3339 in UTC (whole seconds), as Alertmanager's API wants `startsAt`/`endsAt`.
pub fn rfc3339_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
