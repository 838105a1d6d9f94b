//! The `ucwa` sink plugin: delivers IMs to Lync Server 2013 / Skype for Business Server users
//! through UCWA (autodiscover, MsRtcOAuth password grant, one application with its event
//! channel, presence reads, one messaging conversation per recipient, kept open for replies
//! that go to the host and the host's answers).

mod answer;
mod api;
pub mod config;
mod delivery;
mod error;
mod events;
mod handover;
pub mod inbound;
mod kept;
mod presence;
pub mod protocol;
mod session;
mod shared;
pub mod sink;
pub mod trust;

pub use self::{error::UcwaError, sink::UcwaSink};

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

alertbridge_plugin_api::export_plugin! {
    name: "ucwa",
    version: env!("CARGO_PKG_VERSION"),
    sources: {},
    sinks: { "ucwa" => sink::UcwaSink::new },
}
