//! UCMA bridge simulator (not yet implemented).
