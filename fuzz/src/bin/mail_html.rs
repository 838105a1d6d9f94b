//! afl binary of the `mail_html` target (fuzz/targets/mail_html.rs).
#[path = "../../targets/mail_html.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
