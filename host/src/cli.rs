//! The command line: `run`, `check`, `route`, `plugins` and `demo`.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::{
    app::Bridge,
    config::{Config, ConfigError},
    plugins::{self, Plugins, loader},
    reload::{ReloadError, Reloaded},
};

/// Turns inbound notifications into instant messages for the people who must see them now.
#[derive(Parser, Debug)]
#[command(name = "alertbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the bridge (SIGTERM/SIGINT: graceful stop).
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Start although the queue file vanished or is empty while the data folder says it
        /// held data (what it held is lost).
        #[arg(long)]
        accept_empty_queue: bool,
    },
    /// Check or salvage the durable queue, or move it between backends (`queue check`,
    /// `queue salvage`, `queue export`, `queue import`).
    Queue {
        #[command(subcommand)]
        command: crate::queue_cmd::QueueCommand,
    },
    /// Validate the config and have each instance's plugin check its part; exit 1 listing
    /// every error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show which routes an alert (a JSON or XML file, docs/alert-format.md) matches, who it
    /// reaches through which sinks, and what happens to offline recipients.
    Route {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        alert: PathBuf,
        /// The source instance the alert comes from, for routes that match on it.
        #[arg(long, default_value = "")]
        source: String,
    },
    /// Run the bridge with the bundled simulators (UCWA, UCMA bridge, POP3) on loopback, and
    /// show a mail and a webhook post turning into IMs.
    Demo {
        /// Folder for the demo's config, queue and mailbox (default: a new private one, mode 0700,
        /// under an unpredictable name in $TMPDIR).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Port of the status page and admin API.
        #[arg(long, default_value_t = 9180)]
        admin_port: u16,
        /// Port of the webhook source.
        #[arg(long, default_value_t = 9181)]
        webhook_port: u16,
    },
    /// List plugin files: name, version, kinds, or why they cannot be loaded.
    Plugins {
        /// Folder to scan (default: the folder of this executable).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Why a command failed, for `main` to print.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    PluginDir(#[from] loader::DirError),
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error(transparent)]
    AlertFile(#[from] crate::route_preview::AlertFileError),
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Demo(#[from] crate::demo::DemoError),
}

fn load_plugins(dir: &Path) -> Result<Plugins, CliError> {
    Ok(loader::load_dir(dir)?)
}

fn plugin_dir(config: &Config) -> PathBuf {
    config
        .host
        .plugin_dir
        .clone()
        .unwrap_or_else(loader::default_dir)
}

/// `alertbridge check`: every mistake in the config and in each instance's plugin config.
pub fn check(path: &Path) -> Result<Vec<ConfigError>, CliError> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return Ok(e.0),
    };
    let plugins = load_plugins(&plugin_dir(&config))?;
    let slots = match plugins::bind(&config.sources, &config.sinks, &plugins) {
        Ok(s) => s,
        Err(errors) => {
            return Ok(errors
                .iter()
                .map(|e| config.locate_plugin_error(&e.instance, None, &e.to_string()))
                .collect());
        }
    };
    let mut errors = Vec::new();
    for slot in slots {
        if let Err(e) = slot.check_config() {
            errors.push(config.locate_plugin_error(&slot.config, e.key.as_deref(), &e.message));
        }
    }
    // With `[queue] backend = "postgres"`: reachable, and where its schema stands.
    match config.queue.schema_report() {
        Some(Ok(line)) => println!("{line}"),
        Some(Err(message)) => errors.push(ConfigError {
            file: config.path.display().to_string(),
            line: 0,
            column: 0,
            message,
        }),
        None => {}
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Ok(errors)
}

/// `alertbridge route`: the routing report for one alert file.
pub fn route(config: &Path, alert: &Path, source: &str) -> Result<String, CliError> {
    let config = Config::load(config)?;
    let alert = crate::route_preview::read_alert(alert)?;
    Ok(crate::route_preview::explain(&config, source, alert))
}

/// `alertbridge plugins`: one line per file.
pub fn plugins(dir: Option<PathBuf>) -> Result<String, CliError> {
    let dir = dir.unwrap_or_else(loader::default_dir);
    let plugins = load_plugins(&dir)?;
    let mut out = format!("plugins in {}:\n", dir.display());
    for p in &plugins.loaded {
        let kinds: Vec<String> = p.kinds.iter().map(|(k, r)| format!("{r} {k}")).collect();
        out.push_str(&format!(
            "  {}  {} {} (api {}): {}\n",
            p.path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            p.name,
            p.version,
            p.api_version,
            kinds.join(", ")
        ));
    }
    for r in &plugins.refused {
        out.push_str(&format!(
            "  {}  refused: {}\n",
            r.path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            r.reason
        ));
    }
    if plugins.loaded.is_empty() && plugins.refused.is_empty() {
        out.push_str("  (no plugin files)\n");
    }
    Ok(out)
}

/// `alertbridge run`: until SIGTERM or SIGINT; SIGHUP (or `POST /-/reload`) reloads the config.
pub async fn run(path: &Path, accept_empty_queue: bool) -> Result<(), CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut config = Config::load(path)?;
    config.host.accept_empty_queue = accept_empty_queue;
    let plugin_dir = plugin_dir(&config);
    let mut plugins = load_plugins(&plugin_dir)?;
    let (mut bridge, mut reloads) = Bridge::start(config, &plugins).await?;
    let mut term = signal(SignalKind::terminate()).map_err(CliError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(CliError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(CliError::Signals)?;
    loop {
        let reply = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => None,
            Some(reply) = reloads.recv() => Some(reply),
        };
        let result = reload(&mut bridge, &mut plugins, path, &plugin_dir).await;
        match &result {
            Ok(_) => {}
            Err(errors) => {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                tracing::error!(errors = %errors.join("; "), "Reload refused; the running config stays.")
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(result);
        }
    }
    bridge.stop().await;
    Ok(())
}

async fn reload(
    bridge: &mut Bridge,
    plugins: &mut Plugins,
    path: &Path,
    plugin_dir: &Path,
) -> Result<Reloaded, Vec<ReloadError>> {
    let config = Config::load(path)
        .map_err(|e| e.0.into_iter().map(ReloadError::from).collect::<Vec<_>>())?;
    plugins
        .scan(plugin_dir)
        .map_err(|e| vec![ReloadError::from(e)])?;
    bridge.reload(config, plugins).await
}
