//! The `alertbridge` binary.

use std::{io::IsTerminal as _, process::ExitCode};

use alertbridge::cli::{self, Cli, Command};
use clap::Parser;
use tracing_subscriber::EnvFilter;

mod logfmt;

/// glibc's allocator spent a fifth of the pipeline's time consolidating chunks; plugins keep
/// their own allocator (every value that crosses is freed by the side that made it).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .fmt_fields(logfmt::EscapedFields)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alertbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let errors = cli::check(&config)?;
            if errors.is_empty() {
                println!("{}: ok", config.display());
                return Ok(ExitCode::SUCCESS);
            }
            for e in &errors {
                println!("{e}");
            }
            println!(
                "{} error{} found",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::FAILURE)
        }
        Command::Route {
            config,
            alert,
            source,
        } => {
            print!("{}", cli::route(&config, &alert, &source)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { dir } => {
            print!("{}", cli::plugins(dir)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            admin_port,
            webhook_port,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("alertbridge")
                .build()?;
            runtime
                .block_on(alertbridge::demo::run(dir, admin_port, webhook_port))
                .map_err(cli::CliError::from)?;
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue { command } => Ok(alertbridge::queue_cmd::run(command)?),
        Command::Run {
            config,
            accept_empty_queue,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("alertbridge")
                .build()?;
            runtime.block_on(cli::run(&config, accept_empty_queue))?;
            // Plugin runtimes were stopped with their instances; do not wait for stragglers.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            Ok(ExitCode::SUCCESS)
        }
    }
}
