//! What a POP3 test server is started with: users with their Maildirs, and the faults it injects.

use std::{net::SocketAddr, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Mailbox users; each has a Maildir of its own.
    pub users: Vec<UserConfig>,
    /// Faults active from the start (change them later with `Pop3Handle::set_faults`).
    pub faults: Faults,
    /// TLS, if any: STLS on the plain port, or implicit TLS (POP3S) on the whole port.
    pub tls: Option<Tls>,
}

/// How the server offers TLS.
#[derive(Clone, Debug)]
pub enum Tls {
    /// Plain connections, upgraded by STLS (RFC 2595); CAPA advertises `STLS`.
    Stls(Arc<rustls::ServerConfig>),
    /// The TLS handshake starts right after connect, before the greeting (POP3S).
    Implicit(Arc<rustls::ServerConfig>),
}

impl ServerConfig {
    /// A server on a free loopback port with no users and no faults.
    pub fn new() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            users: Vec::new(),
            faults: Faults::default(),
            tls: None,
        }
    }

    /// Adds a user whose mailbox is the Maildir `maildir` (its `new/`, `cur/` and `tmp/` are
    /// created at start when missing).
    pub fn user(mut self, name: &str, password: &str, maildir: impl Into<PathBuf>) -> Self {
        self.users.push(UserConfig {
            name: name.to_owned(),
            password: password.to_owned(),
            maildir: maildir.into(),
        });
        self
    }

    /// Offers TLS.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Starts with these faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// One mailbox user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
    /// The Maildir folder (the one holding `new/`, `cur/`, `tmp/`).
    pub maildir: PathBuf,
}

/// A `NAME:PASSWORD:MAILDIR` argument that does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected NAME:PASSWORD:MAILDIR (name and password without `:`, spaces or line breaks), got {0:?}"
)]
pub struct UserSpecError(pub String);

impl FromStr for UserConfig {
    type Err = UserSpecError;

    /// Parses `NAME:PASSWORD:MAILDIR`; the Maildir path may itself contain `:`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let err = || UserSpecError(spec.to_owned());
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(password), Some(maildir)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let bad = |s: &str| s.is_empty() || s.contains([' ', '\r', '\n', '\0']);
        if bad(name) || bad(password) || maildir.is_empty() {
            return Err(err());
        }
        Ok(Self {
            name: name.to_owned(),
            password: password.to_owned(),
            maildir: PathBuf::from(maildir),
        })
    }
}

/// Faults the server injects. Set them at start ([`ServerConfig::faults`]) or at run time;
/// the one-shot ones are removed once they fired, so [`super::Pop3Handle::faults`] shows what
/// is still pending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Cut the connection in the middle of the N-th RETR (1-based, counted over all sessions
    /// from the moment these faults were set), after sending the status line and about half of
    /// the message. Fires once. Nothing the session marked is deleted.
    pub drop_in_retr: Option<u32>,
    /// Wait this long before every reply (the greeting and the SASL `+ ` prompt too).
    pub reply_delay: Duration,
    /// Answer the next command with this verb with a bad reply instead of running it; each
    /// entry fires once, in order.
    pub bad_replies: Vec<BadReply>,
    /// Refuse every login (USER/PASS, APOP, AUTH PLAIN) as if the password were wrong.
    pub refuse_logins: bool,
    /// The server is down: it does not listen (connects are refused) and open sessions are cut
    /// (deleting nothing). Clearing it listens again on the same address.
    pub down: bool,
}

/// A one-shot bad answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadReply {
    /// The command verb, case-insensitive (`RETR`, `STAT`, `PASS`, ...).
    pub command: String,
    pub reply: BadReplyKind,
}

impl BadReply {
    pub fn new(command: &str, reply: BadReplyKind) -> Self {
        Self {
            command: command.to_ascii_uppercase(),
            reply,
        }
    }
}

/// What a [`BadReply`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadReplyKind {
    /// A line that is neither `+OK` nor `-ERR`: [`GARBAGE_LINE`].
    Garbage,
    /// `-ERR [SYS/TEMP] Injected failure.` (the command is not run).
    Err,
}

/// The line a [`BadReplyKind::Garbage`] fault sends.
pub const GARBAGE_LINE: &[u8] = b"%% garbled reply \x01\x7f %%\r\n";

/// The line a [`BadReplyKind::Err`] fault sends.
pub const INJECTED_ERR_LINE: &[u8] = b"-ERR [SYS/TEMP] Injected failure.\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_specs_parse_with_colons_in_the_path() {
        let user: UserConfig = "alerts:secret:/tmp/a:b/Maildir".parse().expect("valid");
        assert_eq!(
            user,
            UserConfig {
                name: "alerts".into(),
                password: "secret".into(),
                maildir: "/tmp/a:b/Maildir".into()
            }
        );
        for bad in [
            "alerts",
            "alerts:secret",
            ":secret:/m",
            "alerts::/m",
            "alerts:secret:",
            "a b:secret:/m",
        ] {
            assert_eq!(
                bad.parse::<UserConfig>(),
                Err(UserSpecError(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
