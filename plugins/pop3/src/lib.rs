//! The `pop3` source plugin: polls a POP3 mailbox and turns every mail into an alert, deleting a
//! mail only after the host has durably queued its alert.

pub mod auth_results;
pub mod client;
pub mod config;
pub mod counters;
pub mod error;
pub mod html;
pub mod mail;
pub mod protocol;
pub mod quarantine;
mod session;
pub mod source;
mod state;

pub use alertbridge_plugin_api::error_chain;

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

alertbridge_plugin_api::export_plugin! {
    name: "pop3",
    version: env!("CARGO_PKG_VERSION"),
    sources: { "pop3" => source::Pop3Source::new },
    sinks: {},
}
