//! afl binary of the `pop3_reply` target (fuzz/targets/pop3_reply.rs).
#[path = "../../targets/pop3_reply.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
