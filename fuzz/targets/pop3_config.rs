//! Fuzz target `pop3_config`: a plugin's `[source.config]` table, here the `pop3` source's
//! (plugins/pop3/src/config.rs): TOML into `Pop3Config`, then the checks of `validate` (server
//! and port, TLS mode, user name, the inline password, limits, allowed senders).
//!
//! Input: the table's TOML text. Configs that name files (`password_file`, `ca_file`) are only
//! deserialized, so the fuzzer never reads files of this machine.
//!
//! Besides "no panic": the inline password never appears in an error message or in the
//! `Debug` text of the config and of the settings.

use alertbridge_pop3::config::Pop3Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secret = inline_password(text);
    let config: Pop3Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            // What the plugin kit passes on (Setup::config): the message, not the source line.
            check_not_echoed(e.message(), secret.as_deref());
            return;
        }
    };
    check_not_echoed(&format!("{config:?}"), secret.as_deref());
    if config.password_file.is_some() || config.ca_file.is_some() {
        return;
    }
    match config.validate() {
        Ok(settings) => check_not_echoed(&format!("{settings:?}"), secret.as_deref()),
        Err(e) => check_not_echoed(&e.to_string(), secret.as_deref()),
    }
}

/// The inline `password`, when it is a string found nowhere else in the text (so a message
/// that holds it can only have taken it from there).
fn inline_password(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let p = table.get("password")?.as_str()?;
    (p.len() >= 8 && text.matches(p).count() == 1).then(|| p.to_owned())
}

fn check_not_echoed(message: &str, secret: Option<&str>) {
    if let Some(secret) = secret {
        assert!(
            !message.contains(secret),
            "the password appears in {message:?}"
        );
    }
}
