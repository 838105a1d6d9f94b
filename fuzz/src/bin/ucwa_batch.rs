//! afl binary of the `ucwa_batch` target (fuzz/targets/ucwa_batch.rs).
#[path = "../../targets/ucwa_batch.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
