//! What the dispatcher needs from the sinks, as plain Rust: find a configured sink by name, ask
//! it who is reachable, hand it a message. The plugin side (`crate::plugins`) implements these
//! traits for its sink handles; the dispatcher's unit tests implement them with fakes. Nothing
//! here names an FFI type.
//!
//! Who owns what:
//! - the handle enforces the call time-outs it is given (a call that does not answer in time
//!   resolves to a [`ErrorKind::TRANSIENT`](alertbridge_plugin_api::ErrorKind) error and is
//!   dropped), and a call that panicked in the plugin resolves to
//!   [`ErrorKind::PANICKED`](alertbridge_plugin_api::ErrorKind) *and* has the instance
//!   recreated — the dispatcher only records the outcome;
//! - the time-out values are `[delivery]` settings, which a reload changes, so the dispatcher
//!   passes the ones in force with each call.
//!
//! [`IncidentPort`] is the incident engine as the dispatcher and ingest see it (implemented in
//! `crate::incidents`): open or join an incident for an alert a route with an escalation
//! policy took, learn how a page went, resolve by dedup key.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{Message, PluginError, Presence, RecipientResult};

use crate::model::StoredAlert;
pub use futures::future::BoxFuture;

/// One running incarnation of a sink instance.
pub trait SinkPort: Send + Sync {
    /// The instance name (`[[sink]] name`), for logs.
    fn name(&self) -> &str;

    /// The presence of `users`, as the sink's server tells it. Users the sink could not tell
    /// about are left out of the answer. An error is the whole query's (the caller then treats
    /// every user as unheard).
    fn presence<'a>(
        &'a self,
        users: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Presence>, PluginError>>;

    /// Sends `message` to its recipients; one result per recipient (a recipient left out counts
    /// as a transient failure). An error is the whole call's: every recipient of the message
    /// shares it.
    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<RecipientResult>, PluginError>>;
}

/// Where a configured sink stands when a round looks it up.
#[derive(Clone)]
pub enum SinkLookup {
    /// No sink of that name is configured (any more: a reload removed it).
    Unknown,
    /// Configured, but not running (starting, restarting after a failure, or failing to start).
    NotRunning,
    /// Running: this incarnation takes the calls.
    Running(Arc<dyn SinkPort>),
}

/// The configured sinks, by instance name.
pub trait Sinks: Send + Sync {
    /// Looks up sink `name`; if it is configured and not running, waits up to `wait` for it to
    /// come up (a sink starting with the host, or after a restart, is not a sink down).
    fn lookup<'a>(&'a self, name: &'a str, wait: Duration) -> BoxFuture<'a, SinkLookup>;
}

/// Why the incident engine did not take a change.
#[derive(Debug, thiserror::Error)]
pub enum IncidentFault {
    /// The incident store could not record it; try again later.
    #[error("the incident could not be recorded")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// It can never be taken (e.g. the escalation policy is gone).
    #[error("{0}")]
    Refused(String),
}

/// The incident engine, for the dispatcher (alerts of escalation routes, page outcomes) and
/// ingest (resolved alerts, repeats joining an open incident).
pub trait IncidentPort: Send + Sync {
    /// `alert`, taken by `route` whose escalation policy is `policy`, opens an incident or
    /// joins the open one with its dedup key; once per alert (a retry after a crash finds the
    /// incident it opened). `pass_unreachable`: a level nobody was reachable at is passed at
    /// once. Answers the incident's number and whether the alert joined one, after commit.
    fn open<'a>(
        &'a self,
        alert: &'a StoredAlert,
        route: &'a str,
        policy: &'a str,
        pass_unreachable: bool,
    ) -> BoxFuture<'a, Result<(u64, bool), IncidentFault>>;

    /// If `alert` is an incident's page: the route it goes through (to the users and groups
    /// it names, with the route's sinks and offline policy).
    fn page_route(&self, alert: &StoredAlert) -> Option<String>;

    /// The page `page` reached `user` through sink instance `sink`, in `conversation` when the
    /// sink names one (a sink that hears replies there).
    fn page_conversation<'a>(
        &'a self,
        page: &'a StoredAlert,
        user: &'a str,
        sink: &'a str,
        conversation: Option<&'a str>,
    ) -> BoxFuture<'a, ()>;

    /// Every recipient of the page `page` has its outcome; `delivered` of them got it.
    fn page_finished<'a>(&'a self, page: &'a StoredAlert, delivered: usize) -> BoxFuture<'a, ()>;

    /// A resolved alert from `by` with dedup key `key`: resolves the open incident with that
    /// key; answers the alert that opened it, or None if there is none. After commit. The
    /// future may be polled outside the host's runtime (by a source's thread).
    fn resolve<'a>(
        &'a self,
        key: &'a str,
        by: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, IncidentFault>>;

    /// An alert the queue took as a duplicate of `key`: joins the open incident with that key
    /// ("seen N×"); answers its number, or None. After commit. The future may be polled outside
    /// the host's runtime (by a source's thread).
    fn seen_again<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<u64>, IncidentFault>>;
}
