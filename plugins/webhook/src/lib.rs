//! The `webhook` source plugin: takes alerts over HTTP(S) — our JSON or XML alert, and the
//! Prometheus Alertmanager / Grafana webhook payloads — and answers 202 only after the host has
//! durably queued every alert of the request.

mod auth;
pub mod config;
pub mod payload;
pub mod routes;
mod server;
pub mod source;
mod tls;

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

alertbridge_plugin_api::export_plugin! {
    name: "webhook",
    version: env!("CARGO_PKG_VERSION"),
    sources: { "webhook" => source::WebhookSource::new },
    sinks: {},
}
