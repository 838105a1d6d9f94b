//! An example third-party alertbridge plugin: the `hello-file` sink ([`file_sink`]) and the
//! `heartbeat` source ([`heartbeat`]). It depends only on `alertbridge-plugin-api`, `serde`,
//! `tokio` and `tracing`; `docs/writing-a-plugin.md` in the alertbridge repository explains
//! every line.

mod file_sink;
mod heartbeat;

alertbridge_plugin_api::export_plugin! {
    name: "hello",
    version: env!("CARGO_PKG_VERSION"),
    sources: { "heartbeat" => heartbeat::Heartbeat::new },
    sinks: { "hello-file" => file_sink::HelloFile::new },
}
