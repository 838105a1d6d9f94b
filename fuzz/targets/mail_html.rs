//! Fuzz target `mail_html`: an HTML mail body → the plain text of the alert
//! (plugins/pop3/src/html.rs): tags, comments, `<script>`/`<style>`, links, character references.
//!
//! Input: the HTML (invalid UTF-8 replaced, as the MIME decoder would have done).

use alertbridge_pop3::html::html_to_text;

pub fn run(data: &[u8]) {
    let html = String::from_utf8_lossy(data);
    let text = html_to_text(&html);
    // Converting is deterministic.
    assert_eq!(html_to_text(&html), text);
}
