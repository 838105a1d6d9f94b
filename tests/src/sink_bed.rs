//! A bed for tests of what the host sends and the status page shows: the real host with the
//! `test-source` plugin (`src`, driven through its control port) and the `test-sink` plugin
//! (`lync`, which records every IM), its admin API and `public_url` on a free port. A test
//! gives only its routes (and groups).

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
    /// The test source's control port (for [`crate::harness::emit`]).
    pub control: u16,
    /// The config the host started with.
    pub config: String,
}

impl SinkBed {
    /// Starts the host with `routes` (TOML: `[groups]`, `[[route]]`s on sink `lync`).
    pub fn start(routes: &str) -> Self {
        let dir = Scratch::new();
        let (admin, control) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
public_url = "http://127.0.0.1:{admin}/"

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "lync"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
{routes}"#
        );
        let host = Host::start(dir.path(), admin, &config);
        Self {
            dir,
            host,
            admin,
            control,
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
