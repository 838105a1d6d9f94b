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

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{Message, PluginError, Presence, RecipientResult};
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
