//! `pop3-server`: runs the scriptable POP3 test server on its own, for the demo and for poking
//! at it by hand. Prints `listening on ADDR` as its first line of output; runs until SIGINT or
//! SIGTERM.

use std::{net::SocketAddr, time::Duration};

use alertbridge_testbed::pop3_server::{Faults, Pop3Server, ServerConfig, UserConfig};
use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// A small POP3 server (RFC 1939, APOP, SASL PLAIN) serving Maildir folders.
#[derive(Debug, Parser)]
#[command(name = "pop3-server")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A mailbox user, `NAME:PASSWORD:MAILDIR` (repeatable); missing Maildir folders are created.
    #[arg(long = "user", required = true)]
    users: Vec<UserConfig>,
    /// Wait this long before every reply.
    #[arg(long, default_value_t = 0)]
    reply_delay_ms: u64,
    /// Cut the connection in the middle of the N-th RETR (once).
    #[arg(long)]
    drop_in_retr: Option<u32>,
    /// Refuse every login.
    #[arg(long)]
    refuse_logins: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = ServerConfig::new().faults(Faults {
        drop_in_retr: args.drop_in_retr,
        reply_delay: Duration::from_millis(args.reply_delay_ms),
        refuse_logins: args.refuse_logins,
        ..Faults::default()
    });
    config.listen = args.listen;
    config.users = args.users;
    let mut sigterm = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let server = Pop3Server::start(config)
        .await
        .context("start the POP3 server")?;
    println!("listening on {}", server.addr());
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    server.stop().await;
    Ok(())
}
