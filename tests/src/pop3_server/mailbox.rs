//! An open mailbox in the TRANSACTION state: the listing taken at login, the deletion marks,
//! the answers to STAT/LIST/UIDL/RETR/TOP/DELE/NOOP/RSET, and the UPDATE state on QUIT.

use std::{fmt::Write as _, fs, io};

use super::{
    command::Command,
    config::UserConfig,
    maildir::{self, StoredMail},
    state::{MailboxLock, Shared},
};

pub(super) struct Mailbox {
    mails: Vec<StoredMail>,
    deleted: Vec<bool>,
    _lock: MailboxLock,
}

/// What the session sends for a command.
pub(super) enum Answer {
    Reply(Vec<u8>),
    /// Send, then close: the session is over.
    Quit(Vec<u8>),
    /// A RETR reply; `cut` when the `drop_in_retr` fault fires on it.
    Retr {
        status: Vec<u8>,
        body: Vec<u8>,
        cut: bool,
    },
}

impl Mailbox {
    /// Lists the user's Maildir (the session's view until QUIT).
    pub(super) fn open(user: &UserConfig, lock: MailboxLock) -> io::Result<Self> {
        let mails = maildir::scan(&user.maildir)?;
        Ok(Self {
            deleted: vec![false; mails.len()],
            mails,
            _lock: lock,
        })
    }

    /// The index of message `n`, or the `-ERR` for it.
    fn get(&self, n: u32) -> Result<usize, Vec<u8>> {
        let i = (n as usize)
            .checked_sub(1)
            .filter(|&i| i < self.mails.len());
        match i {
            None => Err(format!("-ERR There's no message {n}.\r\n").into_bytes()),
            Some(i) if self.deleted[i] => Err(b"-ERR Message is deleted.\r\n".to_vec()),
            Some(i) => Ok(i),
        }
    }

    /// `(number, mail)` of every message not marked deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &StoredMail)> {
        self.mails
            .iter()
            .enumerate()
            .filter(|&(i, _)| !self.deleted[i])
            .map(|(i, m)| (i + 1, m))
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, Vec<u8>> {
        fs::read(&self.mails[i].path).map_err(|e| {
            format!("-ERR [SYS/TEMP] Cannot read message {}: {e}\r\n", i + 1).into_bytes()
        })
    }

    pub(super) fn answer(&mut self, command: Command, shared: &Shared) -> Answer {
        let reply = match command {
            Command::Stat => {
                let (n, size) = self
                    .live()
                    .fold((0, 0), |(n, size), (_, m)| (n + 1, size + m.size));
                format!("+OK {n} {size}\r\n").into_bytes()
            }
            Command::List(None) => {
                let mut reply = format!("+OK {} messages:\r\n", self.live().count());
                for (n, m) in self.live() {
                    let _ = write!(reply, "{n} {}\r\n", m.size);
                }
                reply.push_str(".\r\n");
                reply.into_bytes()
            }
            Command::Uidl(None) => {
                let mut reply = String::from("+OK\r\n");
                for (n, m) in self.live() {
                    let _ = write!(reply, "{n} {}\r\n", m.uidl);
                }
                reply.push_str(".\r\n");
                reply.into_bytes()
            }
            Command::List(Some(n)) => self.get(n).map_or_else(
                |e| e,
                |i| format!("+OK {n} {}\r\n", self.mails[i].size).into_bytes(),
            ),
            Command::Uidl(Some(n)) => self.get(n).map_or_else(
                |e| e,
                |i| format!("+OK {n} {}\r\n", self.mails[i].uidl).into_bytes(),
            ),
            Command::Retr(n) => {
                let retr = self.get(n).and_then(|i| Ok((i, self.read(i)?)));
                return match retr {
                    Err(e) => Answer::Reply(e),
                    Ok((i, raw)) => Answer::Retr {
                        status: format!("+OK {} octets\r\n", self.mails[i].size).into_bytes(),
                        body: maildir::retr_body(&raw),
                        cut: shared.retr_should_drop(),
                    },
                };
            }
            Command::Top(n, k) => match self.get(n).and_then(|i| self.read(i)) {
                Err(e) => e,
                Ok(raw) => [&b"+OK\r\n"[..], &maildir::top_body(&raw, k)].concat(),
            },
            Command::Dele(n) => match self.get(n) {
                Err(e) => e,
                Ok(i) => {
                    self.deleted[i] = true;
                    b"+OK Marked to be deleted.\r\n".to_vec()
                }
            },
            Command::Noop => b"+OK\r\n".to_vec(),
            Command::Rset => {
                self.deleted.fill(false);
                format!("+OK {} messages.\r\n", self.mails.len()).into_bytes()
            }
            Command::Quit => return Answer::Quit(self.update(shared)),
            Command::User(_) | Command::Pass(_) | Command::Apop { .. } | Command::Auth { .. } => {
                b"-ERR Already logged in.\r\n".to_vec()
            }
            // The session answers CAPA itself; STLS is only allowed before login (RFC 2595).
            Command::Stls => b"-ERR STLS is not allowed after login.\r\n".to_vec(),
            Command::Capa => b"-ERR Not allowed here.\r\n".to_vec(),
        };
        Answer::Reply(reply)
    }

    /// The UPDATE state: removes the marked files; the reply to QUIT.
    fn update(&mut self, shared: &Shared) -> Vec<u8> {
        let mut removed = 0;
        let mut failed = 0;
        for (mail, _) in self.mails.iter().zip(&self.deleted).filter(|(_, d)| **d) {
            match fs::remove_file(&mail.path) {
                Ok(()) => removed += 1,
                // Someone else removed it already: it is gone either way.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %mail.path.display(), error = %e, "POP3 test server could not delete a mail.");
                    failed += 1;
                }
            }
        }
        shared.count(|c| c.deleted += removed);
        self.deleted.fill(false);
        match (failed, removed) {
            (0, 0) => b"+OK Logging out.\r\n".to_vec(),
            (0, _) => b"+OK Logging out, messages deleted.\r\n".to_vec(),
            _ => b"-ERR [SYS/TEMP] Some deleted messages were not removed.\r\n".to_vec(),
        }
    }
}
