//! afl binary of the `mail` target (fuzz/targets/mail.rs).
#[path = "../../targets/mail.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
