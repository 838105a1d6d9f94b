//! Fuzz target `host_config`: the host's config file (host/src/config): TOML syntax, every
//! table and key, groups, routes with their patterns and offline policies, and the errors that
//! point at file, line and column.
//!
//! Input: the file's text (invalid UTF-8 replaced: the host reads the file as UTF-8 first).

use std::path::Path;

use alertbridge::config::Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(Path::new("/etc/alertbridge/fuzz.toml"), text) {
        Ok(config) => {
            let _ = config.queue_shares();
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused config without an error");
            let lines = text.split('\n').count();
            for e in &errors.0 {
                assert!(e.line <= lines, "error at line {} of {lines}: {e}", e.line);
                assert!(e.line == 0 || e.column >= 1, "error at column 0: {e}");
            }
            let _ = errors.to_string();
        }
    }
}
