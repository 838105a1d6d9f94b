//! afl binary of the `alertmanager` target (fuzz/targets/alertmanager.rs).
#[path = "../../targets/alertmanager.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
