//! Why a server reply could not be parsed; each variant keeps the offending bytes.

/// A reply that does not follow the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The status line starts with neither `+OK`, `-ERR` nor (for SASL) `+ `.
    #[error("reply is neither +OK nor -ERR: {:?}", String::from_utf8_lossy(.0))]
    BadStatus(Vec<u8>),
    /// A line is longer than the limit (the first bytes are kept).
    #[error("line longer than {limit} bytes (starts {:?})", String::from_utf8_lossy(.start))]
    LineTooLong { limit: usize, start: Vec<u8> },
    /// A multi-line reply grew past the limit before its terminating `.` line.
    #[error("multi-line reply larger than {limit} bytes")]
    ReplyTooLarge { limit: usize },
    /// A listing line (STAT, LIST, UIDL) is not `<number> <value>`.
    #[error("malformed {what} line {:?}", String::from_utf8_lossy(.line))]
    BadListing { what: &'static str, line: Vec<u8> },
    /// A unique-id is not 1–70 printable characters (RFC 1939 §7).
    #[error("invalid unique-id {:?}", String::from_utf8_lossy(.0))]
    BadUid(Vec<u8>),
}
