//! afl binary of the `pop3_config` target (fuzz/targets/pop3_config.rs).
#[path = "../../targets/pop3_config.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
