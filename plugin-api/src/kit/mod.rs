//! The plugin kit: what a plugin author implements ([`Source`], [`Sink`]) and the machinery
//! behind [`export_plugin!`](crate::export_plugin) that turns it into a loadable plugin file.
//!
//! A plugin author writes no `extern "C"`, `unsafe` or `catch_unwind`: every entry point is
//! guarded, every future handed to the host is spawned on the instance's own runtime, and
//! `tracing` events are forwarded to the host's log.

mod backoff;
mod call;
mod entry;
pub mod format;
mod guard;
mod host;
mod instance;
mod listen;
mod log;
mod secret;

use std::{future::Future, sync::Arc};

pub use tokio_util::sync::CancellationToken;

pub use self::backoff::Backoff;
pub use self::call::{Args, unsupported};
#[doc(hidden)]
pub use self::entry::{PluginSpec, lib_header};
pub use self::host::Host;
pub use self::listen::{Inbound, MAX_INBOUND_FIELD_BYTES, MAX_INBOUND_TEXT_BYTES, calls};
pub use self::secret::{Secret, resolve_secret};
use crate::{Health, Message, PluginError, Presence, RecipientResult};

/// What a source's `run` gets: the host to submit to and the signal to stop.
#[derive(Debug)]
pub struct SourceContext {
    pub host: Host,
    /// Cancelled when the host stops the instance; finish in-flight submits, then return.
    pub shutdown: CancellationToken,
}

/// An input: something that turns the outside world into alerts.
pub trait Source: Send + Sync + Sized + 'static {
    /// Worker threads of the instance's runtime.
    const WORKER_THREADS: usize = 1;

    /// Does the source's work on the instance's runtime until `ctx.shutdown` is cancelled.
    /// Returning an error (or panicking) marks the instance failed; the host recreates it.
    fn run(
        self: Arc<Self>,
        ctx: SourceContext,
    ) -> impl Future<Output = Result<(), PluginError>> + Send;

    /// Health while `run` is running. Must return quickly.
    fn health(&self) -> Health {
        Health::ok()
    }

    /// Answers a capability added after API 1.0, asked for by the host by versioned name
    /// (`"replies/1"`). The default knows none: [`unsupported`], which the host reads as
    /// "absent". Runs on the instance's runtime, guarded like `deliver`; answered only while
    /// the instance runs.
    fn call(
        &self,
        name: &str,
        args: Args,
    ) -> impl Future<Output = Result<Args, PluginError>> + Send {
        let _ = args;
        let e = unsupported(name);
        async move { Err(e) }
    }
}

/// An output: something that tells who is online and delivers messages.
pub trait Sink: Send + Sync + Sized + 'static {
    /// Worker threads of the instance's runtime.
    const WORKER_THREADS: usize = 1;

    /// Background work (sign-in, keep-alive, event channels) until `shutdown` is cancelled.
    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), PluginError>> + Send {
        async move {
            shutdown.cancelled().await;
            Ok(())
        }
    }

    /// The presence of each user. Users the sink cannot tell about may be left out or reported
    /// as `UNKNOWN`.
    fn presence(
        &self,
        users: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Presence>, PluginError>> + Send;

    /// Delivers `message` to each of its recipients and reports each one's outcome.
    fn deliver(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<Vec<RecipientResult>, PluginError>> + Send;

    /// Health while running. Must return quickly.
    fn health(&self) -> Health {
        Health::ok()
    }

    /// Says `text` to `user` in `conversation` (`conversation.send/1`, the host answering an
    /// inbound message or telling the others paged for an incident) and returns the reference
    /// of the conversation actually used. When that conversation is gone (ended, expired,
    /// unknown after a restart, or `conversation` is empty) start a new one with `user`.
    /// Errors as `deliver`'s whole-call errors: `TRANSIENT` (the host retries with backoff) or
    /// `PERMANENT` (logged, dropped).
    ///
    /// The kit routes the host's `conversation.send/1` here with its arguments checked; the
    /// default answers [`unsupported`], and then the kit offers the call to [`Sink::call`].
    fn send_in_conversation(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let _ = (conversation, user, text);
        let e = listen::send_unsupported();
        async move { Err(e) }
    }

    /// Answers a capability added after API 1.0, asked for by the host by versioned name
    /// (`"replies/1"`). The default knows none: [`unsupported`], which the host reads as
    /// "absent". Runs on the instance's runtime, guarded like `deliver`; answered only while
    /// the instance runs. (`conversation.send/1` reaches [`Sink::send_in_conversation`] first.)
    fn call(
        &self,
        name: &str,
        args: Args,
    ) -> impl Future<Output = Result<Args, PluginError>> + Send {
        let _ = args;
        let e = unsupported(name);
        async move { Err(e) }
    }
}

/// Everything a plugin's constructor gets for a new instance.
#[derive(Debug)]
pub struct Setup {
    /// The instance name from the host's config.
    pub instance: String,
    /// The kind asked for (one plugin may provide several).
    pub kind: String,
    /// The instance's `config` table as TOML text.
    pub config_toml: String,
    /// The host, for sources to submit through.
    pub host: Host,
}

impl Setup {
    /// Parses the instance's config. Errors name the key they are about ([`PluginError::key`]),
    /// so the host can point at the line in its config file.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, PluginError> {
        toml::from_str(&self.config_toml).map_err(|e| {
            let key = e
                .span()
                .and_then(|span| key_at(&self.config_toml, span.start));
            let message = e.message().trim_end();
            match key {
                Some(key) => config_error(&key, message),
                None => PluginError::config(message),
            }
        })
    }
}

/// A configuration error about one key (its dotted path), which the host maps back to the
/// key's line in its file.
pub fn config_error(key: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError {
        key: Some(key.to_owned()),
        ..PluginError::config(message.to_string())
    }
}

/// The dotted key whose line holds byte `offset` of `text`: the table header above it plus
/// the key at the start of that line. Good enough for the TOML the host writes.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = if line.starts_with('[') {
        None
    } else {
        line.split('=')
            .next()
            .map(|k| k.trim().trim_matches('"').to_owned())
            .filter(|k| !k.is_empty())
    };
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// Exports a plugin: its name, version and the constructors of the kinds it provides.
///
/// ```ignore
/// alertbridge_plugin_api::export_plugin! {
///     name: "pop3",
///     version: env!("CARGO_PKG_VERSION"),
///     sources: { "pop3" => source::Pop3Source::new },
///     sinks: {},
/// }
/// ```
///
/// Each constructor is a `fn(Setup) -> Result<T, PluginError>` where `T` implements
/// [`Source`] or [`Sink`]. It should only read and check its config: the host also calls it
/// for `alertbridge check`, which never starts the instance.
#[macro_export]
macro_rules! export_plugin {
    (
        name: $name:expr,
        version: $version:expr,
        sources: { $($skind:literal => $sctor:expr),* $(,)? },
        sinks: { $($kkind:literal => $kctor:expr),* $(,)? } $(,)?
    ) => {
        #[doc(hidden)]
        pub struct __AlertbridgePlugin;

        impl $crate::kit::PluginSpec for __AlertbridgePlugin {
            const NAME: &'static str = $name;
            const VERSION: &'static str = $version;

            fn kinds() -> ::std::vec::Vec<(&'static str, $crate::Role)> {
                ::std::vec![$(($skind, $crate::Role::SOURCE),)* $(($kkind, $crate::Role::SINK),)*]
            }

            fn create_source(
                kind: &str,
                setup: $crate::kit::Setup,
            ) -> ::std::option::Option<::std::result::Result<$crate::abi::SourceBox, $crate::PluginError>> {
                match kind {
                    $($skind => ::std::option::Option::Some($crate::kit::source_box(setup, $sctor)),)*
                    _ => { let _ = setup; ::std::option::Option::None }
                }
            }

            fn create_sink(
                kind: &str,
                setup: $crate::kit::Setup,
            ) -> ::std::option::Option<::std::result::Result<$crate::abi::SinkBox, $crate::PluginError>> {
                match kind {
                    $($kkind => ::std::option::Option::Some($crate::kit::sink_box(setup, $kctor)),)*
                    _ => { let _ = setup; ::std::option::Option::None }
                }
            }
        }

        /// The library header abi_stable's loader looks for.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::kit::LibHeader =
            $crate::kit::lib_header::<__AlertbridgePlugin>();
    };
}

#[doc(hidden)]
pub use abi_stable::library::LibHeader;

/// Wraps a constructed source for the boundary.
#[doc(hidden)]
pub fn source_box<T: Source>(
    setup: Setup,
    ctor: impl FnOnce(Setup) -> Result<T, PluginError>,
) -> Result<crate::abi::SourceBox, PluginError> {
    let host = setup.host.clone();
    let source = ctor(setup)?;
    Ok(crate::abi::SourceFfi_TO::from_value(
        instance::SourceAdapter::new(source, host),
        abi_stable::sabi_trait::TD_Opaque,
    ))
}

/// Wraps a constructed sink for the boundary.
#[doc(hidden)]
pub fn sink_box<T: Sink>(
    setup: Setup,
    ctor: impl FnOnce(Setup) -> Result<T, PluginError>,
) -> Result<crate::abi::SinkBox, PluginError> {
    let host = setup.host.clone();
    let sink = ctor(setup)?;
    Ok(crate::abi::SinkFfi_TO::from_value(
        instance::SinkAdapter::new(sink, host),
        abi_stable::sabi_trait::TD_Opaque,
    ))
}

#[cfg(test)]
mod tests {
    use super::key_at;

    #[test]
    fn key_at_finds_the_key_of_the_line() {
        let text = "server = \"x\"\npoll_interval_ms = \"fast\"\n\n[tls]\nca_file = 3\n";
        assert_eq!(
            key_at(text, text.find("fast").unwrap()).as_deref(),
            Some("poll_interval_ms")
        );
        assert_eq!(
            key_at(text, text.find("3").unwrap()).as_deref(),
            Some("tls.ca_file")
        );
        assert_eq!(key_at(text, 0).as_deref(), Some("server"));
    }
}
