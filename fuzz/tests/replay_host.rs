//! Replays the saved inputs of the host targets (see common/mod.rs).

mod common;

#[path = "../targets/host_config.rs"]
mod host_config;

#[test]
fn host_config_corpus() {
    common::replay("host_config", host_config::run);
}
