//! `ucma-sim`: runs the UCMA bridge simulator on its own, for the demo and for poking at it by
//! hand. Prints `listening on http://ADDR` as its first line of output.

use std::{net::SocketAddr, path::PathBuf};

use alertbridge_testbed::ucma_sim::{Limits, SimConfig, Simulator, parse_users};
use anyhow::Context as _;
use clap::Parser;

/// A simulated UCMA bridge (docs/ucma-bridge-protocol.md) with a control API and a status page.
#[derive(Debug, Parser)]
#[command(name = "ucma-sim")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The shared secret clients authenticate with.
    #[arg(long)]
    secret: String,
    /// Users file: one `sip:user@host [Availability]` per line.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Refuse requests that are not HMAC-signed.
    #[arg(long)]
    require_signature: bool,
    /// Most targets in one presence query.
    #[arg(long, default_value_t = Limits::default().max_presence_targets)]
    max_presence_targets: usize,
    /// Most recipients in one message.
    #[arg(long, default_value_t = Limits::default().max_recipients)]
    max_recipients: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = SimConfig::new(args.secret);
    config.listen = args.listen;
    config.require_signature = args.require_signature;
    config.limits.max_presence_targets = args.max_presence_targets;
    config.limits.max_recipients = args.max_recipients;
    if let Some(path) = &args.users {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        config.users =
            parse_users(&text).with_context(|| format!("users file {}", path.display()))?;
    }
    let sim = Simulator::start(config)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    println!("listening on {}", sim.url());
    tokio::signal::ctrl_c().await.context("wait for ctrl-c")?;
    drop(sim);
    Ok(())
}
