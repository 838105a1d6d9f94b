//! alertbridge: turns inbound notifications into instant messages for the people who must see
//! them now.
//!
//! Alerts come in through source plugins, are checked and durably queued ([`queue`]), routed to
//! people ([`router`]), checked against their presence and delivered through sink plugins
//! ([`dispatch`]). Plugins are shared libraries ([`loader`]) run as supervised instances
//! ([`instances`]) that reach the host through [`host_api`]. [`app::Bridge`] puts it together;
//! [`admin`] serves health, metrics and the alert API.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod plugins;
pub mod queue;
pub mod queue_cmd;
pub mod reload;
pub mod route_preview;
pub mod router;

pub use alertbridge_plugin_api::error_chain;
// Old paths, kept while the rest of the host moves to `plugins::`.
pub use plugins::loader;
