//! Fuzz target `pop3_reply`: POP3 server replies (plugins/pop3/src/protocol) — the status line,
//! multi-line data up to the `.` line, dot-unstuffing, and the listings read from them (STAT,
//! LIST, UIDL, CAPA, response codes, the APOP timestamp).
//!
//! Input: one control byte, then the bytes the server sent. The control byte picks single- or
//! multi-line and the size of the reads the client sees. Besides "no panic", the target checks
//! that parsing the reply as it arrives in pieces (resuming, as the client does) gives the same
//! answer as parsing it whole: a reply must not depend on where the network cut it.

use alertbridge_pop3::protocol::{
    Capabilities, Expect, Limits, ParseError, Parsed, Reply, ResponseCode, apop_timestamp,
    parse_list, parse_reply, parse_stat, parse_uidl,
};

/// Small limits, so that inputs of a few hundred bytes reach the limit checks.
const LIMITS: Limits = Limits {
    status_line: 48,
    data_line: 80,
    multi_line: 512,
};

pub fn run(data: &[u8]) {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let expect = if control & 1 == 0 {
        Expect::SingleLine
    } else {
        Expect::MultiLine
    };
    let chunk = usize::from(control >> 1).max(1);

    let whole = parse_reply(wire, 0, expect, &LIMITS);
    let pieces = parse_in_pieces(wire, chunk, expect);
    assert_eq!(
        summary(&whole),
        summary(&pieces),
        "parsing in reads of {chunk} bytes differs from parsing the whole reply"
    );

    match whole {
        Ok(Parsed::Complete { value, consumed }) => {
            assert!(consumed <= wire.len(), "consumed past the end");
            check_reply(&value, expect);
            // The same reply followed by anything parses the same and consumes the same.
            let mut longer = wire[..consumed].to_vec();
            longer.extend_from_slice(b"+OK trailing\r\n");
            match parse_reply(&longer, 0, expect, &LIMITS) {
                Ok(Parsed::Complete {
                    value: again,
                    consumed: n,
                }) => {
                    assert_eq!(again, value);
                    assert_eq!(n, consumed);
                }
                other => panic!("a complete reply became {other:?} when more bytes followed"),
            }
        }
        Ok(Parsed::Incomplete { resume }) => assert!(resume <= wire.len()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Feeds `wire` in reads of `chunk` bytes, resuming as the client does.
fn parse_in_pieces(wire: &[u8], chunk: usize, expect: Expect) -> Result<Parsed<Reply>, ParseError> {
    let mut resume = 0;
    let mut end = 0;
    loop {
        end = (end + chunk).min(wire.len());
        match parse_reply(&wire[..end], resume, expect, &LIMITS) {
            Ok(Parsed::Incomplete { resume: r }) if end < wire.len() => {
                assert!(r >= resume, "resume went backwards");
                resume = r;
            }
            other => return other,
        }
    }
}

/// What must agree between the two ways of parsing (the kept start of an over-long line may
/// be shorter when the line was cut by a read).
fn summary(r: &Result<Parsed<Reply>, ParseError>) -> String {
    match r {
        Ok(Parsed::Complete { value, consumed }) => format!("complete {consumed} {value:?}"),
        Ok(Parsed::Incomplete { .. }) => "incomplete".to_owned(),
        Err(ParseError::LineTooLong { limit, .. }) => format!("line too long {limit}"),
        Err(e) => format!("error {e:?}"),
    }
}

fn check_reply(reply: &Reply, expect: Expect) {
    let _ = reply.text_lossy();
    let _ = parse_stat(&reply.text);
    let _ = ResponseCode::parse(&reply.text).map(|c| c.is_temporary());
    if let Some(ts) = apop_timestamp(&reply.text) {
        assert!(ts.starts_with(b"<") && ts.ends_with(b">"));
    }
    if expect == Expect::SingleLine {
        assert!(reply.data.is_empty());
        return;
    }
    // Unstuffed data: every line ends in CRLF.
    assert!(reply.data.is_empty() || reply.data.ends_with(b"\r\n"));
    let _ = parse_list(&reply.data);
    if let Ok(uidl) = parse_uidl(&reply.data) {
        // RFC 1939 §7: 1–70 characters in 0x21–0x7E; the state file and dedup keys rely on it.
        for e in uidl {
            assert!((1..=70).contains(&e.uid.len()), "unique-id {:?}", e.uid);
            assert!(e.uid.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        }
    }
    let caps = Capabilities::parse(&reply.data);
    let _ = caps.has_sasl("PLAIN");
}
