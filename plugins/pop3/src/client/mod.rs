//! The POP3 client on tokio, over any byte stream. Its types follow RFC 1939's states: a
//! [`Client`] is in the AUTHORIZATION state (greeting, CAPA, STLS, login) and logging in turns it
//! into a [`Session`] in the TRANSACTION state; [`Session::quit`] enters UPDATE, where the server
//! applies the DELEs.

mod conn;
mod connect;
#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;
mod tls;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite};

pub use self::{
    conn::{Connection, Timeouts},
    connect::{Endpoint, Io, TlsMode, connect},
    tls::{client_config, server_name},
};
use crate::{
    error::{Error, Result},
    protocol::{
        Capabilities, Command, ListEntry, Reply, ResponseCode, Status, UidlEntry, apop_digest,
        apop_timestamp, parse_list, parse_stat, parse_uidl,
    },
};

/// How to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `USER` + `PASS` (RFC 1939 §7).
    User,
    /// `APOP` with the greeting's timestamp (RFC 1939 §7).
    Apop,
    /// SASL `AUTH PLAIN` (RFC 5034, RFC 4616).
    Plain,
}

impl AuthMethod {
    fn name(self) -> &'static str {
        match self {
            Self::User => "USER/PASS",
            Self::Apop => "APOP",
            Self::Plain => "AUTH PLAIN",
        }
    }
}

/// A connection in the AUTHORIZATION state.
#[derive(Debug)]
pub struct Client<S> {
    conn: Connection<S>,
    greeting: Vec<u8>,
    caps: Option<Capabilities>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Reads the server's greeting. A `-ERR` greeting is [`Error::Server`].
    pub async fn greet(mut conn: Connection<S>) -> Result<Self> {
        let reply = conn.read_greeting().await?;
        let reply = conn::expect_ok("greeting", reply)?;
        Ok(Self {
            conn,
            greeting: reply.text,
            caps: None,
        })
    }

    /// A client on a stream just upgraded by STLS: no new greeting; capabilities are unknown
    /// again (RFC 2595 §4).
    pub fn after_stls(conn: Connection<S>, greeting: Vec<u8>) -> Self {
        Self {
            conn,
            greeting,
            caps: None,
        }
    }

    /// Asks for the capabilities (RFC 2449 CAPA). A server without CAPA (`-ERR`) is taken to
    /// offer nothing beyond RFC 1939.
    pub async fn capa(&mut self) -> Result<&Capabilities> {
        let cmd = Command::Capa;
        self.conn.send(std::slice::from_ref(&cmd)).await?;
        let reply = self.conn.read_reply(&cmd).await?;
        let caps = match reply.status {
            Status::Ok => Capabilities::parse(&reply.data),
            _ => Capabilities::default(),
        };
        Ok(self.caps.insert(caps))
    }

    /// The capabilities from the last [`Self::capa`], if any.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.caps.as_ref()
    }

    /// Sends STLS (RFC 2595) and hands back the stream for the TLS handshake and the greeting.
    /// Fails if the server said anything after its `+OK`: those bytes would be trusted later.
    pub async fn stls(mut self) -> Result<(S, Vec<u8>)> {
        self.conn.command(&Command::Stls).await?;
        if self.conn.has_buffered() {
            return Err(Error::Unexpected {
                command: "STLS",
                text: "data after +OK, before the TLS handshake".into(),
            });
        }
        Ok((self.conn.into_stream(), self.greeting))
    }

    /// The best method the server offers: APOP (the password never crosses the wire), then SASL
    /// PLAIN, then USER/PASS.
    pub fn best_auth(&self) -> AuthMethod {
        if apop_timestamp(&self.greeting).is_some() {
            AuthMethod::Apop
        } else if self.caps.as_ref().is_some_and(|c| c.has_sasl("PLAIN")) {
            AuthMethod::Plain
        } else {
            AuthMethod::User
        }
    }

    /// Logs in; on success the session is in the TRANSACTION state.
    ///
    /// Possible failures: [`Error::Auth`] when the server refuses the credentials (its response
    /// code says whether only the mailbox is busy), [`Error::Unsupported`] for APOP without a
    /// timestamp in the greeting.
    pub async fn login(
        mut self,
        method: AuthMethod,
        user: &str,
        password: &str,
    ) -> Result<Session<S>> {
        let mechanism = method.name();
        let refused = |reply: Reply| Error::Auth {
            mechanism,
            code: ResponseCode::parse(&reply.text),
            text: reply.text_lossy(),
        };
        let last = match method {
            AuthMethod::User => {
                let (u, p) = (Command::User(user.into()), Command::Pass(password.into()));
                let reply = self.exchange(&u).await?;
                if reply.status != Status::Ok {
                    return Err(refused(reply));
                }
                self.exchange(&p).await?
            }
            AuthMethod::Apop => {
                let stamp = apop_timestamp(&self.greeting)
                    .ok_or(Error::Unsupported("APOP (no timestamp in the greeting)"))?;
                let digest = apop_digest(stamp, password);
                self.exchange(&Command::Apop {
                    user: user.into(),
                    digest,
                })
                .await?
            }
            AuthMethod::Plain => {
                let response = base64::engine::general_purpose::STANDARD
                    .encode(format!("\0{user}\0{password}"));
                // RFC 5034 §4: an initial response that would make the line exceed 255 octets
                // goes after an empty challenge instead.
                if response.len() + "AUTH PLAIN \r\n".len() <= 255 {
                    self.exchange(&Command::AuthPlain(Some(response))).await?
                } else {
                    let reply = self.exchange(&Command::AuthPlain(None)).await?;
                    if reply.status != Status::Continue {
                        return Err(refused(reply));
                    }
                    self.exchange(&Command::SaslResponse(response)).await?
                }
            }
        };
        match last.status {
            Status::Ok => {
                let pipelining = self.caps.as_ref().is_some_and(|c| c.pipelining);
                Ok(Session {
                    conn: self.conn,
                    pipelining,
                })
            }
            _ => Err(refused(last)),
        }
    }

    async fn exchange(&mut self, command: &Command) -> Result<Reply> {
        self.conn.send(std::slice::from_ref(command)).await?;
        self.conn.read_reply(command).await
    }
}

/// A reply as the outcome of its command: `-ERR` and a reply too large (read past, the
/// connection still in step) are that command's error; anything else breaks the connection.
fn reply_or_skip(command: &Command, reply: Result<Reply>) -> Result<Result<Reply>> {
    match reply {
        Ok(reply) => Ok(conn::expect_ok(command.verb(), reply)),
        Err(e @ Error::TooLarge { .. }) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// A logged-in connection in the TRANSACTION state. Message numbers are per session.
#[derive(Debug)]
pub struct Session<S> {
    conn: Connection<S>,
    pipelining: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// True if and only if the server offered PIPELINING (RFC 2449 §6.6), so [`Self::batch`]
    /// writes its commands back to back.
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// STAT: the number of messages and their total size in octets.
    pub async fn stat(&mut self) -> Result<(u32, u64)> {
        let reply = self.conn.command(&Command::Stat).await?;
        parse_stat(&reply.text).map_err(|source| Error::Parse {
            command: "STAT",
            source,
        })
    }

    /// LIST: the size of every message not marked deleted.
    pub async fn list(&mut self) -> Result<Vec<ListEntry>> {
        let reply = self.conn.command(&Command::List(None)).await?;
        parse_list(&reply.data).map_err(|source| Error::Parse {
            command: "LIST",
            source,
        })
    }

    /// LIST n: the size of one message. `-ERR no such message` is [`Error::Server`].
    pub async fn list_one(&mut self, msg: u32) -> Result<ListEntry> {
        let reply = self.conn.command(&Command::List(Some(msg))).await?;
        let entry = parse_list(&reply.text).map_err(|source| Error::Parse {
            command: "LIST",
            source,
        })?;
        entry.into_iter().next().ok_or(Error::Unexpected {
            command: "LIST",
            text: reply.text_lossy(),
        })
    }

    /// UIDL (optional in RFC 1939): the unique-id of every message not marked deleted.
    pub async fn uidl(&mut self) -> Result<Vec<UidlEntry>> {
        let reply = self.conn.command(&Command::Uidl(None)).await?;
        parse_uidl(&reply.data).map_err(|source| Error::Parse {
            command: "UIDL",
            source,
        })
    }

    /// RETR n: the whole message, dot-unstuffed, lines ending in CRLF.
    pub async fn retr(&mut self, msg: u32) -> Result<Vec<u8>> {
        Ok(self.conn.command(&Command::Retr(msg)).await?.data)
    }

    /// TOP n lines (optional in RFC 1939): the headers and the first `lines` body lines.
    pub async fn top(&mut self, msg: u32, lines: u32) -> Result<Vec<u8>> {
        Ok(self.conn.command(&Command::Top(msg, lines)).await?.data)
    }

    /// DELE n: marks a message deleted; the server removes it only at [`Self::quit`].
    pub async fn dele(&mut self, msg: u32) -> Result<()> {
        self.conn.command(&Command::Dele(msg)).await.map(drop)
    }

    /// NOOP: keeps the connection alive.
    pub async fn noop(&mut self) -> Result<()> {
        self.conn.command(&Command::Noop).await.map(drop)
    }

    /// RSET: unmarks every message marked deleted in this session.
    pub async fn rset(&mut self) -> Result<()> {
        self.conn.command(&Command::Rset).await.map(drop)
    }

    /// Runs `commands` and returns each one's outcome in order: `-ERR` to one command (or a
    /// reply too large, read past) is that command's error; a broken connection fails the whole
    /// batch. With PIPELINING the commands go out in one write, otherwise one round trip each.
    pub async fn batch(&mut self, commands: &[Command]) -> Result<Vec<Result<Reply>>> {
        let mut out = Vec::with_capacity(commands.len());
        self.batch_into(commands, &mut out).await?;
        Ok(out)
    }

    /// [`Self::batch`] into `out`; when the connection fails, `out` holds the outcomes read so
    /// far, so `out.len()` is the index of the command whose reply could not be read.
    pub async fn batch_into(
        &mut self,
        commands: &[Command],
        out: &mut Vec<Result<Reply>>,
    ) -> Result<()> {
        if self.pipelining {
            self.send_pipelined(commands).await?;
            return self.read_replies_into(commands, out).await;
        }
        for c in commands {
            self.conn.send(std::slice::from_ref(c)).await?;
            out.push(reply_or_skip(c, self.conn.read_reply(c).await)?);
        }
        Ok(())
    }

    /// The first half of a pipeline: writes `commands` in one write and returns without reading
    /// their replies, so the server works while the caller does. Only with PIPELINING.
    pub async fn send_pipelined(&mut self, commands: &[Command]) -> Result<()> {
        if !self.pipelining {
            return Err(Error::Unsupported("PIPELINING"));
        }
        self.conn.send(commands).await
    }

    /// The second half: reads the replies to `commands` (sent by [`Self::send_pipelined`]) in
    /// order, each `+OK` or that command's error.
    pub async fn read_replies(&mut self, commands: &[Command]) -> Result<Vec<Result<Reply>>> {
        let mut out = Vec::with_capacity(commands.len());
        self.read_replies_into(commands, &mut out).await?;
        Ok(out)
    }

    /// [`Self::read_replies`] into `out` (see [`Self::batch_into`] for what a failure leaves).
    pub async fn read_replies_into(
        &mut self,
        commands: &[Command],
        out: &mut Vec<Result<Reply>>,
    ) -> Result<()> {
        for c in commands {
            out.push(reply_or_skip(c, self.conn.read_reply(c).await)?);
        }
        Ok(())
    }

    /// Gives up on a session that may be out of step with the server (a reply that could not be
    /// read): writes `commands` (DELEs) and QUIT without reading their replies, then reads
    /// whatever comes until the server closes or `linger` passes. The server handles commands in
    /// order, so if it is still there, the deletions commit; nothing here can be trusted to say
    /// whether they did.
    pub async fn abandon(mut self, commands: &[Command], linger: std::time::Duration) {
        let mut all = commands.to_vec();
        all.push(Command::Quit);
        if self.conn.send(&all).await.is_ok() {
            self.conn.drain_to_eof(linger).await;
        }
    }

    /// QUIT: the server deletes the messages marked deleted and closes. Only a `+OK` here
    /// means the deletions happened.
    pub async fn quit(mut self) -> Result<()> {
        self.conn.command(&Command::Quit).await.map(drop)
    }
}
