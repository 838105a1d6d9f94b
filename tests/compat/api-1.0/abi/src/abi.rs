//! The boundary itself: the root module every plugin file exports and the `#[sabi_trait]`
//! traits through which host and instances call each other.
//!
//! Frozen at 1.0: no field of [`PluginMod`] and no trait method is ever added, removed or
//! changed within 1.x. abi_stable refuses a library whose tables are shorter than the loader's
//! (abi_stable #118), so a 1.1 host that lengthened a table would refuse every 1.0 plugin. New
//! capabilities go through the `call` methods instead: a request by versioned name
//! (`"replies/1"`) with key/value arguments, answered `UNSUPPORTED` by a side that does not know
//! the name, which the asker treats as "capability absent".

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RStr, RString, RVec},
};
use async_ffi::FfiFuture;

use crate::types::{
    FfiAlert, FfiError, FfiHealth, FfiMessage, FfiPairs, FfiPresence, FfiRecipientResult, LogLevel,
    LogRecord, PluginInfo, Receipt,
};

/// What the host offers each instance. Implemented by the host.
#[sabi_trait]
pub trait HostFfi: Send + Sync + Clone {
    /// Validates and durably queues an alert. The future resolves only after the alert is
    /// committed, or to an error: `TRANSIENT` means "not taken, try later".
    fn submit(&self, alert: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>>;

    /// Emits a plugin's log record in the host's log under `plugin::<instance>::<target>`.
    fn log(&self, record: LogRecord);

    /// The most verbose level the host will show; plugins filter before forwarding.
    fn max_log_level(&self) -> LogLevel;

    /// The instance this handle belongs to.
    fn instance_name(&self) -> RString;

    /// A capability added after 1.0, by versioned name: `UNSUPPORTED` if this host lacks it.
    #[sabi(last_prefix_field)]
    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        unsupported(name, args)
    }
}

/// The host handle as it crosses the boundary.
pub type HostBox = HostFfi_TO<'static, RArc<()>>;

/// A source instance. Implemented by the plugin kit around a plugin's `Source`.
#[sabi_trait]
pub trait SourceFfi: Send + Sync {
    /// Starts the instance's own runtime and its work; returns quickly.
    fn start(&self) -> RResult<(), FfiError>;

    /// The instance's current health; returns quickly.
    fn health(&self) -> FfiHealth;

    /// Stops the instance, waiting at most `deadline_ms` for in-flight work. Blocking: the host
    /// calls it from a blocking thread.
    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError>;

    /// A capability added after 1.0, by versioned name: `UNSUPPORTED` if this instance lacks it.
    #[sabi(last_prefix_field)]
    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        unsupported(name, args)
    }
}

/// A source instance as it crosses the boundary.
pub type SourceBox = SourceFfi_TO<'static, RBox<()>>;

/// A sink instance. Implemented by the plugin kit around a plugin's `Sink`.
#[sabi_trait]
pub trait SinkFfi: Send + Sync {
    /// Starts the instance's own runtime and its background work; returns quickly.
    fn start(&self) -> RResult<(), FfiError>;

    /// Reports the presence of each user, in any order.
    fn presence(&self, users: RVec<RString>) -> FfiFuture<RResult<RVec<FfiPresence>, FfiError>>;

    /// Delivers one message to its recipients and reports each recipient's outcome. An error
    /// means the whole call failed and no recipient's outcome is known.
    fn deliver(
        &self,
        message: FfiMessage,
    ) -> FfiFuture<RResult<RVec<FfiRecipientResult>, FfiError>>;

    /// The instance's current health; returns quickly.
    fn health(&self) -> FfiHealth;

    /// Stops the instance, waiting at most `deadline_ms`. Blocking.
    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError>;

    /// A capability added after 1.0, by versioned name: `UNSUPPORTED` if this instance lacks it.
    #[sabi(last_prefix_field)]
    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        unsupported(name, args)
    }
}

/// A sink instance as it crosses the boundary.
pub type SinkBox = SinkFfi_TO<'static, RBox<()>>;

/// The root module every plugin file exports (through `export_plugin!`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin's name, version, API version and kinds.
    pub info: extern "C" fn() -> PluginInfo,

    /// Creates (but does not start) a source instance of `kind` from its TOML config.
    pub create_source: extern "C" fn(
        kind: RStr<'_>,
        instance: RStr<'_>,
        config_toml: RStr<'_>,
        host: HostBox,
    ) -> RResult<SourceBox, FfiError>,

    /// Creates (but does not start) a sink instance of `kind` from its TOML config.
    ///
    /// The last field for all of 1.x: a 1.y host that expected more would refuse 1.0 plugins.
    #[sabi(last_prefix_field)]
    pub create_sink: extern "C" fn(
        kind: RStr<'_>,
        instance: RStr<'_>,
        config_toml: RStr<'_>,
        host: HostBox,
    ) -> RResult<SinkBox, FfiError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "alertbridge_plugin";
    const NAME: &'static str = "alertbridge plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The answer of a side that does not know a `call` name.
pub fn unsupported(name: RStr<'_>, _args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
    let error = FfiError::new(
        crate::types::ErrorKind::UNSUPPORTED,
        format!("`{name}` is not supported here"),
    );
    FfiFuture::new(async move { RResult::RErr(error) })
}
