//! `alertbridge queue check|salvage`: the operator's tools for a queue file that will not open.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use crate::{
    config::Config,
    queue::{self, QueueError},
};

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Say what is wrong with the queue file (read-only; run with the bridge stopped). Exit 0
    /// if it is sound, 1 listing each problem.
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
}

/// Why a queue command could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueueCmdError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Runs one queue command, printing its report.
pub fn run(command: QueueCommand) -> Result<ExitCode, QueueCmdError> {
    match command {
        QueueCommand::Check { config } => {
            let config = Config::load(&config)?;
            let report = queue::check(&config.host.data_dir)?;
            print!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        QueueCommand::Salvage { config } => {
            let config = Config::load(&config)?;
            let report = queue::salvage(&config.host.data_dir)?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
