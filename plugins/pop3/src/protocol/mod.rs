//! The POP3 wire protocol as pure functions over bytes: replies (RFC 1939 §3), the commands and
//! their listings (RFC 1939), and capabilities and response codes (RFC 2449).
//!
//! Nothing here does I/O. A parser given an incomplete buffer says so ([`Parsed::Incomplete`])
//! instead of failing, so the client can read more and call it again.

mod error;
mod response;
mod rfc1939;
mod rfc2449;

pub use self::{
    error::ParseError,
    response::{Expect, Limits, Parsed, Reply, Skip, Status, data_start, parse_reply, skip_data},
    rfc1939::{
        Command, ListEntry, UidlEntry, apop_digest, apop_timestamp, parse_list, parse_stat,
        parse_uidl,
    },
    rfc2449::{Capabilities, ResponseCode},
};
