//! A bed for incident tests through UCMA (OCS 2007 R2 / Lync 2010): the UCMA bridge simulator
//! on its own runtime and the real host with the `ucma` sink `ocs` (inbound replies on), whose
//! route `db` escalates through the policy `db-oncall` with the levels a test names; the source
//! is the `test-source` plugin (`src`) or the `webhook` (`monitoring`, with a token).

use crate::{
    ha::Scratch,
    harness::{Host, free_port},
    ucma_sim::{Availability, SimConfig, SimHandle, Simulator},
};

/// The simulator, the host and the source's port.
pub struct UcmaBed {
    pub host: Host,
    pub sim: SimHandle,
    /// The simulator's runtime.
    pub rt: tokio::runtime::Runtime,
    /// The test source's control port, or the webhook's port.
    pub port: u16,
    /// The host's folder, kept for a look if the test failed.
    pub dir: Scratch,
}

impl UcmaBed {
    /// Starts the simulator (shared `secret`, `users` online) and the host; `levels` are the
    /// policy's (user, `after_secs`); with `webhook_token` the source is the webhook taking it.
    pub fn start(
        secret: &str,
        users: &[&str],
        levels: &[(&str, u64)],
        webhook_token: Option<&str>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = users.iter().fold(SimConfig::new(secret), |c, u| {
            c.user(u, Availability::Online)
        });
        let sim = rt
            .block_on(Simulator::start(config))
            .expect("start the bridge simulator");
        let dir = Scratch::new();
        let d = dir.path().display();
        let (admin, port) = (free_port(), free_port());
        let source = match webhook_token {
            None => format!(
                "name = \"src\"\nplugin = \"test-source\"\n[source.config]\n\
                 control_listen = \"127.0.0.1:{port}\""
            ),
            Some(token) => {
                std::fs::write(dir.path().join("tokens"), format!("{token}\n"))
                    .expect("write the webhook tokens");
                format!(
                    "name = \"monitoring\"\nplugin = \"webhook\"\n[source.config]\n\
                     listen = \"127.0.0.1:{port}\"\ntokens_file = \"{d}/tokens\""
                )
            }
        };
        let levels: String = levels
            .iter()
            .map(|(user, secs)| format!("  {{ users = [\"{user}\"], after_secs = {secs} }},\n"))
            .collect();
        let config = format!(
            r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 50
retry_max_ms = 200
presence_cache_ms = 0

[[source]]
{source}

[[sink]]
name = "ocs"
plugin = "ucma"
[sink.config]
endpoint = "{endpoint}"
secret = "{secret}"
health_interval_ms = 200
inbound = true
inbound_wait_ms = 1000

[[escalation]]
name = "db-oncall"
levels = [
{levels}]

[[route]]
name = "db"
escalation = "db-oncall"
sinks = ["ocs"]
offline = {{ policy = "skip" }}
"#,
            endpoint = sim.url(),
        );
        let host = Host::start(dir.path(), admin, &config);
        Self {
            host,
            sim,
            rt,
            port,
            dir,
        }
    }
}
