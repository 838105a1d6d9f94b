//! The stable plugin boundary of alertbridge.
//!
//! - [`abi`]: the root module every plugin file exports and the `#[sabi_trait]` traits host and
//!   instances call each other through.
//! - [`types`](crate::FfiAlert) and the plain-Rust [`model`](crate::Alert): the data that crosses.
//! - [`kit`]: what a plugin author implements ([`kit::Source`], [`kit::Sink`]) and
//!   [`export_plugin!`], which makes a crate a loadable plugin.
//!
//! This crate's version is the API version. See `docs/writing-a-plugin.md` for the rules.

#![allow(non_local_definitions)] // `#[sabi_trait]` on rustc 1.95.
#![allow(unsafe_code)] // abi_stable's derives; our own unsafe is confined to `kit::entry`.

pub mod abi;
pub mod kit;
mod model;
pub mod testing;
mod types;

pub use self::{
    model::{
        Alert, Health, Message, PluginError, Presence, REPEAT_ATTRIBUTE, REPEAT_MARK,
        RecipientResult, error_chain,
    },
    types::{
        DeliveryStatus, ErrorKind, FfiAlert, FfiError, FfiHealth, FfiMessage, FfiPairs,
        FfiPresence, FfiRecipientResult, HealthState, KindInfo, LogLevel, LogRecord, PluginInfo,
        PresenceState, Receipt, Role, Severity,
    },
};

/// The version of this API, which every plugin reports and the loader compares.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use async_ffi;
