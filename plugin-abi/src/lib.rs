//! The frozen plugin interface of alertbridge: what a plugin file exports, the traits host and
//! instances call each other through, and the data that crosses.
//!
//! This crate's version is the plugin API version. From 1.0 its types never change layout: a
//! plugin built against 1.x loads in every later 1.y host. New capabilities arrive without
//! lengthening any table, through [`abi::HostFfi::call`], [`abi::SourceFfi::call`] and
//! [`abi::SinkFfi::call`] by versioned name, and data grows through each struct's `attributes`.
//! Plugin authors use the kit in `alertbridge-plugin-api`, which wraps all of this.
//!
//! `tests/frozen_1_0.rs` holds this crate to its promise: it checks these types against a frozen
//! copy of 1.0 (`tests/compat/api-1.0/abi` in the repository) with abi_stable's own checker.

#![allow(non_local_definitions)] // `#[sabi_trait]` on rustc 1.95.
#![allow(unsafe_code)] // abi_stable's derives.

pub mod abi;
pub mod types;

/// The version of this interface, which every plugin reports and the loader compares.
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");

#[doc(hidden)]
pub use abi_stable;
#[doc(hidden)]
pub use async_ffi;
