//! The `ucma` sink plugin: OCS 2007 R2 and Lync 2010 users through a UCMA bridge speaking
//! `docs/ucma-bridge-protocol.md`.
//!
//! `config` reads and checks the instance's config; `protocol` holds the wire documents and the
//! pure mappings; `client` talks HTTP to the bridge; `health` judges `/v1/health`; `inbound`
//! long-polls users' replies and hands them to the host; `sink` implements
//! [`alertbridge_plugin_api::kit::Sink`], with `conversation.send/1` for answers.

pub mod client;
pub mod config;
pub mod health;
pub mod inbound;
pub mod protocol;
pub mod sink;

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

alertbridge_plugin_api::export_plugin! {
    name: "ucma",
    version: env!("CARGO_PKG_VERSION"),
    sources: {},
    sinks: { "ucma" => sink::UcmaSink::new },
}
