//! RFC 1939 / 2449 / 5034 command lines: a pure parser from the bytes of one line.

/// One client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Command {
    User(String),
    /// The rest of the line: a password may contain spaces.
    Pass(String),
    Apop {
        user: String,
        digest: String,
    },
    /// `AUTH` alone lists the mechanisms; `initial` is the RFC 5034 initial response.
    Auth {
        mechanism: Option<String>,
        initial: Option<String>,
    },
    Capa,
    Stls,
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

/// A line that is not a command this server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    /// An unknown verb (as sent, upper-cased).
    Unknown(String),
    /// A known verb with missing or malformed arguments.
    BadArguments(&'static str),
}

impl Command {
    /// The verb, upper case, as fault scripts name it.
    pub(super) fn verb(&self) -> &'static str {
        match self {
            Self::User(_) => "USER",
            Self::Pass(_) => "PASS",
            Self::Apop { .. } => "APOP",
            Self::Auth { .. } => "AUTH",
            Self::Capa => "CAPA",
            Self::Stls => "STLS",
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
}

/// Strips the line end (CRLF, or a bare LF from sloppy clients).
pub(super) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one command line (with or without its line end).
pub(super) fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let line = String::from_utf8_lossy(trim_line_end(line));
    let (verb, rest) = match line.split_once(' ') {
        Some((verb, rest)) => (verb.to_ascii_uppercase(), rest),
        None => (line.to_ascii_uppercase(), ""),
    };
    let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
    let bad = |verb: &'static str| ParseError::BadArguments(verb);
    let command = match (verb.as_str(), args.as_slice()) {
        ("USER", [name]) => Command::User((*name).to_owned()),
        ("USER", _) => return Err(bad("USER")),
        ("PASS", _) if !rest.is_empty() => Command::Pass(rest.to_owned()),
        ("PASS", _) => return Err(bad("PASS")),
        ("APOP", [user, digest]) => Command::Apop {
            user: (*user).to_owned(),
            digest: (*digest).to_owned(),
        },
        ("APOP", _) => return Err(bad("APOP")),
        ("AUTH", []) => Command::Auth {
            mechanism: None,
            initial: None,
        },
        ("AUTH", [mechanism]) => Command::Auth {
            mechanism: Some(mechanism.to_ascii_uppercase()),
            initial: None,
        },
        ("AUTH", [mechanism, initial]) => Command::Auth {
            mechanism: Some(mechanism.to_ascii_uppercase()),
            initial: Some((*initial).to_owned()),
        },
        ("AUTH", _) => return Err(bad("AUTH")),
        ("CAPA", []) => Command::Capa,
        ("STLS", []) => Command::Stls,
        ("STAT", []) => Command::Stat,
        ("NOOP", []) => Command::Noop,
        ("RSET", []) => Command::Rset,
        ("QUIT", []) => Command::Quit,
        ("LIST", []) => Command::List(None),
        ("LIST", [n]) => Command::List(Some(number(n).ok_or(bad("LIST"))?)),
        ("UIDL", []) => Command::Uidl(None),
        ("UIDL", [n]) => Command::Uidl(Some(number(n).ok_or(bad("UIDL"))?)),
        ("RETR", [n]) => Command::Retr(number(n).ok_or(bad("RETR"))?),
        ("DELE", [n]) => Command::Dele(number(n).ok_or(bad("DELE"))?),
        ("TOP", [n, k]) => Command::Top(number(n).ok_or(bad("TOP"))?, number(k).ok_or(bad("TOP"))?),
        (
            verb @ ("CAPA" | "STLS" | "STAT" | "NOOP" | "RSET" | "QUIT" | "LIST" | "UIDL" | "RETR"
            | "DELE" | "TOP"),
            _,
        ) => {
            return Err(bad(static_verb(verb)));
        }
        (other, _) => return Err(ParseError::Unknown(other.to_owned())),
    };
    Ok(command)
}

fn static_verb(verb: &str) -> &'static str {
    [
        "CAPA", "STLS", "STAT", "NOOP", "RSET", "QUIT", "LIST", "UIDL", "RETR", "DELE", "TOP",
    ]
    .into_iter()
    .find(|v| *v == verb)
    .unwrap_or("?")
}

/// A decimal argument: digits only (no sign, no spaces).
fn number(arg: &str) -> Option<u32> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    arg.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_case_insensitively_with_their_arguments() {
        let cases: &[(&[u8], Command)] = &[
            (b"user alerts\r\n", Command::User("alerts".into())),
            (b"PASS two words \r\n", Command::Pass("two words ".into())),
            (
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
                Command::Apop {
                    user: "mrose".into(),
                    digest: "c4c9334bac560ecc979e58001b3e22fb".into(),
                },
            ),
            (
                b"AUTH\r\n",
                Command::Auth {
                    mechanism: None,
                    initial: None,
                },
            ),
            (
                b"auth plain\r\n",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: None,
                },
            ),
            (
                b"AUTH PLAIN AGEAYg==\r\n",
                Command::Auth {
                    mechanism: Some("PLAIN".into()),
                    initial: Some("AGEAYg==".into()),
                },
            ),
            (b"capa\n", Command::Capa),
            (b"STAT\r\n", Command::Stat),
            (b"LIST\r\n", Command::List(None)),
            (b"LIST 2\r\n", Command::List(Some(2))),
            (b"UIDL 10\r\n", Command::Uidl(Some(10))),
            (b"RETR 1\r\n", Command::Retr(1)),
            (b"TOP 1 0\r\n", Command::Top(1, 0)),
            (b"DELE 3\r\n", Command::Dele(3)),
            (b"NOOP\r\n", Command::Noop),
            (b"RSET\r\n", Command::Rset),
            (b"QUIT\r\n", Command::Quit),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse(line).as_ref(),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn malformed_lines_are_told_apart_from_unknown_verbs() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"RETR\r\n", ParseError::BadArguments("RETR")),
            (b"RETR x\r\n", ParseError::BadArguments("RETR")),
            (b"RETR -1\r\n", ParseError::BadArguments("RETR")),
            (b"TOP 1\r\n", ParseError::BadArguments("TOP")),
            (b"STAT 1\r\n", ParseError::BadArguments("STAT")),
            (b"USER\r\n", ParseError::BadArguments("USER")),
            (b"PASS\r\n", ParseError::BadArguments("PASS")),
            (b"LIST 99999999999\r\n", ParseError::BadArguments("LIST")),
            (b"XYZZY 1\r\n", ParseError::Unknown("XYZZY".into())),
            (b"\r\n", ParseError::Unknown(String::new())),
        ];
        for (line, expected) in cases {
            assert_eq!(
                parse(line).as_ref(),
                Err(expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
