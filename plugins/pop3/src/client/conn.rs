//! The byte level of a POP3 connection: writes command lines, reads replies through the pure
//! parser, with a read buffer that keeps bytes of replies not asked for yet (pipelining).

use std::{future::Future, time::Duration};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::{
    error::{Error, Result},
    protocol::{
        Command, Expect, Limits, ParseError, Parsed, Reply, ResponseCode, Skip, Status, data_start,
        parse_reply, skip_data,
    },
};

/// An oversized reply is read past up to this many times its limit (and 64 MiB); a server that
/// sends more than that for one mail is not answering as POP3 does.
const SKIP_FACTOR: usize = 8;

/// Timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// How long one read or write may wait.
    pub io: Duration,
}

/// One connection to a POP3 server, below the protocol's states.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are consumed.
    start: usize,
    limits: Limits,
    timeouts: Timeouts,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S, limits: Limits, timeouts: Timeouts) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(64 << 10),
            start: 0,
            limits,
            timeouts,
            out: Vec::new(),
        }
    }

    /// Writes every command in one write (a pipeline, when more than one).
    pub async fn send(&mut self, commands: &[Command]) -> Result<()> {
        self.out.clear();
        for c in commands {
            c.encode(&mut self.out).map_err(Error::BadArgument)?;
        }
        let io = self.timeouts.io;
        timed(io, "write", self.stream.write_all(&self.out))
            .await
            .map_err(|source| Error::Io {
                context: "write",
                source,
            })?;
        timed(io, "write", self.stream.flush())
            .await
            .map_err(|source| Error::Io {
                context: "write",
                source,
            })
    }

    /// Reads the reply to `command` (which was sent), whatever its status.
    pub async fn read_reply(&mut self, command: &Command) -> Result<Reply> {
        self.read(command.verb(), command.expect()).await
    }

    /// Reads a reply that is not an answer to a command (the greeting).
    pub async fn read_greeting(&mut self) -> Result<Reply> {
        self.read("greeting", Expect::SingleLine).await
    }

    async fn read(&mut self, what: &'static str, expect: Expect) -> Result<Reply> {
        let mut resume = 0;
        loop {
            match parse_reply(&self.buf[self.start..], resume, expect, &self.limits) {
                Ok(Parsed::Complete { value, consumed }) => {
                    self.start += consumed;
                    if self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    }
                    return Ok(value);
                }
                Ok(Parsed::Incomplete { resume: r }) => resume = r,
                Err(ParseError::ReplyTooLarge { .. } | ParseError::LineTooLong { .. })
                    if expect == Expect::MultiLine
                        && let Some(start) = data_start(&self.buf[self.start..], &self.limits) =>
                {
                    self.start += start;
                    self.skip_data().await?;
                    return Err(Error::TooLarge {
                        command: what,
                        limit: self.limits.multi_line,
                    });
                }
                Err(source) => {
                    return Err(Error::Parse {
                        command: what,
                        source,
                    });
                }
            }
            self.fill().await?;
        }
    }

    /// Reads past the rest of a multi-line reply's data (from `start`, a line start) without
    /// keeping it, so the next reply is read from the right place.
    async fn skip_data(&mut self) -> Result<()> {
        let cap = self
            .limits
            .multi_line
            .saturating_mul(SKIP_FACTOR)
            .max(64 << 20);
        let (mut skipped, mut mid_line) = (0usize, false);
        loop {
            match skip_data(&self.buf[self.start..], mid_line) {
                Skip::Done { consumed } => {
                    self.start += consumed;
                    return Ok(());
                }
                Skip::More {
                    consumed,
                    mid_line: m,
                } => {
                    self.start += consumed;
                    skipped += consumed;
                    mid_line = m;
                }
            }
            if skipped > cap {
                return Err(Error::Parse {
                    command: "RETR",
                    source: ParseError::ReplyTooLarge { limit: cap },
                });
            }
            // Dropped bytes are not kept: the buffer stays small.
            self.buf.drain(..self.start);
            self.start = 0;
            self.fill().await?;
        }
    }

    /// Reads and drops whatever the server still sends until it closes the connection (after
    /// QUIT) or `limit` passes, so closing does not reset a connection with unread data (which
    /// could make the server drop it before it reads our QUIT).
    pub async fn drain_to_eof(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut scratch = vec![0u8; 64 << 10];
        while let Ok(Ok(n)) =
            tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await
        {
            if n == 0 {
                break;
            }
        }
    }

    /// Reads more bytes into the buffer; moves unread bytes to its front first if that helps.
    async fn fill(&mut self) -> Result<()> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(64 << 10);
        let n = timed(
            self.timeouts.io,
            "read",
            self.stream.read_buf(&mut self.buf),
        )
        .await
        .map_err(|source| Error::Io {
            context: "read",
            source,
        })?;
        if n == 0 { Err(Error::Closed) } else { Ok(()) }
    }

    /// Sends one command and reads its reply; `-ERR` becomes [`Error::Server`].
    pub async fn command(&mut self, command: &Command) -> Result<Reply> {
        self.send(std::slice::from_ref(command)).await?;
        let reply = self.read_reply(command).await?;
        expect_ok(command.verb(), reply)
    }

    /// True if and only if bytes the server sent are waiting unread (must be false right
    /// after STLS: anything there was injected before the handshake).
    pub fn has_buffered(&self) -> bool {
        self.start < self.buf.len()
    }

    /// The stream, for a TLS upgrade.
    pub fn into_stream(self) -> S {
        self.stream
    }
}

/// `+OK` passes; `-ERR` becomes [`Error::Server`], a stray continuation [`Error::Unexpected`].
pub fn expect_ok(command: &'static str, reply: Reply) -> Result<Reply> {
    match reply.status {
        Status::Ok => Ok(reply),
        Status::Err => Err(Error::Server {
            command,
            code: ResponseCode::parse(&reply.text),
            text: reply.text_lossy(),
        }),
        Status::Continue => Err(Error::Unexpected {
            command,
            text: format!("+ {}", reply.text_lossy()),
        }),
    }
}

async fn timed<T>(
    limit: Duration,
    what: &'static str,
    f: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {limit:?}"),
        )),
    }
}
