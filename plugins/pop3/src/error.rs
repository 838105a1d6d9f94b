//! The POP3 client's error: transport, server refusal, authentication, parse and TLS failures
//! kept apart, each with its cause, and one place that says which are worth retrying.

use std::{io, path::PathBuf};

use crate::protocol::{ParseError, ResponseCode};

/// Why a POP3 operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be opened.
    #[error("connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// A network step took longer than its timeout.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Reading or writing the connection failed.
    #[error("connection {context}")]
    Io {
        context: &'static str,
        #[source]
        source: io::Error,
    },
    /// The server closed the connection in the middle of a reply or before one.
    #[error("server closed the connection")]
    Closed,
    /// The server answered `-ERR` to a command other than a login.
    #[error("server refused {command}: {text}")]
    Server {
        command: &'static str,
        code: Option<ResponseCode>,
        text: String,
    },
    /// The server refused the credentials.
    #[error("authentication ({mechanism}) refused by the server: {text}")]
    Auth {
        mechanism: &'static str,
        code: Option<ResponseCode>,
        text: String,
    },
    /// A multi-line reply (a mail) was larger than the limit; it was read past and dropped, and
    /// the connection is still in step: only this command failed.
    #[error("reply to {command} larger than {limit} bytes (skipped)")]
    TooLarge { command: &'static str, limit: usize },
    /// A reply did not follow the protocol.
    #[error("unparseable reply to {command}")]
    Parse {
        command: &'static str,
        #[source]
        source: ParseError,
    },
    /// A reply was well-formed but not what the command allows (e.g. `+ ` to STAT).
    #[error("unexpected reply to {command}: {text}")]
    Unexpected { command: &'static str, text: String },
    /// The TLS handshake failed (certificate not trusted, wrong name, protocol error).
    #[error("TLS handshake with {server}")]
    Tls {
        server: String,
        #[source]
        source: io::Error,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {}", path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The TLS settings were refused by rustls.
    #[error("TLS configuration")]
    TlsConfig(#[source] rustls::Error),
    /// The server does not offer something the configuration requires.
    #[error("server does not offer {0}")]
    Unsupported(&'static str),
    /// An argument would have broken the command line (CR or LF in it).
    #[error("argument of {0} contains a line break")]
    BadArgument(&'static str),
}

impl Error {
    /// True if and only if the same operation may succeed later without a change of
    /// configuration: network trouble, a busy or temporarily failing server.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout(_) | Self::Io { .. } | Self::Closed => true,
            Self::Server { code, .. } => code.as_ref().is_none_or(ResponseCode::is_temporary),
            Self::Auth { code, .. } => code.as_ref().is_some_and(ResponseCode::is_temporary),
            Self::Parse { .. }
            | Self::TooLarge { .. }
            | Self::Unexpected { .. }
            | Self::Tls { .. }
            | Self::CaFile { .. }
            | Self::TlsConfig(_)
            | Self::Unsupported(_)
            | Self::BadArgument(_) => false,
        }
    }

    /// True if and only if the server refused the credentials (not a busy mailbox).
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth { code, .. } if !code.as_ref().is_some_and(ResponseCode::is_temporary))
    }
}

/// Results of the POP3 client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        let auth = |code| Error::Auth {
            mechanism: "USER/PASS",
            code,
            text: String::new(),
        };
        assert!(
            auth(Some(ResponseCode::Auth)).is_auth()
                && !auth(Some(ResponseCode::Auth)).is_transient()
        );
        assert!(auth(None).is_auth());
        assert!(
            !auth(Some(ResponseCode::InUse)).is_auth()
                && auth(Some(ResponseCode::InUse)).is_transient()
        );
        assert!(Error::Closed.is_transient());
        let server = |code| Error::Server {
            command: "RETR",
            code,
            text: String::new(),
        };
        assert!(server(None).is_transient() && !server(Some(ResponseCode::SysPerm)).is_transient());
        assert!(!Error::Unsupported("STLS").is_transient());
    }

    #[test]
    fn results_cross_threads() {
        fn is_send<T: Send + Sync>() {}
        is_send::<Result<usize>>();
    }
}
