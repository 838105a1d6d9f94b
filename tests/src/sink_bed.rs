//! A bed for tests of what the host sends and the status page shows: the real host with the
//! `test-source` plugin (`src`, driven through its control port) or the `webhook` source
//! (`monitoring`, with a token, and an admin token for the API and page), and the `test-sink`
//! plugin (`lync`, which records every IM), its admin API and `public_url` on a free port. A
//! test gives only its routes (and groups).

use std::path::PathBuf;

use serde_json::Value;

use crate::{
    ha::Scratch,
    harness::{Host, free_port},
};

/// The host, its folder and the ports a test talks to.
pub struct SinkBed {
    /// The host's folder (config, log, data, record file), kept for a look if the test failed.
    pub dir: Scratch,
    pub host: Host,
    pub admin: u16,
    /// The source's port: the test source's control port (for [`crate::harness::emit`]), or
    /// the webhook's.
    pub port: u16,
    /// The config the host started with.
    pub config: String,
}

impl SinkBed {
    /// Starts the host with the test source and `routes` (TOML: `[groups]`, `[[route]]`s and
    /// `[[escalation]]`s on sink `lync`).
    pub fn start(routes: &str) -> Self {
        Self::start_with(None, routes)
    }

    /// Starts the host with the webhook source taking `hook_token`, the admin API and page
    /// asking for `admin_token`, and `routes`.
    pub fn start_webhook(hook_token: &str, admin_token: &str, routes: &str) -> Self {
        Self::start_with(Some((hook_token, admin_token)), routes)
    }

    fn start_with(webhook: Option<(&str, &str)>, routes: &str) -> Self {
        let dir = Scratch::new();
        let (admin, port) = (free_port(), free_port());
        let d = dir.path().display();
        let (admin_token, source) = match webhook {
            None => (
                String::new(),
                format!(
                    "name = \"src\"\nplugin = \"test-source\"\n[source.config]\n\
                     control_listen = \"127.0.0.1:{port}\""
                ),
            ),
            Some((hook_token, admin_token)) => {
                std::fs::write(dir.path().join("tokens"), format!("{hook_token}\n"))
                    .expect("write the webhook tokens");
                std::fs::write(dir.path().join("admin.token"), format!("{admin_token}\n"))
                    .expect("write the admin token");
                (
                    "admin_token_file = \"admin.token\"".to_owned(),
                    format!(
                        "name = \"monitoring\"\nplugin = \"webhook\"\n[source.config]\n\
                         listen = \"127.0.0.1:{port}\"\ntokens_file = \"{d}/tokens\""
                    ),
                )
            }
        };
        let config = format!(
            r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{admin}/"
{admin_token}

[delivery]
per_recipient_per_minute = 0

[[source]]
{source}

[[sink]]
name = "lync"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
{routes}"#
        );
        // Host::start waits for the source's port too (the admin API answers first).
        let host = Host::start(dir.path(), admin, &config);
        Self {
            dir,
            host,
            admin,
            port,
            config,
        }
    }

    /// The test sink's record file: one JSON object per IM.
    pub fn record_file(&self) -> PathBuf {
        self.dir.path().join("delivered.jsonl")
    }

    /// The IMs the test sink recorded, in order.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
