//! What a plugin author builds on: the plugin kit over alertbridge's frozen plugin interface.
//!
//! - [`abi`] and the `Ffi*` types: the frozen interface, re-exported from
//!   `alertbridge-plugin-abi`, whose version is the plugin API version ([`API_VERSION`]).
//! - The plain-Rust [`model`](crate::Alert): the data a plugin sees.
//! - [`kit`]: what a plugin author implements ([`kit::Source`], [`kit::Sink`]) and
//!   [`export_plugin!`], which makes a crate a loadable plugin.
//!
//! The kit may be fixed and extended in any release without changing the API a plugin reports.
//! See `docs/writing-a-plugin.md` for the rules.

#![allow(non_local_definitions)] // `#[sabi_trait]` on rustc 1.95.
#![allow(unsafe_code)] // abi_stable's derives; our own unsafe is confined to `kit::entry`.

pub use alertbridge_plugin_abi::abi;
pub mod kit;
mod model;
pub mod testing;
use alertbridge_plugin_abi::types;

pub use self::{
    model::{
        Alert, AlertStatus, CONVERSATION_ATTRIBUTE, HTML_BODY_ATTRIBUTE, Health,
        MAX_CONVERSATION_BYTES, Message, PluginError, Presence, REPEAT_ATTRIBUTE, REPEAT_MARK,
        RecipientResult, STATUS_ATTRIBUTE, UnknownStatus, error_chain,
    },
    types::{
        DeliveryStatus, ErrorKind, FfiAlert, FfiError, FfiHealth, FfiMessage, FfiPairs,
        FfiPresence, FfiRecipientResult, HealthState, KindInfo, LogLevel, LogRecord, PluginInfo,
        PresenceState, Receipt, Role, Severity, UnknownSeverity,
    },
};

/// The plugin API version (of `alertbridge-plugin-abi`), which every plugin reports and the
/// loader compares.
pub const API_VERSION: &str = alertbridge_plugin_abi::API_VERSION;

#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use async_ffi;
