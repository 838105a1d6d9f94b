//! afl binary of the `host_config` target (fuzz/targets/host_config.rs).
#[path = "../../targets/host_config.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
