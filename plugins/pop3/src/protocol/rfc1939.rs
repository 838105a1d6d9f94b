//! RFC 1939 commands and the listings they return (STAT, LIST, UIDL), plus APOP (§7) and the
//! SASL commands of RFC 5034 and RFC 2595's STLS, which share the same command syntax.
//! <https://www.rfc-editor.org/rfc/rfc1939>

use std::fmt::Write as _;

use md5::{Digest as _, Md5};

use super::{Expect, ParseError};

/// One command as the client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    User(String),
    Pass(String),
    /// `APOP name digest`.
    Apop {
        user: String,
        digest: String,
    },
    /// `AUTH PLAIN [initial-response]` (RFC 5034).
    AuthPlain(Option<String>),
    /// A line answering a SASL `+ ` continuation.
    SaslResponse(String),
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
}

impl Command {
    /// Whether a `+OK` to this command is followed by data lines.
    pub fn expect(&self) -> Expect {
        match self {
            Self::Capa | Self::List(None) | Self::Uidl(None) | Self::Retr(_) | Self::Top(..) => {
                Expect::MultiLine
            }
            _ => Expect::SingleLine,
        }
    }

    /// The keyword, for errors and logs (never the arguments, which may be secrets).
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::AuthPlain(_) => "AUTH PLAIN",
            Self::SaslResponse(_) => "AUTH PLAIN response",
            Self::Stat => "STAT",
            Self::List(_) => "LIST",
            Self::Uidl(_) => "UIDL",
            Self::Retr(_) => "RETR",
            Self::Top(..) => "TOP",
            Self::Dele(_) => "DELE",
            Self::Noop => "NOOP",
            Self::Rset => "RSET",
            Self::Quit => "QUIT",
        }
    }

    /// Appends the command line with its CRLF to `out`. Arguments holding CR or LF would smuggle
    /// a second command, so they are refused (the returned error names the command).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        let mut line = String::new();
        // Writing to a String cannot fail.
        let _ = match self {
            Self::User(a) => write!(line, "USER {a}"),
            Self::Pass(a) => write!(line, "PASS {a}"),
            Self::Apop { user, digest } => write!(line, "APOP {user} {digest}"),
            Self::AuthPlain(Some(ir)) => write!(line, "AUTH PLAIN {ir}"),
            Self::SaslResponse(r) => write!(line, "{r}"),
            Self::List(Some(n)) => write!(line, "LIST {n}"),
            Self::Uidl(Some(n)) => write!(line, "UIDL {n}"),
            Self::Retr(n) => write!(line, "RETR {n}"),
            Self::Top(n, lines) => write!(line, "TOP {n} {lines}"),
            Self::Dele(n) => write!(line, "DELE {n}"),
            _ => write!(line, "{}", self.verb()),
        };
        if line.contains(['\r', '\n', '\0']) {
            return Err(self.verb());
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// `+OK nn mm` of STAT: message count and mailbox size in octets.
pub fn parse_stat(text: &[u8]) -> Result<(u32, u64), ParseError> {
    let bad = || ParseError::BadListing {
        what: "STAT",
        line: text.to_vec(),
    };
    let mut words = text.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let count = words.next().and_then(number).ok_or_else(bad)?;
    let size = words.next().and_then(number).ok_or_else(bad)?;
    Ok((u32::try_from(count).map_err(|_| bad())?, size))
}

/// One line of a LIST listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListEntry {
    pub msg: u32,
    pub size: u64,
}

/// One line of a UIDL listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidlEntry {
    pub msg: u32,
    pub uid: String,
}

/// The data of a multi-line LIST reply, or the text of a one-message `+OK n size`.
pub fn parse_list(data: &[u8]) -> Result<Vec<ListEntry>, ParseError> {
    listing(data, "LIST", |msg, value| {
        let size = number(value).ok_or(())?;
        Ok(ListEntry { msg, size })
    })
}

/// The data of a multi-line UIDL reply, or the text of a one-message `+OK n uid`.
/// Unique-ids must be 1–70 characters in 0x21–0x7E (RFC 1939 §7); others are refused.
pub fn parse_uidl(data: &[u8]) -> Result<Vec<UidlEntry>, ParseError> {
    let entries = listing(data, "UIDL", |msg, value| {
        Ok(UidlEntry {
            msg,
            uid: String::from_utf8_lossy(value).into_owned(),
        })
    })?;
    match entries.iter().find(|e| {
        e.uid.is_empty() || e.uid.len() > 70 || !e.uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
    }) {
        Some(bad) => Err(ParseError::BadUid(bad.uid.as_bytes().to_vec())),
        None => Ok(entries),
    }
}

fn listing<T>(
    data: &[u8],
    what: &'static str,
    value: impl Fn(u32, &[u8]) -> Result<T, ()>,
) -> Result<Vec<T>, ParseError> {
    let mut out = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let bad = || ParseError::BadListing {
            what,
            line: line.to_vec(),
        };
        let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let msg = words
            .next()
            .and_then(number)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(bad)?;
        let v = words.next().ok_or_else(bad)?;
        out.push(value(msg, v).map_err(|()| bad())?);
    }
    Ok(out)
}

fn number(word: &[u8]) -> Option<u64> {
    if word.is_empty() || !word.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// The APOP timestamp (`<...@...>`, angle brackets included) in a greeting, if it has one.
pub fn apop_timestamp(greeting: &[u8]) -> Option<&[u8]> {
    let start = greeting.iter().position(|&b| b == b'<')?;
    let len = greeting[start..].iter().position(|&b| b == b'>')?;
    let stamp = &greeting[start..=start + len];
    stamp.contains(&b'@').then_some(stamp)
}

/// The APOP digest: lowercase hex MD5 of the timestamp followed by the shared secret.
pub fn apop_digest(timestamp: &[u8], secret: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp);
    md5.update(secret.as_bytes());
    hex::encode(md5.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(c: &Command) -> String {
        let mut out = Vec::new();
        c.encode(&mut out).expect("encodes");
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn commands_encode_as_on_the_wire() {
        assert_eq!(encoded(&Command::User("alerts".into())), "USER alerts\r\n");
        assert_eq!(encoded(&Command::Top(3, 0)), "TOP 3 0\r\n");
        assert_eq!(encoded(&Command::List(None)), "LIST\r\n");
        assert_eq!(encoded(&Command::Uidl(Some(7))), "UIDL 7\r\n");
        assert_eq!(encoded(&Command::AuthPlain(None)), "AUTH PLAIN\r\n");
        assert_eq!(
            encoded(&Command::AuthPlain(Some("AGEAYg==".into()))),
            "AUTH PLAIN AGEAYg==\r\n"
        );
        assert_eq!(
            Command::Pass("x\r\nDELE 1".into()).encode(&mut Vec::new()),
            Err("PASS")
        );
        assert_eq!(Command::Retr(1).expect(), Expect::MultiLine);
        assert_eq!(Command::List(Some(1)).expect(), Expect::SingleLine);
    }

    #[test]
    fn stat_list_and_uidl_listings() {
        assert_eq!(parse_stat(b"2 320"), Ok((2, 320)));
        assert!(parse_stat(b"two 320").is_err());
        assert_eq!(
            parse_list(b"1 120\r\n2 200\r\n").unwrap(),
            [
                ListEntry { msg: 1, size: 120 },
                ListEntry { msg: 2, size: 200 }
            ]
        );
        assert_eq!(
            parse_list(b"2 200").unwrap(),
            [ListEntry { msg: 2, size: 200 }]
        );
        let uidl = parse_uidl(b"1 000000016b0c2efa\r\n2 whqtswO00WBw418f9t5JxYwZ\r\n").unwrap();
        assert_eq!(
            uidl[1],
            UidlEntry {
                msg: 2,
                uid: "whqtswO00WBw418f9t5JxYwZ".into()
            }
        );
        let e = parse_list(b"1 120\r\nx 5\r\n").unwrap_err();
        assert_eq!(e.to_string(), "malformed LIST line \"x 5\"");
    }

    #[test]
    fn uids_are_bounded_like_rfc1939_says() {
        let long = format!("1 {}\r\n", "a".repeat(71));
        assert!(matches!(
            parse_uidl(long.as_bytes()),
            Err(ParseError::BadUid(_))
        ));
        assert!(parse_uidl(format!("1 {}\r\n", "a".repeat(70)).as_bytes()).is_ok());
        assert!(matches!(
            parse_uidl(b"1 caf\xc3\xa9\r\n"),
            Err(ParseError::BadUid(_))
        ));
    }

    #[test]
    fn apop_matches_the_rfc_example() {
        let greeting = b"POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
        let stamp = apop_timestamp(greeting).expect("timestamp");
        assert_eq!(stamp, b"<1896.697170952@dbc.mtview.ca.us>");
        assert_eq!(
            apop_digest(stamp, "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
        assert_eq!(apop_timestamp(b"Dovecot (Debian) ready."), None);
        assert_eq!(apop_timestamp(b"ready <no-at-sign>"), None);
    }
}
