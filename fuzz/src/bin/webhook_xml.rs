//! afl binary of the `webhook_xml` target (fuzz/targets/webhook_xml.rs).
#[path = "../../targets/webhook_xml.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
