//! The host's one room for the plugin ABI: loading plugin files ([`loader`]), running them as
//! supervised instances ([`instances`]) and the FFI `Host` they call back ([`host_api`]). Only
//! this module names abi_stable, async-ffi or the `Ffi*` types; the rest of the host uses the
//! plain-Rust handles it exports.

pub mod handles;
pub mod host_api;
#[cfg(test)]
mod inbound_tests;
pub mod instances;
pub mod loader;
pub mod speaker;

pub use self::{
    handles::{SinkHandle, SourceHandle},
    instances::{BindError, Registry, Slot, Status, bind},
    loader::{Plugin, Plugins},
    speaker::SinkSpeaker,
};
