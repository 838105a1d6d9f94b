//! Server replies (RFC 1939 §3): the status line (`+OK`, `-ERR`, and `+ ` for SASL
//! continuations) and, for multi-line replies, the data up to the `.` line, dot-unstuffed.

use super::ParseError;

/// Whether the command that was sent is answered by one line or by a multi-line reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Only a status line.
    SingleLine,
    /// A status line, then (after `+OK`) data lines up to a line holding only `.`.
    MultiLine,
}

/// The first word of a status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `+OK`
    Ok,
    /// `-ERR`
    Err,
    /// `+ ` — a SASL continuation (RFC 5034).
    Continue,
}

/// One reply: its status, the rest of the status line and the data of a multi-line reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    /// The status line after the status word and its space, as sent (maybe not UTF-8).
    pub text: Vec<u8>,
    /// The data lines of a multi-line `+OK` reply, unstuffed, each ending in CRLF.
    pub data: Vec<u8>,
}

impl Reply {
    /// The status line text, lossily decoded for messages and logs.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

/// Bounds on what the parser accepts before it gives up with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest status line, without CRLF (RFC 2449 §4 allows 512 octets with CRLF).
    pub status_line: usize,
    /// Longest data line of a multi-line reply, without CRLF.
    pub data_line: usize,
    /// Largest multi-line reply, counting its data lines as sent.
    pub multi_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            status_line: 1024,
            data_line: 1 << 20,
            multi_line: 64 << 20,
        }
    }
}

/// The outcome of parsing a buffer that may hold only part of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole reply, which took the first `consumed` bytes of the buffer.
    Complete { value: T, consumed: usize },
    /// More bytes are needed. Call again with the longer buffer and this `resume` offset, so
    /// lines already checked are not scanned again.
    Incomplete { resume: usize },
}

/// Parses one reply from the start of `buf`. `resume` is 0 on the first call and the value
/// returned in [`Parsed::Incomplete`] on later calls for the same reply.
pub fn parse_reply(
    buf: &[u8],
    resume: usize,
    expect: Expect,
    limits: &Limits,
) -> Result<Parsed<Reply>, ParseError> {
    let Some((line, data_start)) = next_line(buf, 0, limits.status_line)? else {
        return Ok(Parsed::Incomplete { resume: 0 });
    };
    let (status, text) = parse_status(line)?;
    if expect == Expect::SingleLine || status != Status::Ok {
        let value = Reply {
            status,
            text: text.to_vec(),
            data: Vec::new(),
        };
        return Ok(Parsed::Complete {
            value,
            consumed: data_start,
        });
    }
    let mut pos = resume.max(data_start);
    loop {
        if pos - data_start > limits.multi_line {
            return Err(ParseError::ReplyTooLarge {
                limit: limits.multi_line,
            });
        }
        let Some((line, next)) = next_line(buf, pos, limits.data_line)? else {
            return Ok(Parsed::Incomplete { resume: pos });
        };
        if line == b"." {
            let data = unstuff(&buf[data_start..pos]);
            let value = Reply {
                status,
                text: text.to_vec(),
                data,
            };
            return Ok(Parsed::Complete {
                value,
                consumed: next,
            });
        }
        pos = next;
    }
}

/// Where the data of a multi-line `+OK` reply at the start of `buf` begins: `None` unless `buf`
/// starts with a complete, valid `+OK` status line. After [`parse_reply`] refused a reply as too
/// large, this tells whether the status line was fine (so only the data was too much, and it can
/// be skipped with [`skip_data`]).
pub fn data_start(buf: &[u8], limits: &Limits) -> Option<usize> {
    let (line, start) = next_line(buf, 0, limits.status_line).ok()??;
    matches!(parse_status(line), Ok((Status::Ok, _))).then_some(start)
}

/// How far [`skip_data`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The terminating `.` line ends `consumed` bytes in.
    Done { consumed: usize },
    /// Not there yet: drop the first `consumed` bytes and call again with more, passing
    /// `mid_line` (the dropped bytes ended inside a line).
    More { consumed: usize, mid_line: bool },
}

/// Scans the data lines of a multi-line reply for its terminating `.` line without keeping
/// them, so an oversized reply can be passed over in bounded memory and the connection stays
/// in step with the server. `buf` starts at a line start, or inside a line if `mid_line`.
pub fn skip_data(buf: &[u8], mid_line: bool) -> Skip {
    let mut pos = 0;
    if mid_line {
        match buf.iter().position(|&b| b == b'\n') {
            Some(nl) => pos = nl + 1,
            None => {
                return Skip::More {
                    consumed: buf.len(),
                    mid_line: true,
                };
            }
        }
    }
    loop {
        let rest = &buf[pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            // An unfinished line of more than `.` + CR cannot be the terminator.
            return if rest.len() > 2 {
                Skip::More {
                    consumed: buf.len(),
                    mid_line: true,
                }
            } else {
                Skip::More {
                    consumed: pos,
                    mid_line: false,
                }
            };
        };
        let line = &rest[..nl];
        if line.strip_suffix(b"\r").unwrap_or(line) == b"." {
            return Skip::Done {
                consumed: pos + nl + 1,
            };
        }
        pos += nl + 1;
    }
}

/// The line starting at `start` without its line ending, and where the next line starts.
/// `None` if the line is not complete yet; an error if it is (or will be) longer than `limit`.
fn next_line(buf: &[u8], start: usize, limit: usize) -> Result<Option<(&[u8], usize)>, ParseError> {
    let rest = &buf[start..];
    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
        // A CR at the end may be the first half of the line ending: it does not count yet.
        let pending = rest.strip_suffix(b"\r").unwrap_or(rest);
        return if pending.len() > limit {
            Err(too_long(rest, limit))
        } else {
            Ok(None)
        };
    };
    let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
    if line.len() > limit {
        return Err(too_long(line, limit));
    }
    Ok(Some((line, start + nl + 1)))
}

fn too_long(line: &[u8], limit: usize) -> ParseError {
    ParseError::LineTooLong {
        limit,
        start: line[..line.len().min(40)].to_vec(),
    }
}

fn parse_status(line: &[u8]) -> Result<(Status, &[u8]), ParseError> {
    let (status, rest) = if let Some(rest) = line.strip_prefix(b"+OK") {
        (Status::Ok, rest)
    } else if let Some(rest) = line.strip_prefix(b"-ERR") {
        (Status::Err, rest)
    } else if line == b"+" || line.starts_with(b"+ ") {
        (Status::Continue, &line[1..])
    } else {
        return Err(ParseError::BadStatus(line.to_vec()));
    };
    match rest {
        [] => Ok((status, rest)),
        [b' ', text @ ..] => Ok((status, text)),
        _ => Err(ParseError::BadStatus(line.to_vec())),
    }
}

/// Removes the byte-stuffing of RFC 1939 §3 (a leading `.` doubled) and ends every line in CRLF.
fn unstuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for line in data.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8], expect: Expect) -> Result<Parsed<Reply>, ParseError> {
        parse_reply(buf, 0, expect, &Limits::default())
    }

    fn complete(buf: &[u8], expect: Expect) -> (Reply, usize) {
        match parse(buf, expect) {
            Ok(Parsed::Complete { value, consumed }) => (value, consumed),
            other => panic!(
                "expected a complete reply for {:?}, got {other:?}",
                String::from_utf8_lossy(buf)
            ),
        }
    }

    #[test]
    fn single_line_ok_and_err() {
        let (r, n) = complete(
            b"+OK Dovecot (Debian) ready.\r\n+OK next",
            Expect::SingleLine,
        );
        assert_eq!(
            (r.status, r.text.as_slice(), n),
            (Status::Ok, &b"Dovecot (Debian) ready."[..], 29)
        );
        let (r, _) = complete(
            b"-ERR [AUTH] Authentication failed.\r\n",
            Expect::SingleLine,
        );
        assert_eq!(
            (r.status, r.text_lossy().as_str()),
            (Status::Err, "[AUTH] Authentication failed.")
        );
        let (r, n) = complete(b"+OK\r\n", Expect::SingleLine);
        assert_eq!((r.status, r.text.len(), n), (Status::Ok, 0, 5));
        let (r, _) = complete(b"+ \r\n", Expect::SingleLine);
        assert_eq!(r.status, Status::Continue);
    }

    #[test]
    fn multi_line_is_dot_unstuffed_and_stops_at_the_terminator() {
        let wire = b"+OK 52 octets\r\nSubject: x\r\n\r\n..leading dot\r\n.\r\n+OK next\r\n";
        let (r, n) = complete(wire, Expect::MultiLine);
        assert_eq!(r.data, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(&wire[n..], b"+OK next\r\n");
    }

    #[test]
    fn multi_line_err_is_one_line() {
        let (r, n) = complete(b"-ERR no such message\r\n+OK\r\n", Expect::MultiLine);
        assert_eq!((r.status, r.data.len(), n), (Status::Err, 0, 22));
    }

    #[test]
    fn empty_multi_line_and_bare_lf() {
        let (r, _) = complete(b"+OK\r\n.\r\n", Expect::MultiLine);
        assert!(r.data.is_empty());
        let (r, _) = complete(b"+OK\na\n.\n", Expect::MultiLine);
        assert_eq!(r.data, b"a\r\n");
    }

    #[test]
    fn split_reads_resume_where_they_stopped() {
        let wire: &[u8] = b"+OK\r\nline one\r\nline two\r\n.\r\n";
        let limits = Limits::default();
        let mut resume = 0;
        let mut done = None;
        for end in 1..=wire.len() {
            match parse_reply(&wire[..end], resume, Expect::MultiLine, &limits) {
                Ok(Parsed::Incomplete { resume: r }) => {
                    assert!(r >= resume, "resume went backwards at {end}");
                    resume = r;
                }
                Ok(Parsed::Complete { value, consumed }) => {
                    done = Some((end, value, consumed));
                    break;
                }
                Err(e) => panic!("split at {end}: {e}"),
            }
        }
        let (end, value, consumed) = done.expect("never complete");
        assert_eq!((end, consumed), (wire.len(), wire.len()));
        assert_eq!(value.data, b"line one\r\nline two\r\n");
        // A terminator split as ".\r" is not mistaken for the end.
        assert!(matches!(
            parse(b"+OK\r\nx\r\n.\r", Expect::MultiLine),
            Ok(Parsed::Incomplete { .. })
        ));
        assert!(matches!(
            parse(b"+OK\r\nx\r\n..\r\n", Expect::MultiLine),
            Ok(Parsed::Incomplete { .. })
        ));
    }

    /// Found by fuzzing (fuzz target `pop3_reply`): a line exactly as long as its limit was
    /// refused when a read ended between its CR and LF, though the same line read whole is
    /// taken — whether a reply parsed depended on where the network cut it.
    #[test]
    fn a_line_at_the_limit_split_between_cr_and_lf_is_taken() {
        let limits = Limits {
            status_line: 10,
            data_line: 8,
            multi_line: 100,
        };
        // Status line of exactly 10 bytes; the first read ends after its CR.
        let wire = b"+OK 012345\r\n";
        let first = parse_reply(&wire[..wire.len() - 1], 0, Expect::SingleLine, &limits);
        assert!(matches!(first, Ok(Parsed::Incomplete { .. })), "{first:?}");
        let Ok(Parsed::Complete { value, .. }) = parse_reply(wire, 0, Expect::SingleLine, &limits)
        else {
            panic!("a status line at the limit is refused");
        };
        assert_eq!(value.text, b"012345");
        // Data line of exactly 8 bytes, cut the same way.
        let wire = b"+OK\r\n01234567\r\n.\r\n";
        let cut = wire.len() - 4;
        let Ok(Parsed::Incomplete { resume }) =
            parse_reply(&wire[..cut], 0, Expect::MultiLine, &limits)
        else {
            panic!("a data line at the limit, cut after its CR, is refused");
        };
        let Ok(Parsed::Complete { value, .. }) =
            parse_reply(wire, resume, Expect::MultiLine, &limits)
        else {
            panic!("not complete");
        };
        assert_eq!(value.data, b"01234567\r\n");
    }

    #[test]
    fn over_long_lines_are_errors_even_before_their_end_arrives() {
        let limits = Limits {
            status_line: 10,
            data_line: 8,
            multi_line: 30,
        };
        let e = parse_reply(b"+OK 0123456789", 0, Expect::SingleLine, &limits).unwrap_err();
        assert!(
            matches!(e, ParseError::LineTooLong { limit: 10, .. }),
            "{e}"
        );
        let e =
            parse_reply(b"+OK\r\n123456789\r\n.\r\n", 0, Expect::MultiLine, &limits).unwrap_err();
        assert!(e.to_string().starts_with("line longer than 8 bytes"), "{e}");
        let big = b"+OK\r\n1234567\r\n1234567\r\n1234567\r\n1234567\r\n.\r\n";
        let e = parse_reply(big, 0, Expect::MultiLine, &limits).unwrap_err();
        assert_eq!(e, ParseError::ReplyTooLarge { limit: 30 });
    }

    #[test]
    fn oversized_data_is_skipped_to_its_terminator_in_pieces() {
        let limits = Limits::default();
        assert_eq!(data_start(b"+OK 9 octets\r\nx", &limits), Some(14));
        assert_eq!(data_start(b"-ERR no\r\n", &limits), None);
        assert_eq!(data_start(b"+OK 9 oct", &limits), None);
        let data: &[u8] = b"..\r\n.x\r\nlong line\r\n.\r\n+OK next\r\n";
        assert_eq!(skip_data(data, false), Skip::Done { consumed: 22 });
        assert_eq!(&data[22..], b"+OK next\r\n");
        // Fed in every split, it always ends at the same place.
        for piece in 1..data.len() {
            let (mut pos, mut mid, mut end) = (0, false, None);
            let mut avail = piece.min(data.len());
            while end.is_none() {
                match skip_data(&data[pos..avail], mid) {
                    Skip::Done { consumed } => end = Some(pos + consumed),
                    Skip::More { consumed, mid_line } => {
                        pos += consumed;
                        mid = mid_line;
                        assert!(avail < data.len(), "piece {piece}: ran out");
                        avail = (avail + piece).min(data.len());
                    }
                }
            }
            assert_eq!(end, Some(22), "piece {piece}");
        }
        assert_eq!(
            skip_data(b"abc", true),
            Skip::More {
                consumed: 3,
                mid_line: true
            }
        );
        assert_eq!(
            skip_data(b"x\r\n.\r", false),
            Skip::More {
                consumed: 3,
                mid_line: false
            }
        );
    }

    #[test]
    fn garbage_status_is_an_error_and_non_utf8_text_is_kept() {
        let e = parse(b"* OK imap\r\n", Expect::SingleLine).unwrap_err();
        assert_eq!(e, ParseError::BadStatus(b"* OK imap".to_vec()));
        assert!(parse(b"+OKAY\r\n", Expect::SingleLine).is_err());
        let (r, _) = complete(b"-ERR caf\xe9 ferm\xe9\r\n", Expect::SingleLine);
        assert_eq!(r.text, b"caf\xe9 ferm\xe9");
        assert_eq!(r.text_lossy(), "caf\u{fffd} ferm\u{fffd}");
        let (r, _) = complete(b"+OK\r\n\xff\xfe\r\n.\r\n", Expect::MultiLine);
        assert_eq!(r.data, b"\xff\xfe\r\n");
    }
}
