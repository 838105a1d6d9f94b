//! `ucwa-sim`: runs the UCWA server simulator on loopback for the demo and manual testing.
//! Prints `listening on http://ADDR` as its first stdout line, then serves until Ctrl-C.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

use alertbridge_testbed::ucwa_sim::{SimConfig, Simulator, UserSpec, load_users};
use clap::Parser;

/// UCWA (Lync 2013 / Skype for Business) server simulator.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (autodiscover, user, token and, without --pool-listen, everything).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A second listener for `applications`, with tokens of its own (a second pool).
    #[arg(long)]
    pool_listen: Option<SocketAddr>,
    /// Users file: `user password [availability]` per line.
    #[arg(long)]
    users: Option<PathBuf>,
    /// Token lifetime (`expires_in`) in seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    token_lifetime_secs: u64,
    /// How long a P-GET is parked before it is released empty, in seconds.
    #[arg(long, default_value_t = 180)]
    pget_timeout_secs: u64,
    /// How long recipients take to answer an invitation, in milliseconds.
    #[arg(long, default_value_t = 0)]
    answer_delay_ms: u64,
    /// How long an ignored invitation rings before it fails, in seconds.
    #[arg(long, default_value_t = 30)]
    invitation_timeout_secs: u64,
    /// Answer `GET /` with a redirect hop first.
    #[arg(long)]
    redirect: bool,
    /// With --pool-listen: the web host's user document links to the pool's user document.
    #[arg(long)]
    user_hop: bool,
    /// Answer the first N UCWA requests with 429.
    #[arg(long, default_value_t = 0)]
    throttle_first: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let users = match &args.users {
        Some(path) => load_users(path)?,
        None => vec![
            UserSpec::new("alerts@contoso.com", "alertpass", "Online"),
            UserSpec::new("alice@contoso.com", "alicepass", "Online"),
            UserSpec::new("bob@contoso.com", "bobpass", "Offline"),
        ],
    };
    let config = SimConfig {
        listen: args.listen,
        pool_listen: args.pool_listen,
        users,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        pget_timeout: Duration::from_secs(args.pget_timeout_secs),
        answer_delay: Duration::from_millis(args.answer_delay_ms),
        invitation_timeout: Duration::from_secs(args.invitation_timeout_secs),
        redirect_hop: args.redirect,
        user_hop: args.user_hop,
        invalid_token_403: false,
        throttle_first: args.throttle_first,
    };
    let handle = Simulator::start(config).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", handle.discover_url())?;
    if let Some(pool) = handle.pool_addr() {
        writeln!(out, "pool on http://{pool}")?;
    }
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    handle.stop().await;
    Ok(())
}
