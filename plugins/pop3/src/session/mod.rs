//! One poll: connect, log in, look at the mailbox (STAT, UIDL, LIST), fetch new mail in
//! pipelined batches (the next batch is requested before this one is submitted, and DELEs
//! travel with the RETRs that follow them), hand each batch's alerts to the host together
//! without waiting for the batches before it (at most [`SUBMITS_IN_FLIGHT`] await receipts,
//! settled in order), mark DELE only after each alert's receipt, and QUIT so the deletions commit.
//!
//! In a backlog (PIPELINING, no keep mode) the next session logs in while this one works, and
//! this one's DELEs and QUIT complete in the background while the next one fetches. The next
//! session's view is taken at its login, so it leaves out every mail this one took (and the one
//! before's, if that one's QUIT was still running); if a QUIT fails, its mails come back in a
//! later session and their alerts are duplicates (deleted all the same). A server that refuses
//! the early login gets the usual login after QUIT.
//!
//! Dispositions: an accepted alert's mail is deleted (keep mode: its UIDL is recorded instead);
//! mail from a sender not accepted stays on the server (unless `on_disallowed = "delete"`) and
//! is not fetched again by this instance; a transient refusal ends the session (the mail stays
//! and is retried after backoff). A mail that cannot be read well still becomes an alert,
//! labelled `mail.problem`. Oversize mail, mail the host refused for good and mail that failed to
//! be fetched `max_fetch_attempts` times is quarantined ([`crate::quarantine`]).
//!
//! One mail never ends a session: `-ERR` or a reply too large (read past) fails only its RETR.
//! When the connection itself fails mid-session, the DELEs decided so far and QUIT are still
//! written ([`Session::abandon`]), so the deletions before the failure commit if the server is
//! still there; the failure counts against the mail that was being read.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

mod fate;
mod listing;

use alertbridge_plugin_api::{Alert, PluginError, Receipt, error_chain, kit::SourceContext};
use futures_util::future::join_all;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    client::{Io, Session, connect},
    config::Settings,
    counters::Counters,
    error::Error,
    protocol::{Command, ListEntry, Reply},
    quarantine::{Due, Memory},
    state::{SeenUids, StateError},
};

/// Mails fetched per pipelined round trip, at most.
const PIPELINE_BATCH: usize = 64;
/// Bytes (by LIST size) fetched per pipelined round trip, at most (but always one mail): bounds
/// the memory a batch of large mails takes.
const PIPELINE_BATCH_BYTES: u64 = 4 << 20;
/// Batches whose alerts are with the host awaiting receipts while the next one is fetched, at
/// most: the host's commit latency stays off the fetch path.
const SUBMITS_IN_FLIGHT: usize = 3;

type Pop3Session = Session<Box<dyn Io>>;

/// How a session ended.
pub enum Outcome {
    /// Everything there was is handled.
    Done,
    /// The session limit was reached: more mail is waiting, maybe in a session logged in already.
    More(Option<Box<Ahead>>),
}

/// The next session, logged in while the one before it worked, with its listing taken at login.
pub struct Ahead {
    session: Pop3Session,
    listing: Listing,
    beyond: bool,
    /// UIDLs the sessions before took: maybe still listed here, but not this session's to fetch.
    excluded: HashSet<String>,
    /// The session before, closing.
    before: Closing,
}

impl Ahead {
    /// Lets the session before finish its QUIT and logs this one out without touching anything
    /// (shutdown): the host's runtime stops after `run` returns.
    pub async fn close(self) {
        let _ = self.before.task.await;
        let _ = self.session.quit().await;
    }
}

/// A session whose DELEs and QUIT run in the background, and the mails it took.
struct Closing {
    task: JoinHandle<()>,
    taken: HashSet<String>,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Pop3(#[from] Error),
    /// The host did not take an alert right now.
    #[error("host refused the alert")]
    Host(#[source] PluginError),
    #[error(transparent)]
    State(#[from] StateError),
}

impl SessionError {
    /// The wait the host asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Host(e) => e.retry_after,
            _ => None,
        }
    }
}

/// Sizes and unique-ids of (some of) the messages.
struct Listing {
    uids: Option<HashMap<u32, String>>,
    sizes: Vec<ListEntry>,
    /// Every message is listed (not only a backlog's first window).
    complete: bool,
}

/// A message to fetch.
#[derive(Debug)]
struct Candidate {
    msg: u32,
    uid: Option<String>,
    size: u64,
    /// Quarantined: only its headers are fetched (if they can be), for the problem alert.
    quarantine: Option<Due>,
}

impl Candidate {
    /// The command that fetches what this mail needs: RETR; for a quarantined mail `TOP n 0`,
    /// or NOOP when reading its headers broke a connection before (keeping replies in order).
    fn fetch(&self) -> Command {
        match &self.quarantine {
            None => Command::Retr(self.msg),
            Some(q) if q.headers => Command::Top(self.msg, 0),
            Some(_) => Command::Noop,
        }
    }

    /// Bytes its fetch brings, about.
    fn fetch_size(&self) -> u64 {
        if self.quarantine.is_some() {
            4 << 10
        } else {
            self.size
        }
    }
}

/// A fetched mail, ready for the host or already decided.
enum Prepared {
    Done(Disposition),
    Submit(Alert),
}

/// What to do with a fetched mail.
enum Disposition {
    Delete,
    /// Leave it on the server; not fetched again by this instance.
    Keep,
    /// Leave it on the server; it is quarantined at the next session.
    Retry,
    /// Quarantined (its problem alert is queued, or it has none: a sender not accepted):
    /// remembered as quarantined, and deleted if `delete`.
    Quarantine {
        delete: bool,
    },
}

/// A batch whose alerts are with the host.
struct Submitted<'c> {
    /// Each fetched mail with its fate if already decided (`None`: its alert was submitted).
    mails: Vec<(&'c Candidate, Option<Disposition>)>,
    /// The host's answers, in the order of the submitted mails.
    receipts: JoinHandle<Vec<Result<Receipt, PluginError>>>,
}

/// What a session decided so far.
#[derive(Default)]
struct Tally {
    /// Messages to DELE, not sent yet.
    deletes: Vec<u32>,
    /// Mails settled.
    handled: usize,
    /// The first transient refusal: the session ends (after the DELEs).
    host_error: Option<PluginError>,
    /// Why the session broke off (the connection failed or the state could not be written):
    /// the DELEs are written blindly before QUIT.
    error: Option<SessionError>,
}

/// What the sessions of one instance work with, handed down by the source: its settings and
/// the counters it reports. A session never reaches back into the source.
#[derive(Debug, Clone, Copy)]
pub struct Poller<'s> {
    pub settings: &'s Settings,
    pub counters: &'s Arc<Counters>,
}

impl Poller<'_> {
    /// Runs one session, on `ahead` if the last session logged it in. `seen` is the keep-mode
    /// state; `memory` what this instance knows of mails it left aside or that failed.
    pub(crate) async fn session(
        &self,
        ctx: &SourceContext,
        mut seen: Option<&mut SeenUids>,
        memory: &mut Memory,
        ahead: Option<Box<Ahead>>,
    ) -> Result<Outcome, SessionError> {
        let s = self.settings;
        let (mut session, listing, beyond, excluded, before) = match ahead.map(|a| *a) {
            Some(a) => (a.session, a.listing, a.beyond, a.excluded, Some(a.before)),
            None => {
                // Nothing is marked yet: giving up here on shutdown loses nothing.
                let mut session = tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(Outcome::Done),
                    r = self.login() => r?,
                };
                let (listing, beyond) = self.listing(&mut session, memory.left_aside()).await?;
                (session, listing, beyond, HashSet::new(), None)
            }
        };
        let mut candidates = self.select(listing, seen.as_deref_mut(), memory, &excluded)?;
        let max = s.max_messages_per_session as usize;
        let more = beyond || candidates.len() > max;
        candidates.truncate(max);
        // The next session has to leave out every mail this one takes: each needs a UIDL.
        let overlap = more
            && !s.keep
            && session.pipelining()
            && !candidates.is_empty()
            && candidates.iter().all(|c| c.uid.is_some());
        if !overlap {
            let tally = self
                .drain(ctx, &mut session, &candidates, seen, memory)
                .await;
            if let Some(before) = before {
                let _ = before.task.await;
            }
            self.finish(session, tally).await?;
            return Ok(if more {
                Outcome::More(None)
            } else {
                Outcome::Done
            });
        }
        let taken: HashSet<String> = candidates.iter().filter_map(|c| c.uid.clone()).collect();
        // The session before may not have QUIT yet: then the next one sees its mails too.
        let excluded = match &before {
            Some(b) if !b.task.is_finished() => taken.union(&b.taken).cloned().collect(),
            _ => taken.clone(),
        };
        let extra = excluded.len() + memory.left_aside();
        let (tally, next) = tokio::join!(
            self.drain(ctx, &mut session, &candidates, seen, memory),
            self.log_in_ahead(ctx, extra),
        );
        if let Some(before) = before {
            let _ = before.task.await;
        }
        let failed = tally.host_error.is_some() || tally.error.is_some();
        let (next, listing, beyond) = match next {
            Some(next) if !failed => next,
            next => {
                // Nothing was taken in the session ahead: it only logs out.
                if let Some((next, ..)) = next {
                    let _ = next.quit().await;
                }
                self.finish(session, tally).await?;
                return Ok(Outcome::More(None));
            }
        };
        // The next session fetches while this one's DELEs and QUIT complete.
        let mailbox = s.mailbox.clone();
        let counters = Arc::clone(self.counters);
        let task = tokio::spawn(async move {
            match close(session, tally.deletes, &mailbox).await {
                Ok(()) => {
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    warn!(mailbox, error = %error_chain(&e),
                        "QUIT failed; this session's mails come back and their alerts are dropped as duplicates.");
                }
            }
        });
        debug!(mailbox = %s.mailbox, excluded = excluded.len(), "Next session ready.");
        Ok(Outcome::More(Some(Box::new(Ahead {
            session: next,
            listing,
            beyond,
            excluded,
            before: Closing { task, taken },
        }))))
    }

    /// Fetches, submits and settles `candidates`; returns the DELEs still to send, and why the
    /// session has to end (a transient host refusal, a failed connection).
    async fn drain(
        &self,
        ctx: &SourceContext,
        session: &mut Pop3Session,
        candidates: &[Candidate],
        mut seen: Option<&mut SeenUids>,
        memory: &mut Memory,
    ) -> Tally {
        let s = self.settings;
        let mut tally = Tally::default();
        let mut submitted: VecDeque<Submitted<'_>> = VecDeque::new();
        let fetched = self
            .fetch_all(
                ctx,
                session,
                candidates,
                seen.as_deref_mut(),
                memory,
                &mut tally,
                &mut submitted,
            )
            .await;
        // The alerts still awaiting receipts are with the host: their answers decide (also
        // when the connection failed: their DELEs are still worth sending).
        let mut settled = Ok(());
        while let Some(batch) = submitted.pop_front() {
            let r = self
                .settle_batch(batch, seen.as_deref_mut(), memory, &mut tally)
                .await;
            settled = settled.and(r);
        }
        if let Err(e) = fetched.and(settled.map_err(SessionError::from)) {
            tally.error = Some(e);
        }
        if tally.handled > 0 {
            info!(mailbox = %s.mailbox, handled = tally.handled, deleted = !s.keep, "Drained.");
        }
        tally
    }

    /// The fetch loop of [`Self::drain`]: batches out, alerts to the host, settled batches in.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_all<'c>(
        &self,
        ctx: &SourceContext,
        session: &mut Pop3Session,
        candidates: &'c [Candidate],
        mut seen: Option<&mut SeenUids>,
        memory: &mut Memory,
        tally: &mut Tally,
        submitted: &mut VecDeque<Submitted<'c>>,
    ) -> Result<(), SessionError> {
        let s = self.settings;
        let pipelining = session.pipelining();
        let chunks = if pipelining {
            batches(candidates)
        } else {
            candidates.chunks(1).collect()
        };
        // With PIPELINING the next batch is already requested while this one is submitted.
        let mut in_flight: Option<(Vec<Command>, usize)> = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let (commands, replies, broken) = match in_flight.take() {
                Some(sent) => {
                    let (replies, broken) = read_fetch(session, &sent, chunk, memory, true).await;
                    (sent, replies, broken)
                }
                None => {
                    if ctx.shutdown.is_cancelled() {
                        break;
                    }
                    let commands = fetch_commands(&mut tally.deletes, chunk);
                    let (replies, broken) =
                        read_fetch(session, &commands, chunk, memory, false).await;
                    (commands, replies, broken)
                }
            };
            let mut replies = replies.into_iter();
            check_deletes(&s.mailbox, replies.by_ref().take(commands.1));
            if broken.is_none()
                && pipelining
                && !ctx.shutdown.is_cancelled()
                && let Some(next) = chunks.get(i + 1)
            {
                let next = fetch_commands(&mut tally.deletes, next);
                if let Err(e) = session.send_pipelined(&next.0).await {
                    // Those DELEs may not have gone out: they are written again on the way out.
                    tally.deletes.extend(next.0.iter().filter_map(|c| match c {
                        Command::Dele(n) => Some(*n),
                        _ => None,
                    }));
                    return Err(e.into());
                }
                in_flight = Some(next);
            }
            let mut prepared = Vec::with_capacity(chunk.len());
            for (candidate, reply) in chunk.iter().zip(replies) {
                match (reply, &candidate.quarantine) {
                    (Ok(reply), None) => {
                        prepared.push((candidate, self.prepare(candidate, &reply.data)));
                    }
                    (Ok(reply), Some(q)) => {
                        let headers = if q.headers { &reply.data[..] } else { &[] };
                        prepared.push((candidate, self.prepare(candidate, headers)));
                    }
                    // TOP refused or too large: the problem alert goes without headers.
                    (Err(_), Some(_)) => prepared.push((candidate, self.prepare(candidate, &[]))),
                    (Err(e), None) => self.fetch_failed(candidate, &e, memory),
                }
            }
            // Shut down before this batch's submits: its mails stay on the server.
            if ctx.shutdown.is_cancelled() {
                break;
            }
            submitted.push_back(submit(ctx, prepared));
            // The connection failed in this batch: the mails read before go to the host (their
            // DELEs are written on the way out), the rest wait for the next session.
            if let Some(e) = broken {
                return Err(e);
            }
            // Let the submit task hand the alerts over now, before this task reads on.
            tokio::task::yield_now().await;
            // Settle the batches answered already, and wait while too many are out.
            while let Some(oldest) = submitted.front()
                && (submitted.len() > SUBMITS_IN_FLIGHT || oldest.receipts.is_finished())
                && let Some(batch) = submitted.pop_front()
            {
                self.settle_batch(batch, seen.as_deref_mut(), memory, tally)
                    .await?;
            }
            if tally.host_error.is_some() {
                break;
            }
        }
        // A prefetch nobody handled: its DELEs count, its mails stay on the server.
        if let Some((sent, n_dele)) = in_flight.take() {
            let replies = session.read_replies(&sent).await?;
            check_deletes(&s.mailbox, replies.into_iter().take(n_dele));
        }
        Ok(())
    }

    /// A RETR failed on its own (`-ERR`, a reply too large): the mail counts a failure (at
    /// once enough for quarantine when it would fail the same way again) and is skipped for
    /// this session.
    fn fetch_failed(&self, candidate: &Candidate, e: &Error, memory: &mut Memory) {
        let s = self.settings;
        let Some(uid) = &candidate.uid else {
            warn!(mailbox = %s.mailbox, msg = candidate.msg, error = %e, "RETR failed (no UIDL to remember the mail by); skipping it for now.");
            return;
        };
        let lasting = matches!(e, Error::TooLarge { .. }) || !e.is_transient();
        let due = memory.failed(uid, &e.to_string(), lasting);
        warn!(mailbox = %s.mailbox, msg = candidate.msg, uid, error = %e, failures = memory.failures(uid), quarantine_next = due,
            "RETR failed; skipping this mail for now.");
    }

    /// Closes the session (DELEs, QUIT); a transient host refusal ends it as an error, after
    /// the mails taken before it are deleted all the same.
    async fn finish(&self, session: Pop3Session, tally: Tally) -> Result<(), SessionError> {
        if let Some(e) = tally.error {
            let commands: Vec<Command> = tally.deletes.iter().copied().map(Command::Dele).collect();
            warn!(mailbox = %self.settings.mailbox, error = %error_chain(&e), deletes = commands.len(),
                "Session failed; writing its DELEs and QUIT so the mails taken so far are deleted.");
            session
                .abandon(&commands, self.settings.endpoint.timeouts.io)
                .await;
            return Err(e);
        }
        close(session, tally.deletes, &self.settings.mailbox).await?;
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        match tally.host_error {
            Some(e) => Err(SessionError::Host(e)),
            None => Ok(()),
        }
    }

    /// Waits for a batch's receipts and settles its mails in order.
    async fn settle_batch(
        &self,
        batch: Submitted<'_>,
        mut seen: Option<&mut SeenUids>,
        memory: &mut Memory,
        tally: &mut Tally,
    ) -> Result<(), StateError> {
        let s = self.settings;
        let mut answers = match batch.receipts.await {
            Ok(answers) => answers.into_iter(),
            // The submit task did not finish (the runtime is stopping): the batch stays.
            Err(e) => {
                tally.host_error.get_or_insert(PluginError::transient(&e));
                return Ok(());
            }
        };
        for (candidate, decided) in batch.mails {
            let disposition = match decided {
                Some(d) => Ok(d),
                None => match answers.next() {
                    Some(answer) => self.settle(candidate, answer, memory),
                    None => continue,
                },
            };
            match disposition {
                Ok(Disposition::Delete) if s.keep => {
                    if let (Some(seen), Some(uid)) = (seen.as_deref_mut(), &candidate.uid) {
                        seen.insert(uid)?;
                    }
                }
                Ok(Disposition::Delete) => tally.deletes.push(candidate.msg),
                Ok(Disposition::Keep) => {
                    memory.skipped.extend(candidate.uid.clone());
                }
                Ok(Disposition::Retry) => {}
                Ok(Disposition::Quarantine { delete }) => {
                    if let Some(uid) = &candidate.uid {
                        memory.quarantine(uid)?;
                        self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
                    }
                    if delete && !s.keep {
                        tally.deletes.push(candidate.msg);
                    }
                }
                Err(e) => {
                    // Later mails of the batch may have been taken: settle them all.
                    tally.host_error.get_or_insert(e);
                    continue;
                }
            }
            tally.handled += 1;
        }
        Ok(())
    }

    /// Logs the next session in and lists its mailbox (`extra` messages beyond the usual
    /// window: those the sessions before took). Any failure (a server that locks the maildrop
    /// refuses a second login) only means the next session logs in the usual way.
    async fn log_in_ahead(
        &self,
        ctx: &SourceContext,
        extra: usize,
    ) -> Option<(Pop3Session, Listing, bool)> {
        let mailbox = self.settings.mailbox.as_str();
        debug!(mailbox, "Logging in ahead.");
        let attempt = async {
            let mut session = self.login().await?;
            let (listing, beyond) = self.listing(&mut session, extra).await?;
            Ok::<_, SessionError>((session, listing, beyond))
        };
        let result = tokio::select! {
            () = ctx.shutdown.cancelled() => return None,
            r = attempt => r,
        };
        result
            .inspect_err(|e| {
                debug!(mailbox, error = %error_chain(e), "Early login refused; logging in after QUIT.");
            })
            .ok()
    }

    async fn login(&self) -> Result<Pop3Session, Error> {
        let s = self.settings;
        let client = connect(&s.endpoint).await?;
        let method = s.auth.unwrap_or_else(|| client.best_auth());
        debug!(mailbox = %s.mailbox, ?method, "Logging in.");
        client.login(method, &s.username, s.password.expose()).await
    }
}

/// Hands a batch's alerts to the host, together (so it can queue them in one durable write).
fn submit<'c>(ctx: &SourceContext, prepared: Vec<(&'c Candidate, Prepared)>) -> Submitted<'c> {
    let mut alerts = Vec::with_capacity(prepared.len());
    let mails = prepared
        .into_iter()
        .map(|(candidate, p)| match p {
            Prepared::Done(d) => (candidate, Some(d)),
            Prepared::Submit(alert) => {
                alerts.push(alert);
                (candidate, None)
            }
        })
        .collect();
    let host = ctx.host.clone();
    // A task of its own, as a submit starts only when first polled: it hands the alerts over
    // at once and waits for the receipts while the session fetches on.
    let receipts =
        tokio::spawn(async move { join_all(alerts.iter().map(|a| host.submit(a))).await });
    Submitted { mails, receipts }
}

/// Sends the DELEs left and QUIT: only QUIT's `+OK` commits the deletions.
async fn close(mut session: Pop3Session, deletes: Vec<u32>, mailbox: &str) -> Result<(), Error> {
    if !deletes.is_empty() {
        let commands: Vec<Command> = deletes.into_iter().map(Command::Dele).collect();
        check_deletes(mailbox, session.batch(&commands).await?.into_iter());
    }
    session.quit().await
}

/// Consecutive runs of candidates of at most [`PIPELINE_BATCH`] mails and
/// [`PIPELINE_BATCH_BYTES`] bytes (a larger mail makes a batch of its own).
fn batches(candidates: &[Candidate]) -> Vec<&[Candidate]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, c) in candidates.iter().enumerate() {
        let size = c.fetch_size();
        if i > start && (i - start == PIPELINE_BATCH || bytes + size > PIPELINE_BATCH_BYTES) {
            out.push(&candidates[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < candidates.len() {
        out.push(&candidates[start..]);
    }
    out
}

/// The DELEs decided so far (taken out of `deletes`) followed by the fetches of `chunk`, and
/// how many DELEs lead.
fn fetch_commands(deletes: &mut Vec<u32>, chunk: &[Candidate]) -> (Vec<Command>, usize) {
    let mut commands: Vec<Command> = deletes.drain(..).map(Command::Dele).collect();
    let n_dele = commands.len();
    commands.extend(chunk.iter().map(Candidate::fetch));
    (commands, n_dele)
}

/// Sends `commands` (unless `sent` already) and reads their replies: those read, and why the
/// rest could not be. When the connection fails while a mail is read, that mail counts a
/// failure (its headers, for a quarantined one).
async fn read_fetch(
    session: &mut Pop3Session,
    (commands, n_dele): &(Vec<Command>, usize),
    chunk: &[Candidate],
    memory: &mut Memory,
    sent: bool,
) -> (Vec<Result<Reply, Error>>, Option<SessionError>) {
    let mut out = Vec::with_capacity(commands.len());
    let read = if sent {
        session.read_replies_into(commands, &mut out).await
    } else {
        session.batch_into(commands, &mut out).await
    };
    let Err(e) = read else { return (out, None) };
    let culprit = out.len().checked_sub(*n_dele).and_then(|i| chunk.get(i));
    if let Some(c) = culprit
        && let Some(uid) = &c.uid
    {
        match &c.quarantine {
            Some(_) => memory.headers_failed(uid),
            None => {
                memory.failed(uid, &alertbridge_plugin_api::error_chain(&e), false);
            }
        }
        warn!(msg = c.msg, uid, error = %e, failures = memory.failures(uid), "The connection failed while this mail was read.");
    }
    (out, Some(e.into()))
}

fn check_deletes(
    mailbox: &str,
    replies: impl Iterator<Item = Result<crate::protocol::Reply, Error>>,
) {
    for reply in replies {
        if let Err(e) = reply {
            // The alert is queued; the mail comes back next session and the host drops it as
            // a duplicate of its key.
            warn!(mailbox, error = %e, "DELE refused; the mail will be seen again.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let c = |size| Candidate {
            msg: 1,
            uid: None,
            size,
            quarantine: None,
        };
        let lens = |v: &[Candidate]| batches(v).iter().map(|b| b.len()).collect::<Vec<_>>();
        assert_eq!(
            lens(&(0..150).map(|_| c(100)).collect::<Vec<_>>()),
            [64, 64, 22]
        );
        let mb = 1 << 20;
        assert_eq!(
            lens(&[c(3 * mb), c(mb), c(mb), c(9 * mb), c(10)]),
            [2, 1, 1, 1]
        );
        assert!(batches(&[]).is_empty());
    }
}
