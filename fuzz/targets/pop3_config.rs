//! Fuzz target `pop3_config`: a plugin's `[source.config]` table, here the `pop3` source's
//! (plugins/pop3/src/config.rs): TOML into `Pop3Config`, then the checks of `validate` (server
//! and port, TLS mode, user name, the inline password, limits, allowed senders).
//!
//! Input: the table's TOML text. Configs that name files (`password_file`, `ca_file`) are only
//! deserialized, so the fuzzer never reads files of this machine.
//!
//! Besides "no panic": the inline password never shows in what the source says about its config
//! (the error message, the `Debug` text of the config and of the settings). A text that holds the
//! password is checked again with the password changed: if the changed password then shows more
//! often than before, it came from the password (not from a key name or the list of known keys,
//! which an error may quote: `fuzz/regressions/pop3_config/password_echo_*`).

use alertbridge_pop3::config::Pop3Config;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let said = what_it_says(text);
    let Some(secret) = inline_password(text) else {
        return;
    };
    if !said.iter().any(|s| s.contains(&secret)) {
        return;
    }
    // The same text may come from elsewhere (a key of the input, the list of known keys in an
    // error): only more of it with the password changed shows the password.
    let other = changed(&secret);
    let before: usize = said.iter().map(|s| s.matches(&other).count()).sum();
    let after = what_it_says(&text.replace(&secret, &other));
    let now: usize = after.iter().map(|s| s.matches(&other).count()).sum();
    assert!(now <= before, "the password shows in {after:?}");
}

/// The error message, or the config's and the settings' `Debug` text and the error of
/// `validate`.
fn what_it_says(text: &str) -> Vec<String> {
    let config: Pop3Config = match toml::from_str(text) {
        Ok(c) => c,
        // What the plugin kit passes on (Setup::config): the message, not the source line.
        Err(e) => return vec![e.message().to_owned()],
    };
    let mut said = vec![format!("{config:?}")];
    if config.password_file.is_none() && config.ca_file.is_none() {
        said.push(match config.validate() {
            Ok(settings) => format!("{settings:?}"),
            Err(e) => e.to_string(),
        });
    }
    said
}

/// The inline `password`, when it is a string found nowhere else in the text.
fn inline_password(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let p = table.get("password")?.as_str()?;
    (p.len() >= 4 && p.chars().any(|c| c.is_ascii_alphanumeric()) && text.matches(p).count() == 1)
        .then(|| p.to_owned())
}

/// `secret` with every letter and digit changed to the next one (other characters kept, so the
/// same checks apply).
fn changed(secret: &str) -> String {
    secret
        .chars()
        .map(|c| match c {
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c if c.is_ascii_alphanumeric() => char::from(c as u8 + 1),
            c => c,
        })
        .collect()
}
