//! What a simulated bridge is started with: secret, limits, users, and the users file format.

use std::net::SocketAddr;

use super::wire::{Availability, is_sip_uri};

/// The bridge's limits (§7), advertised in `/v1/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_presence_targets: usize,
    pub max_recipients: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_presence_targets: 500,
            max_recipients: 100,
            max_body_bytes: 65_536,
        }
    }
}

/// How to start a simulated bridge.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The shared secret of §2.1 / §2.3.
    pub secret: String,
    /// Refuse bearer-only requests (§2.3).
    pub require_signature: bool,
    pub limits: Limits,
    /// Known users and their presence. Users not listed are "not found".
    pub users: Vec<(String, Availability)>,
    /// The bridge's own endpoint URI, reported by `/v1/health`.
    pub endpoint_uri: String,
    /// Inbound messages and answers (§4.5–§4.8); `false` answers them `404 not_supported`, as a
    /// bridge without them does.
    pub inbound: bool,
    /// Most unacknowledged inbound messages kept; past it the oldest is dropped (and counted).
    pub max_inbound_pending: usize,
}

impl SimConfig {
    /// A bridge on a free loopback port with this secret and no users.
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            secret: secret.into(),
            require_signature: false,
            limits: Limits::default(),
            users: Vec::new(),
            endpoint_uri: "sip:alerts@contoso.com".to_owned(),
            inbound: true,
            max_inbound_pending: 1000,
        }
    }

    /// Adds a user with this presence.
    pub fn user(mut self, uri: &str, availability: Availability) -> Self {
        self.users.push((uri.to_owned(), availability));
        self
    }
}

/// A line of a users file that could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UsersFileError {
    /// The first word is not a `sip:user@host` URI.
    #[error("line {line}: `{uri}` is not a sip:user@host URI")]
    BadUri { line: usize, uri: String },
    /// The second word is not an availability name.
    #[error(
        "line {line}: unknown availability `{name}` (expected one of Online, Busy, Away, Offline, ...)"
    )]
    BadAvailability { line: usize, name: String },
}

/// Parses a users file: one user per line, `sip:alice@contoso.com [Availability]` (default
/// `Online`); blank lines and lines starting with `#` are skipped.
pub fn parse_users(text: &str) -> Result<Vec<(String, Availability)>, UsersFileError> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let uri = words.next().unwrap_or_default();
        if !is_sip_uri(uri) {
            return Err(UsersFileError::BadUri {
                line: i + 1,
                uri: uri.to_owned(),
            });
        }
        let availability = match words.next() {
            None => Availability::Online,
            Some(name) => {
                Availability::from_name(name).ok_or_else(|| UsersFileError::BadAvailability {
                    line: i + 1,
                    name: name.to_owned(),
                })?
            }
        };
        users.push((uri.to_owned(), availability));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_is_read_line_by_line() {
        let text = "# ops\nsip:alice@contoso.com Online\n\nsip:bob@contoso.com offline\nsip:carol@contoso.com\n";
        assert_eq!(
            parse_users(text),
            Ok(vec![
                ("sip:alice@contoso.com".to_owned(), Availability::Online),
                ("sip:bob@contoso.com".to_owned(), Availability::Offline),
                ("sip:carol@contoso.com".to_owned(), Availability::Online),
            ])
        );
    }

    #[test]
    fn users_file_errors_name_the_line() {
        assert_eq!(
            parse_users("sip:a@b Online\nalice Busy\n"),
            Err(UsersFileError::BadUri {
                line: 2,
                uri: "alice".into()
            })
        );
        let e = parse_users("sip:a@b Sleepy\n").expect_err("bad availability");
        assert_eq!(e.to_string().split(':').next(), Some("line 1"));
    }
}
