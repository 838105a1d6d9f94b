//! The boundary itself: the root module every plugin file exports and the `#[sabi_trait]`
//! traits through which host and instances call each other.
//!
//! Evolution rule: fields of [`PluginMod`] and methods of the traits may only be *added*, below
//! the ones marked `#[sabi(last_prefix_field)]`, and new trait methods must have a default body.
//! A host built against a newer API refuses older plugins whose tables are shorter (abi_stable
//! #118), so a host and its plugins of one release are built together.

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RStr, RString, RVec},
};
use async_ffi::FfiFuture;

use crate::types::{
    FfiAlert, FfiError, FfiHealth, FfiMessage, FfiPresence, FfiRecipientResult, LogLevel,
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
    #[sabi(last_prefix_field)]
    fn instance_name(&self) -> RString;
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
    #[sabi(last_prefix_field)]
    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError>;
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
    #[sabi(last_prefix_field)]
    fn stop(&self, deadline_ms: u64) -> RResult<(), FfiError>;
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
    /// New fields go below this one, never above: a newer library may have more fields than
    /// an older host expects, not fewer.
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
