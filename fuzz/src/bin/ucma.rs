//! afl binary of the `ucma` target (fuzz/targets/ucma.rs).
#[path = "../../targets/ucma.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
