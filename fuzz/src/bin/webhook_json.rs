//! afl binary of the `webhook_json` target (fuzz/targets/webhook_json.rs).
#[path = "../../targets/webhook_json.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
