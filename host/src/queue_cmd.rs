//! `alertbridge queue check|salvage|export|import`: the operator's tools for a queue file that
//! will not open, and for moving a queue between backends (redb, the log, PostgreSQL).

use std::{
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use clap::Subcommand;

use crate::{
    config::{Config, QueueBackend},
    model::StoredAlert,
    queue::{
        self, LogQueue, QueueError,
        transfer::{self, TransferError},
    },
};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Say what is wrong with the queue file (read-only; run with the bridge stopped). Exit 0
    /// if it is sound, 1 listing each problem. With PostgreSQL: whether the database is
    /// reachable and where its schema stands.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Copy every readable alert of a damaged queue file into a fresh one; the damaged file is
    /// kept aside as `queue.redb.damaged-<unix seconds>` (run with the bridge stopped).
    Salvage {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write every alert of the configured queue (`[queue]`), with its id and outcomes, to
    /// standard output as lines of JSON (run with the bridge stopped).
    Export {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read an export from standard input into the configured queue, which must hold no
    /// alerts yet: ids and outcomes are kept, dedup keys within the window rebuilt (run with
    /// the bridge stopped).
    Import {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Why a queue command could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueueCmdError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(
        "salvage repairs the embedded queue file; with [queue] backend = \"postgres\" the database's own backups and replicas are the way back"
    )]
    NotAFile,
    #[error(
        "`alertbridge queue salvage` is not built for [queue] backend = \"log\"; the bridge checks the log at every start (damage is refused with one line naming the segment and byte), and `alertbridge queue export` reads every alert of a sound log"
    )]
    NotForLog,
    #[error("cannot read the export from standard input")]
    Stdin(#[source] std::io::Error),
}

/// Runs one queue command, printing its report.
pub fn run(command: QueueCommand) -> Result<ExitCode, QueueCmdError> {
    match command {
        QueueCommand::Check { config } => {
            let config = Config::load(&config)?;
            // The shared queue has no file: say whether its database is reachable and where
            // its schema stands.
            if let Some(state) = config.queue.schema_report() {
                return Ok(match state {
                    Ok(line) => {
                        println!("{line}");
                        ExitCode::SUCCESS
                    }
                    Err(line) => {
                        println!("{line}");
                        ExitCode::FAILURE
                    }
                });
            }
            let report = if config.queue == QueueBackend::Log {
                LogQueue::check(&config.host.data_dir)?
            } else {
                queue::check(&config.host.data_dir)?
            };
            print!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        QueueCommand::Salvage { config } => {
            let config = Config::load(&config)?;
            if let QueueBackend::Postgres(_) = config.queue {
                return Err(QueueCmdError::NotAFile);
            }
            if config.queue == QueueBackend::Log {
                return Err(QueueCmdError::NotForLog);
            }
            let report = queue::salvage(&config.host.data_dir)?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Export { config } => {
            let config = Config::load(&config)?;
            let alerts = match &config.queue {
                QueueBackend::Redb => transfer::export_redb(&config.host.data_dir)?,
                QueueBackend::Log => LogQueue::export(&config.host.data_dir)?,
                QueueBackend::Postgres(pg) => {
                    runtime()?.block_on(queue::postgres::transfer::export(pg))?
                }
            };
            let mut out = std::io::stdout().lock();
            transfer::write_export(config.queue.name(), &alerts, &mut out)?;
            out.flush().map_err(TransferError::Write)?;
            eprintln!("exported {}", summary(&alerts));
            Ok(ExitCode::SUCCESS)
        }
        QueueCommand::Import { config } => {
            let config = Config::load(&config)?;
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(QueueCmdError::Stdin)?;
            let alerts = transfer::read_export(&bytes)?;
            let window_ms = config.host.dedup_window.as_millis() as i64;
            let keys = match &config.queue {
                QueueBackend::Redb => {
                    transfer::import_redb(&config.host.data_dir, &alerts, window_ms)?
                }
                QueueBackend::Log => LogQueue::import(&config.host.data_dir, &alerts, window_ms)?,
                QueueBackend::Postgres(pg) => runtime()?
                    .block_on(queue::postgres::transfer::import(pg, &alerts, window_ms))?,
            };
            println!(
                "imported {} into the {} queue, {keys} dedup key{}",
                summary(&alerts),
                config.queue.name(),
                if keys == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, QueueCmdError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| QueueCmdError::Queue(QueueError::storage(e)))
}

/// "12 alerts (3 unfinished)".
fn summary(alerts: &[StoredAlert]) -> String {
    let unfinished = alerts.iter().filter(|a| !a.is_finished()).count();
    format!(
        "{} alert{} ({unfinished} unfinished)",
        alerts.len(),
        if alerts.len() == 1 { "" } else { "s" }
    )
}
