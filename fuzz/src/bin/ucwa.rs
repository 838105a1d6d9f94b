//! afl binary of the `ucwa` target (fuzz/targets/ucwa.rs).
#[path = "../../targets/ucwa.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
