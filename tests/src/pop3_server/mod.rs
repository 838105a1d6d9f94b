//! A small scriptable POP3 server (RFC 1939, with CAPA, UIDL, TOP, PIPELINING, APOP and SASL
//! PLAIN) serving Maildir folders, for the `pop3` source's tests and the demo where Dovecot is
//! not installed. It can inject faults: a connection cut mid-RETR, slow replies, a garbage or
//! `-ERR` answer to a command, refused logins, and the server going down and up again.
//!
//! ```no_run
//! # async fn demo() -> Result<(), alertbridge_testbed::pop3_server::ServerError> {
//! use alertbridge_testbed::pop3_server::{Faults, Pop3Server, ServerConfig};
//! let server = Pop3Server::start(ServerConfig::new().user("alerts", "secret", "/tmp/mail/alerts")).await?;
//! server.deliver("alerts", b"Subject: disk full\r\n\r\nDisk is full.\r\n")?;
//! server.set_faults(Faults { drop_in_retr: Some(1), ..Faults::default() }).await;
//! println!("POP3 at {}", server.addr());
//! server.stop().await;
//! # Ok(()) }
//! ```
//!
//! Like Dovecot: the UIDL is the file name before any `:2,` info; DELE only marks, QUIT removes
//! the files; a connection that ends without QUIT deletes nothing; one session per mailbox at a
//! time (a second login gets `-ERR [IN-USE]`).
//!
//! - `config.rs`: users and faults; `command.rs`: the command parser; `maildir.rs`: listing,
//!   delivery and the wire form of a mail.
//! - `state.rs`: locks, faults and counters shared by sessions; `listener.rs`: accept loop and
//!   up/down; `session.rs`: the AUTHORIZATION state; `mailbox.rs`: TRANSACTION and UPDATE.

mod command;
mod config;
mod listener;
mod mailbox;
mod maildir;
mod session;
mod state;

use std::{
    collections::HashSet,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::task::JoinHandle;

pub use self::{
    config::{
        BadReply, BadReplyKind, Faults, GARBAGE_LINE, INJECTED_ERR_LINE, ServerConfig, Tls,
        UserConfig, UserSpecError,
    },
    session::apop_digest,
    state::Counters,
};

/// Why the server could not start or a handle call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Listening failed.
    #[error("listen on {addr}")]
    Listen { addr: SocketAddr, source: io::Error },
    /// A Maildir could not be created, read or written.
    #[error("maildir {}", path.display())]
    Maildir { path: PathBuf, source: io::Error },
    /// No such user in the config.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// A user name given twice.
    #[error("user {0:?} is configured twice")]
    DuplicateUser(String),
}

/// Starts POP3 test servers.
#[derive(Debug)]
pub struct Pop3Server;

impl Pop3Server {
    /// Creates the users' Maildirs when missing, binds `config.listen` and serves on the
    /// current tokio runtime until [`Pop3Handle::stop`] or the handle is dropped. With the
    /// `down` fault set it binds (to learn the address) and closes again before returning.
    pub async fn start(config: ServerConfig) -> Result<Pop3Handle, ServerError> {
        let mut names = HashSet::new();
        for user in &config.users {
            if !names.insert(user.name.as_str()) {
                return Err(ServerError::DuplicateUser(user.name.clone()));
            }
            maildir::ensure(&user.maildir).map_err(|source| ServerError::Maildir {
                path: user.maildir.clone(),
                source,
            })?;
        }
        let listen_error = |source| ServerError::Listen {
            addr: config.listen,
            source,
        };
        let listener = listener::bind(config.listen).map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let config_down = config.faults.down;
        let shared = Arc::new(state::Shared::new(config.users, config.faults, config.tls));
        let task = tokio::spawn(listener::accept_loop(listener, addr, Arc::clone(&shared)));
        shared.settled().await;
        tracing::debug!(%addr, down = config_down, "POP3 test server started.");
        Ok(Pop3Handle {
            addr,
            shared,
            task: Some(task),
        })
    }
}

/// A running server. Dropping it stops the server (as [`Self::stop`] does, without waiting).
#[derive(Debug)]
pub struct Pop3Handle {
    addr: SocketAddr,
    shared: Arc<state::Shared>,
    task: Option<JoinHandle<()>>,
}

impl Pop3Handle {
    /// The address it listens on (the same while it is down and after it comes back).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The faults in force; used-up one-shot faults are gone from it.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the faults (restarting the `drop_in_retr` count) and applies `down`: returns
    /// once the listener is closed (open sessions are being cut) or bound again, so a connect
    /// right after is refused or accepted for sure. Should another process take the port
    /// while the server is down, this waits (the accept loop retries and logs a warning).
    pub async fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
        self.shared.settled().await;
    }

    /// Drops `raw` into `user`'s `new/` the Maildir way (written in `tmp/`, then renamed);
    /// returns its UIDL. Sessions already logged in do not see it (their listing is fixed at
    /// login, as with Dovecot).
    pub fn deliver(&self, user: &str, raw: &[u8]) -> Result<String, ServerError> {
        let dir = self.maildir(user)?;
        maildir::deliver(dir, raw).map_err(|source| ServerError::Maildir {
            path: dir.to_owned(),
            source,
        })
    }

    /// Mails in `user`'s mailbox (`new/` and `cur/`) right now.
    pub fn mailbox_len(&self, user: &str) -> Result<usize, ServerError> {
        let dir = self.maildir(user)?;
        maildir::count(dir).map_err(|source| ServerError::Maildir {
            path: dir.to_owned(),
            source,
        })
    }

    /// `user`'s Maildir folder.
    pub fn maildir(&self, user: &str) -> Result<&Path, ServerError> {
        self.shared
            .user(user)
            .map(|u| u.maildir.as_path())
            .ok_or_else(|| ServerError::UnknownUser(user.to_owned()))
    }

    /// What the server did so far.
    pub fn counters(&self) -> Counters {
        self.shared.counters()
    }

    /// Stops listening, cuts open sessions (they delete nothing) and waits for the accept loop.
    pub async fn stop(mut self) {
        self.shared.set_run(state::RunState::Stopped);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Pop3Handle {
    fn drop(&mut self) {
        self.shared.set_run(state::RunState::Stopped);
    }
}
