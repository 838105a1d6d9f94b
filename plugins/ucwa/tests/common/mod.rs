//! Shared set-up of the integration tests: a simulator with a few users and a running sink
//! pointed at it.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    Message, Severity,
    kit::{CancellationToken, Setup, Sink},
    testing::TestHost,
};
use alertbridge_testbed::ucwa_sim::{SimConfig, SimHandle, Simulator, UserSpec};
use alertbridge_ucwa::UcwaSink;
use tokio::task::JoinHandle;

/// The sending account and the recipients every test knows.
pub fn users() -> Vec<UserSpec> {
    vec![
        UserSpec::new("alerts@contoso.com", "s3cret&pw", "Online"),
        UserSpec::new("alice@contoso.com", "a", "Online"),
        UserSpec::new("bob@contoso.com", "b", "Offline"),
        UserSpec::new("carol@contoso.com", "c", "Busy"),
        UserSpec::new("dave@contoso.com", "d", "Online"),
        UserSpec::new("erin@contoso.com", "e", "Online"),
    ]
}

/// A simulator with [`users`] and `tweak` applied to its config.
pub async fn simulator(tweak: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig {
        users: users(),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config)
        .await
        .expect("start the UCWA simulator")
}

/// A running sink and what stops it.
pub struct Running {
    pub sink: Arc<UcwaSink>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), alertbridge_plugin_api::PluginError>>,
}

impl Running {
    /// Stops the sink and waits for `run` to return.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        let Ok(Ok(Ok(()))) = result else {
            panic!("run did not end cleanly: {result:?}")
        };
    }
}

/// Starts a sink signed in as alerts@contoso.com against `discover_url`; `extra` is more TOML.
pub fn start_sink(discover_url: &str, extra: &str) -> Running {
    start_sink_as(discover_url, "alerts@contoso.com", "s3cret&pw", extra)
}

/// Starts a sink with these credentials; `extra` is more TOML (may override the timeout).
pub fn start_sink_as(discover_url: &str, username: &str, password: &str, extra: &str) -> Running {
    let timeout = if extra.contains("request_timeout_secs") {
        ""
    } else {
        "request_timeout_secs = 10\n"
    };
    let config_toml = format!(
        "autodiscover_url = \"{discover_url}\"\nallow_http = true\nusername = \"{username}\"\n\
         password = \"{password}\"\npresence_cache_ms = 0\n{timeout}{extra}"
    );
    start_sink_config(config_toml)
}

/// Starts a sink with exactly this `[sink.config]` table.
pub fn start_sink_config(config_toml: String) -> Running {
    start_sink_on(config_toml, &TestHost::new("lync"))
}

/// Starts a sink signed in as alerts@contoso.com against `discover_url`, talking to `host`.
pub fn start_sink_with_host(discover_url: &str, extra: &str, host: &TestHost) -> Running {
    let config_toml = format!(
        "autodiscover_url = \"{discover_url}\"\nallow_http = true\nusername = \"alerts@contoso.com\"\n\
         password = \"s3cret&pw\"\npresence_cache_ms = 0\nrequest_timeout_secs = 10\n{extra}"
    );
    start_sink_on(config_toml, host)
}

/// Starts a sink with this `[sink.config]` table, talking to `host`.
pub fn start_sink_on(config_toml: String, host: &TestHost) -> Running {
    let setup = Setup {
        instance: "lync".into(),
        kind: "ucwa".into(),
        config_toml,
        host: host.host(),
    };
    let sink = Arc::new(UcwaSink::new(setup).expect("valid config"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(sink.clone().run(shutdown.clone()));
    Running {
        sink,
        shutdown,
        task,
    }
}

/// Waits (up to 20 s) until the sink's health message contains `needle`, and returns it.
pub async fn wait_health_text(running: &Running, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let health = running.sink.health();
        if health.message.contains(needle) {
            return health.message.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "health never mentioned `{needle}`: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message to `recipients`.
pub fn message(subject: &str, body: &str, recipients: &[&str]) -> Message {
    Message {
        alert_id: 1,
        attempt: 1,
        source: "test".into(),
        subject: subject.into(),
        body: body.into(),
        severity: Severity::NORMAL,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        ..Message::default()
    }
}
