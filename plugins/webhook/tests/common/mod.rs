//! Shared by the socket tests: start a `webhook` source on loopback with a `TestHost`, through
//! its real constructor, and stop it.

#![allow(dead_code)] // Each test binary uses a different part.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    PluginError,
    kit::{CancellationToken, Setup, Source as _},
    testing::TestHost,
};
use alertbridge_webhook::source::WebhookSource;
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "socket-test-token";

/// A running source.
pub struct Running {
    pub host: TestHost,
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<Result<(), PluginError>>,
    pub dir: TempDir,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the source and waits for `run` to return.
    pub async fn shutdown(self) -> Result<(), PluginError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after stop")
            .expect("run task")
    }
}

/// Starts a source on `listen` with the config lines `extra`; `{dir}` in them is replaced by a
/// temp folder (for TLS files).
pub async fn start_on(
    listen: &str,
    token: &str,
    extra: &str,
    prepare: impl FnOnce(&std::path::Path),
) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    prepare(dir.path());
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("# test tokens\n{token}\n")).expect("write tokens");
    let extra = extra.replace("{dir}", &dir.path().display().to_string());
    let host = TestHost::new("hook");
    let setup = Setup {
        instance: "hook".into(),
        kind: "webhook".into(),
        config_toml: format!("listen = \"{listen}\"\ntokens_file = {tokens:?}\n{extra}"),
        host: host.host(),
    };
    let source = Arc::new(WebhookSource::new(setup).expect("valid config"));
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    let mut addr = None;
    for _ in 0..500 {
        addr = source.local_addr();
        if addr.is_some() || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let addr = addr.unwrap_or_else(|| panic!("source did not bind {listen}"));
    Running {
        host,
        addr,
        stop,
        task,
        dir,
    }
}

pub async fn start(extra: &str) -> Running {
    start_on("127.0.0.1:0", TOKEN, extra, |_| {}).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}
