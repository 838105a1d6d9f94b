//! One POP3 session over one connection (RFC 1939): AUTHORIZATION (USER/PASS, APOP, AUTH
//! PLAIN, STLS) → TRANSACTION → UPDATE on QUIT, with the faults applied to each reply.

use std::{io, sync::Arc};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use tokio::{
    io::{
        AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _,
        BufReader, ReadHalf, WriteHalf,
    },
    net::TcpStream,
};
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::{
    command::{self, Command, ParseError},
    config::{BadReplyKind, GARBAGE_LINE, INJECTED_ERR_LINE, Tls, UserConfig},
    mailbox::{Answer, Mailbox},
    state::{RunState, Shared},
};

/// Longest command line accepted (RFC 2449 allows 255 octets; SASL responses may be longer).
const MAX_LINE: usize = 8192;

const CAPA: &str = "+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN\r\n";
const AUTH_FAILED: &[u8] = b"-ERR [AUTH] Authentication failed.\r\n";

/// A plain or TLS connection.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
type BoxedStream = Box<dyn Stream>;

/// Serves one connection until QUIT, the client leaves, or the server goes down.
pub(super) async fn serve(tcp: TcpStream, shared: Arc<Shared>) {
    let peer = tcp.peer_addr().ok();
    let mut run = shared.run_state();
    let end = tokio::select! {
        // The session (and with it the mailbox lock) is gone once this future is.
        end = connect(tcp, Arc::clone(&shared)) => end,
        _ = run.wait_for(|s| *s != RunState::Up) => Ok(End::Cut),
    };
    shared.count(|c| {
        c.ended += 1;
        c.cut += u64::from(matches!(end, Ok(End::Cut)));
    });
    debug!(peer = ?peer, end = ?end, "POP3 test session ended.");
}

/// The TLS handshake of implicit TLS, then the session.
async fn connect(tcp: TcpStream, shared: Arc<Shared>) -> io::Result<End> {
    let (stream, tls_active): (BoxedStream, bool) = match shared.tls() {
        Some(Tls::Implicit(config)) => {
            let tls = TlsAcceptor::from(Arc::clone(config)).accept(tcp).await?;
            (Box::new(tls), true)
        }
        Some(Tls::Stls(_)) | None => (Box::new(tcp), false),
    };
    let (read, writer) = tokio::io::split(stream);
    let mut session = Session {
        timestamp: shared.apop_timestamp(),
        shared,
        reader: BufReader::new(read),
        writer,
        tls_active,
        mailbox: None,
        pending_user: None,
    };
    session.run().await
}

#[derive(Debug)]
enum End {
    Quit,
    /// The client left without QUIT: nothing is deleted.
    Dropped,
    /// The server cut the connection (a fault): nothing is deleted.
    Cut,
}

/// One line from the client.
enum Line {
    /// With its line end.
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE`]; skipped.
    TooLong,
}

enum Flow {
    Continue,
    End(End),
}

struct Session {
    shared: Arc<Shared>,
    timestamp: String,
    reader: BufReader<ReadHalf<BoxedStream>>,
    writer: WriteHalf<BoxedStream>,
    tls_active: bool,
    /// `Some` in the TRANSACTION state.
    mailbox: Option<Mailbox>,
    /// The name from USER, waiting for PASS.
    pending_user: Option<String>,
}

impl Session {
    async fn run(&mut self) -> io::Result<End> {
        let greeting = format!(
            "+OK alertbridge test POP3 server ready {}\r\n",
            self.timestamp
        );
        self.send(greeting.as_bytes()).await?;
        loop {
            let Some(line) = self.read_line().await? else {
                return Ok(End::Dropped);
            };
            if let Flow::End(end) = self.handle(line).await? {
                return Ok(end);
            }
        }
    }

    /// The next line; `None` when the client closed (mid-line too).
    async fn read_line(&mut self) -> io::Result<Option<Line>> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if line.ends_with(b"\n") {
            return Ok(Some(Line::Text(line)));
        }
        if line.len() < MAX_LINE {
            return Ok(None);
        }
        // Too long: skip to the end of the line.
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Ok(None);
            }
            if line.ends_with(b"\n") {
                return Ok(Some(Line::TooLong));
            }
        }
    }

    /// Waits the configured delay, then writes one whole reply.
    async fn send(&mut self, reply: &[u8]) -> io::Result<()> {
        let delay = self.shared.reply_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.writer.write_all(reply).await?;
        self.writer.flush().await
    }

    async fn handle(&mut self, line: Line) -> io::Result<Flow> {
        let parsed = match line {
            Line::Text(line) => command::parse(&line),
            Line::TooLong => Err(ParseError::Unknown("(line too long)".to_owned())),
        };
        let command = match parsed {
            Ok(command) => command,
            Err(ParseError::Unknown(verb)) => {
                self.send(format!("-ERR Unknown command: {verb}\r\n").as_bytes())
                    .await?;
                return Ok(Flow::Continue);
            }
            Err(ParseError::BadArguments(verb)) => {
                self.send(format!("-ERR Invalid arguments to {verb}.\r\n").as_bytes())
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        if let Some(kind) = self.shared.take_bad_reply(command.verb()) {
            let line = match kind {
                BadReplyKind::Garbage => GARBAGE_LINE,
                BadReplyKind::Err => INJECTED_ERR_LINE,
            };
            self.send(line).await?;
            return Ok(Flow::Continue);
        }
        if matches!(command, Command::Capa) {
            let stls = if self.stls_offered() { "STLS\r\n" } else { "" };
            self.send(format!("{CAPA}{stls}.\r\n").as_bytes()).await?;
            return Ok(Flow::Continue);
        }
        if matches!(command, Command::Stls) && self.mailbox.is_none() {
            return self.stls().await;
        }
        match self.mailbox.as_mut() {
            None => self.authorization(command).await,
            Some(mailbox) => match mailbox.answer(command, &self.shared) {
                Answer::Reply(reply) => {
                    self.send(&reply).await?;
                    Ok(Flow::Continue)
                }
                Answer::Quit(reply) => {
                    self.send(&reply).await?;
                    self.mailbox = None;
                    Ok(Flow::End(End::Quit))
                }
                Answer::Retr { status, body, cut } => self.retr(&status, &body, cut).await,
            },
        }
    }

    /// Sends a RETR reply, or (the `drop_in_retr` fault) its first half and closes.
    async fn retr(&mut self, status: &[u8], body: &[u8], cut: bool) -> io::Result<Flow> {
        if !cut {
            let mut reply = status.to_vec();
            reply.extend_from_slice(body);
            self.send(&reply).await?;
            return Ok(Flow::Continue);
        }
        let mut partial = status.to_vec();
        partial.extend_from_slice(&body[..body.len() / 2]);
        self.send(&partial).await?;
        Ok(Flow::End(End::Cut))
    }

    /// Whether STLS may be used now (configured, not yet active, not logged in).
    fn stls_offered(&self) -> bool {
        matches!(self.shared.tls(), Some(Tls::Stls(_)))
            && !self.tls_active
            && self.mailbox.is_none()
    }

    /// STLS (RFC 2595 §4): `+OK`, then the TLS handshake on the same connection.
    async fn stls(&mut self) -> io::Result<Flow> {
        let config = match self.shared.tls() {
            Some(Tls::Stls(config)) if !self.tls_active => Arc::clone(config),
            Some(_) => {
                self.send(b"-ERR TLS is already active.\r\n").await?;
                return Ok(Flow::Continue);
            }
            None => {
                self.send(b"-ERR TLS is not configured.\r\n").await?;
                return Ok(Flow::Continue);
            }
        };
        self.send(b"+OK Begin TLS negotiation now.\r\n").await?;
        if !self.reader.buffer().is_empty() {
            // Commands pipelined after STLS would be plain text injected into the TLS session.
            return Ok(Flow::End(End::Dropped));
        }
        // Put the halves back together (the placeholders are never used), then hand the
        // connection to TLS.
        let (placeholder, _) = tokio::io::duplex(1);
        let (read, write) = tokio::io::split(Box::new(placeholder) as BoxedStream);
        let reader = std::mem::replace(&mut self.reader, BufReader::new(read)).into_inner();
        let writer = std::mem::replace(&mut self.writer, write);
        let tls = TlsAcceptor::from(config)
            .accept(reader.unsplit(writer))
            .await?;
        let (read, writer) = tokio::io::split(Box::new(tls) as BoxedStream);
        self.reader = BufReader::new(read);
        self.writer = writer;
        self.tls_active = true;
        self.pending_user = None;
        Ok(Flow::Continue)
    }

    async fn authorization(&mut self, command: Command) -> io::Result<Flow> {
        let pending = self.pending_user.take();
        let reply: Vec<u8> = match command {
            Command::User(name) => {
                self.pending_user = Some(name);
                b"+OK\r\n".to_vec()
            }
            Command::Pass(password) => match pending {
                Some(name) => self.open(&name, |u| u.password == password),
                None => b"-ERR No username given.\r\n".to_vec(),
            },
            Command::Apop { user, digest } => {
                let timestamp = self.timestamp.clone();
                self.open(&user, |u| {
                    apop_digest(&timestamp, &u.password).eq_ignore_ascii_case(&digest)
                })
            }
            Command::Auth {
                mechanism: None, ..
            } => b"+OK\r\nPLAIN\r\n.\r\n".to_vec(),
            Command::Auth {
                mechanism: Some(m), ..
            } if m != "PLAIN" => b"-ERR Unsupported authentication mechanism.\r\n".to_vec(),
            Command::Auth { initial, .. } => {
                let response = match initial {
                    Some(initial) => initial,
                    None => {
                        self.send(b"+ \r\n").await?;
                        match self.read_line().await? {
                            None => return Ok(Flow::End(End::Dropped)),
                            Some(Line::Text(line)) => {
                                String::from_utf8_lossy(command::trim_line_end(&line)).into_owned()
                            }
                            Some(Line::TooLong) => String::new(),
                        }
                    }
                };
                match sasl_plain(&response) {
                    Err(reply) => reply.to_vec(),
                    Ok((name, password)) => self.open(&name, |u| u.password == password),
                }
            }
            Command::Quit => {
                self.send(b"+OK Logging out.\r\n").await?;
                return Ok(Flow::End(End::Quit));
            }
            Command::Noop => b"-ERR Not logged in.\r\n".to_vec(),
            other => format!("-ERR {} is not allowed before login.\r\n", other.verb()).into_bytes(),
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// Checks the credentials, locks and lists the mailbox: the reply to a login command.
    fn open(&mut self, name: &str, password_ok: impl FnOnce(&UserConfig) -> bool) -> Vec<u8> {
        let shared = Arc::clone(&self.shared);
        let user = shared
            .user(name)
            .filter(|u| password_ok(u) && !shared.refuse_logins());
        let Some(user) = user else {
            shared.count(|c| c.refused_logins += 1);
            return AUTH_FAILED.to_vec();
        };
        let Some(lock) = shared.lock_mailbox(name) else {
            shared.count(|c| c.refused_logins += 1);
            return b"-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n".to_vec();
        };
        match Mailbox::open(user, lock) {
            Ok(mailbox) => {
                self.mailbox = Some(mailbox);
                shared.count(|c| c.logins += 1);
                b"+OK Logged in.\r\n".to_vec()
            }
            Err(e) => format!("-ERR [SYS/TEMP] Cannot open the mailbox: {e}\r\n").into_bytes(),
        }
    }
}

/// The APOP digest: MD5 of the greeting's timestamp followed by the password, in lower-case hex.
pub fn apop_digest(timestamp: &str, password: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(password.as_bytes());
    format!("{:x}", md5.finalize())
}

/// Decodes a SASL PLAIN response (RFC 4616) into user and password, or the reply refusing it.
fn sasl_plain(response: &str) -> Result<(String, String), &'static [u8]> {
    if response == "*" {
        return Err(b"-ERR Authentication aborted.\r\n");
    }
    let decoded = if response == "=" {
        Vec::new()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(response)
            .map_err(|_| &b"-ERR Invalid base64 data.\r\n"[..])?
    };
    let parts: Vec<&[u8]> = decoded.split(|&b| b == 0).collect();
    let [authz, authc, password] = parts.as_slice() else {
        return Err(AUTH_FAILED);
    };
    if !authz.is_empty() && authz != authc {
        return Err(AUTH_FAILED);
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| AUTH_FAILED);
    Ok((text(authc)?, text(password)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apop_digest_matches_rfc_1939() {
        let stamp = "<1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(
            apop_digest(stamp, "tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }

    #[test]
    fn sasl_plain_responses_decode_or_are_refused() {
        assert_eq!(
            sasl_plain("AGFsZXJ0cwBhbGVydHBhc3M="),
            Ok(("alerts".into(), "alertpass".into()))
        );
        assert_eq!(
            sasl_plain("YWxlcnRzAGFsZXJ0cwBwdw=="),
            Ok(("alerts".into(), "pw".into()))
        );
        assert_eq!(
            sasl_plain("*"),
            Err(&b"-ERR Authentication aborted.\r\n"[..])
        );
        assert_eq!(sasl_plain("!!"), Err(&b"-ERR Invalid base64 data.\r\n"[..]));
        assert_eq!(sasl_plain("="), Err(AUTH_FAILED));
        // authzid "bob" acting as "alerts" is not allowed.
        assert_eq!(sasl_plain("Ym9iAGFsZXJ0cwBwdw=="), Err(AUTH_FAILED));
    }
}
