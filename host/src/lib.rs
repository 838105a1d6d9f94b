//! alertbridge: turns inbound notifications into instant messages for the people who must see
//! them now.
//!
//! Alerts come in through source plugins, are checked and durably queued ([`ingest`],
//! [`queue`]), routed to people ([`router`]), checked against their presence and delivered
//! through sink plugins ([`dispatch`]). Plugins are shared libraries loaded and run as
//! supervised instances by [`plugins`], the only module that names the FFI types; the rest of
//! the host uses its plain-Rust handles. [`app::Bridge`] puts it together; [`admin`] serves
//! health, metrics and the alert API; [`reload`] is what a reload changed or why it was
//! refused.
//!
//! Layers, each importing only those below it: `cli` → `app` → `admin` → `reload` → `plugins`
//! → `ingest`, `incidents` → `dispatch` → `config`, `silences` → `queue`, `template`, `router`
//! → `metrics`, `model`, `private`.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod incidents;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod plugins;
pub mod private;
pub mod queue;
pub mod queue_cmd;
pub mod reload;
pub mod route_preview;
pub mod router;
pub mod silences;
pub mod template;

pub use alertbridge_plugin_api::error_chain;
