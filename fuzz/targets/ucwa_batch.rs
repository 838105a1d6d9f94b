//! Fuzz target `ucwa_batch`: a `multipart/batching` response (plugins/ucwa/src/protocol/batch.rs)
//! — the boundary from the `Content-Type`, the parts, each embedded HTTP response's status line
//! and body — and the presence or error body each part carries.
//!
//! Input: the `Content-Type` value up to the first line break, then the response body.

use alertbridge_ucwa::protocol::{application, batch, parse_error_body};

pub fn run(data: &[u8]) {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let content_type = String::from_utf8_lossy(content_type);
    let _ = batch::boundary(&content_type);
    match batch::parse_response(&content_type, body) {
        Ok(parts) => {
            // Each part took at least its delimiter from the body.
            assert!(parts.len() <= body.len() / 2 + 1);
            for p in &parts {
                if p.status == 200 {
                    let _ = application::parse_presence(&p.body);
                } else {
                    let _ = parse_error_body(&p.body);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
