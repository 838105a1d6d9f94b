//! afl binary of the `mail_xml` target (fuzz/targets/mail_xml.rs).
#[path = "../../targets/mail_xml.rs"]
mod target;

fn main() {
    afl::fuzz!(|data: &[u8]| target::run(data));
}
