//! The `webhook` source on its own, with an in-process `TestHost` standing in for the host (so
//! no durable queue is in the loop yet), for `bench/bench.sh`.
//!
//! Run with
//! ```not_rust
//! cargo run --release -p alertbridge-webhook --example bench-server -- 127.0.0.1:19182 TOKEN
//! ```
//! It prints `listening on ADDR` when ready, serves until SIGTERM or Ctrl-C, then prints how
//! many alerts the host took.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    kit::{Setup, Source as _},
    testing::TestHost,
};
use alertbridge_webhook::source::WebhookSource;
use tokio::signal::unix::{SignalKind, signal};

// As many worker threads as the plugin's own runtime (`WebhookSource::WORKER_THREADS`).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:19182".to_owned());
    let token = args.next().unwrap_or_else(|| "bench-token".to_owned());
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{token}\n"))?;
    let host = TestHost::new("bench");
    let setup = Setup {
        instance: "bench".into(),
        kind: "webhook".into(),
        config_toml: format!("listen = \"{listen}\"\ntokens_file = {tokens:?}\n"),
        host: host.host(),
    };
    let source = Arc::new(WebhookSource::new(setup)?);
    let (ctx, stop) = host.source_context();
    let task = tokio::spawn(Arc::clone(&source).run(ctx));
    while source.local_addr().is_none() {
        if task.is_finished() {
            task.await??;
            return Err("the source stopped before it was listening".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "listening on {}",
        source
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.cancel();
    task.await??;
    println!("accepted {}", host.accepted().len());
    Ok(())
}
