//! The `webhook` source plugin: takes alerts over HTTP(S) — our JSON or XML alert, and the
//! Prometheus Alertmanager / Grafana webhook payloads — and answers 202 only after the host has
//! durably queued every alert of the request.

mod auth;
pub mod config;
pub mod payload;
mod tls;
