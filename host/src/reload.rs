//! A reload's vocabulary: what a reload changed ([`Reloaded`]), why one was refused
//! ([`ReloadError`]) and the request the admin API sends the main loop ([`ReloadRequest`]).
//! It sits below both [`crate::app`] (which reloads) and [`crate::admin`] (which asks for it),
//! so neither imports the other for it.

use crate::{config::ConfigError, plugins::loader::DirError};

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub kept: Vec<String>,
    pub routes: usize,
}

/// One reason a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A mistake in the new config file, or in an instance's plugin config.
    #[error("{0}")]
    Config(ConfigError),
    /// A `[host]` setting changed that only a restart can apply.
    #[error("[host] {0} changed: that needs a restart")]
    NeedsRestart(&'static str),
    /// The plugin folder could not be scanned again.
    #[error("{}", crate::error_chain(.0))]
    Plugins(#[from] DirError),
}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// A request from the admin API to reload; answered with the outcome or every reason.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<Reloaded, Vec<ReloadError>>>;
