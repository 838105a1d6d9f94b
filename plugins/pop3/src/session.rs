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
//! oversize mail, mail from a sender not allowed (unless `on_disallowed = "delete"`) and mail whose
//! alert the host refused for good stay on the server and are not fetched again by this
//! instance; a transient refusal ends the session (the mail stays and is retried after backoff).
//! A mail that cannot be read well still becomes an alert, labelled `mail.problem`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use alertbridge_plugin_api::{
    Alert, ErrorKind, PluginError, Receipt, error_chain, kit::SourceContext,
};
use futures_util::future::join_all;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::{
    auth_results::{self, Verdict},
    client::{Io, Session, connect},
    config::OnDisallowed,
    error::Error,
    mail::{self, MailAlert},
    protocol::{Command, ListEntry, parse_list, parse_uidl},
    source::Pop3Source,
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
}

/// A message to fetch.
#[derive(Debug)]
struct Candidate {
    msg: u32,
    uid: Option<String>,
    size: u64,
}

/// A fetched mail, ready for the host or already decided.
enum Prepared {
    Done(Disposition),
    Submit(Alert),
}

/// What to do with a fetched mail.
enum Disposition {
    Delete,
    Keep,
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
}

impl Pop3Source {
    /// Runs one session, on `ahead` if the last session logged it in. `seen` is the keep-mode
    /// state; `skipped` the UIDLs this instance decided to leave on the server (oversize,
    /// disallowed, refused for good).
    pub(crate) async fn session(
        &self,
        ctx: &SourceContext,
        mut seen: Option<&mut SeenUids>,
        skipped: &mut HashSet<String>,
        ahead: Option<Box<Ahead>>,
    ) -> Result<Outcome, SessionError> {
        let s = &self.settings;
        let (mut session, listing, beyond, excluded, before) = match ahead.map(|a| *a) {
            Some(a) => (a.session, a.listing, a.beyond, a.excluded, Some(a.before)),
            None => {
                // Nothing is marked yet: giving up here on shutdown loses nothing.
                let mut session = tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(Outcome::Done),
                    r = self.login() => r?,
                };
                let (listing, beyond) = self.listing(&mut session, skipped.len()).await?;
                (session, listing, beyond, HashSet::new(), None)
            }
        };
        let mut candidates = self.select(listing, seen.as_deref_mut(), skipped, &excluded)?;
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
                .drain(ctx, &mut session, &candidates, seen, skipped)
                .await?;
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
        let extra = excluded.len() + skipped.len();
        let (tally, next) = tokio::join!(
            self.drain(ctx, &mut session, &candidates, seen, skipped),
            self.log_in_ahead(ctx, extra),
        );
        if let Some(before) = before {
            let _ = before.task.await;
        }
        let tally = tally?;
        let Some((next, listing, beyond)) = next.filter(|_| tally.host_error.is_none()) else {
            self.finish(session, tally).await?;
            return Ok(Outcome::More(None));
        };
        // The next session fetches while this one's DELEs and QUIT complete.
        let mailbox = s.mailbox.clone();
        let counters = Arc::clone(&self.counters);
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

    /// Fetches, submits and settles `candidates`; returns the DELEs still to send (and a
    /// transient host refusal, which ends the session).
    async fn drain(
        &self,
        ctx: &SourceContext,
        session: &mut Pop3Session,
        candidates: &[Candidate],
        mut seen: Option<&mut SeenUids>,
        skipped: &mut HashSet<String>,
    ) -> Result<Tally, SessionError> {
        let s = &self.settings;
        let pipelining = session.pipelining();
        let chunks = if pipelining {
            batches(candidates)
        } else {
            candidates.chunks(1).collect()
        };
        let mut tally = Tally::default();
        let mut submitted: VecDeque<Submitted<'_>> = VecDeque::new();
        // With PIPELINING the next batch is already requested while this one is submitted.
        let mut in_flight: Option<(Vec<Command>, usize)> = None;
        for (i, chunk) in chunks.iter().enumerate() {
            let (commands, replies) = match in_flight.take() {
                Some((sent, n_dele)) => {
                    let replies = session.read_replies(&sent).await?;
                    ((sent, n_dele), replies)
                }
                None => {
                    if ctx.shutdown.is_cancelled() {
                        break;
                    }
                    let commands = fetch_commands(&mut tally.deletes, chunk);
                    let replies = session.batch(&commands.0).await?;
                    (commands, replies)
                }
            };
            let mut replies = replies.into_iter();
            check_deletes(&s.mailbox, replies.by_ref().take(commands.1));
            if pipelining
                && !ctx.shutdown.is_cancelled()
                && let Some(next) = chunks.get(i + 1)
            {
                let next = fetch_commands(&mut tally.deletes, next);
                session.send_pipelined(&next.0).await?;
                in_flight = Some(next);
            }
            let mut prepared = Vec::with_capacity(chunk.len());
            for (candidate, reply) in chunk.iter().zip(replies) {
                match reply {
                    Ok(reply) => prepared.push((candidate, self.prepare(candidate, &reply.data))),
                    Err(e) => {
                        warn!(mailbox = %s.mailbox, msg = candidate.msg, error = %e, "RETR refused; skipping this mail for now.")
                    }
                }
            }
            // Shut down before this batch's submits: its mails stay on the server.
            if ctx.shutdown.is_cancelled() {
                break;
            }
            submitted.push_back(submit(ctx, prepared));
            // Let the submit task hand the alerts over now, before this task reads on.
            tokio::task::yield_now().await;
            // Settle the batches answered already, and wait while too many are out.
            while let Some(oldest) = submitted.front()
                && (submitted.len() > SUBMITS_IN_FLIGHT || oldest.receipts.is_finished())
                && let Some(batch) = submitted.pop_front()
            {
                self.settle_batch(batch, seen.as_deref_mut(), skipped, &mut tally)
                    .await?;
            }
            if tally.host_error.is_some() {
                break;
            }
        }
        // A prefetch nobody handled: its DELEs count, its mails stay on the server.
        if let Some((sent, n_dele)) = in_flight.take() {
            check_deletes(
                &s.mailbox,
                session.read_replies(&sent).await?.into_iter().take(n_dele),
            );
        }
        // The alerts still awaiting receipts are with the host: their answers decide.
        while let Some(batch) = submitted.pop_front() {
            self.settle_batch(batch, seen.as_deref_mut(), skipped, &mut tally)
                .await?;
        }
        if tally.handled > 0 {
            info!(mailbox = %s.mailbox, handled = tally.handled, deleted = !s.keep, "Drained.");
        }
        Ok(tally)
    }

    /// Closes the session (DELEs, QUIT); a transient host refusal ends it as an error, after
    /// the mails taken before it are deleted all the same.
    async fn finish(&self, session: Pop3Session, tally: Tally) -> Result<(), SessionError> {
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
        skipped: &mut HashSet<String>,
        tally: &mut Tally,
    ) -> Result<(), StateError> {
        let s = &self.settings;
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
                    Some(answer) => self.settle(candidate, answer),
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
                    skipped.extend(candidate.uid.clone());
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

    /// STAT, then the listing, and whether more messages wait beyond it. An empty mailbox
    /// costs one command; in a backlog only the first `max_messages_per_session + extra`
    /// messages are listed (one pipelined `UIDL n`/`LIST n` pair each) instead of the whole
    /// mailbox in every session.
    async fn listing(
        &self,
        session: &mut Pop3Session,
        extra: usize,
    ) -> Result<(Listing, bool), SessionError> {
        let s = &self.settings;
        let (count, _) = session.stat().await?;
        if count == 0 {
            let empty = Listing {
                uids: None,
                sizes: Vec::new(),
            };
            return Ok((empty, false));
        }
        let window = s
            .max_messages_per_session
            .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
        if !s.keep && session.pipelining() && count > window {
            Ok((self.list_first(session, window).await?, true))
        } else {
            Ok((self.list_all(session).await?, false))
        }
    }

    /// The mails to fetch: not yet seen (keep mode), not left aside before, not taken by the
    /// session before (`excluded`), not oversize.
    fn select(
        &self,
        listing: Listing,
        mut seen: Option<&mut SeenUids>,
        skipped: &mut HashSet<String>,
        excluded: &HashSet<String>,
    ) -> Result<Vec<Candidate>, SessionError> {
        let s = &self.settings;
        if let (Some(seen), Some(uids)) = (seen.as_deref_mut(), &listing.uids) {
            seen.retain_present(&uids.values().map(String::as_str).collect())?;
        }
        let mut candidates = Vec::new();
        for entry in listing.sizes {
            let uid = listing
                .uids
                .as_ref()
                .and_then(|u| u.get(&entry.msg))
                .cloned();
            if let Some(uid) = &uid
                && (skipped.contains(uid)
                    || excluded.contains(uid)
                    || seen.as_deref().is_some_and(|seen| seen.contains(uid)))
            {
                continue;
            }
            if entry.size > s.max_message_bytes {
                self.counters.oversize.fetch_add(1, Ordering::Relaxed);
                warn!(mailbox = %s.mailbox, msg = entry.msg, uid = ?uid, size = entry.size, limit = s.max_message_bytes,
                    "Mail larger than max_message_bytes; left on the server.");
                skipped.extend(uid);
                continue;
            }
            candidates.push(Candidate {
                msg: entry.msg,
                uid,
                size: entry.size,
            });
        }
        Ok(candidates)
    }

    /// UIDL and LIST of the whole mailbox.
    async fn list_all(&self, session: &mut Pop3Session) -> Result<Listing, SessionError> {
        let s = &self.settings;
        let uids = match session.uidl().await {
            Ok(list) => Some(unique_uids(&s.mailbox, list)),
            // Without UIDL (or with unusable unique-ids) the keys come from Message-IDs.
            Err(e @ (Error::Server { .. } | Error::Parse { .. })) if !s.keep => {
                warn!(mailbox = %s.mailbox, error = %e, "No usable UIDL; dedup keys fall back to Message-IDs.");
                None
            }
            Err(Error::Server { .. }) => {
                return Err(Error::Unsupported("UIDL, which keep = true needs").into());
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Listing {
            uids,
            sizes: session.list().await?,
        })
    }

    /// `UIDL n` and `LIST n` for messages 1..=`window`, pipelined. A message gone meanwhile
    /// (`-ERR`) is left out; a UIDL refused or unparseable leaves that message without a uid.
    async fn list_first(
        &self,
        session: &mut Pop3Session,
        window: u32,
    ) -> Result<Listing, SessionError> {
        let commands: Vec<Command> = (1..=window)
            .flat_map(|n| [Command::Uidl(Some(n)), Command::List(Some(n))])
            .collect();
        let replies = session.batch(&commands).await?;
        let mut uids = Vec::new();
        let mut sizes = Vec::new();
        for pair in replies.chunks(2) {
            let [uidl, list] = pair else { continue };
            let Ok(list) = list else { continue };
            let entry = parse_list(&list.text).map_err(|source| Error::Parse {
                command: "LIST",
                source,
            })?;
            sizes.extend(entry.into_iter().next());
            if let Ok(uidl) = uidl
                && let Ok(entry) = parse_uidl(&uidl.text)
            {
                uids.extend(entry.into_iter().next());
            }
        }
        Ok(Listing {
            uids: Some(unique_uids(&self.settings.mailbox, uids)),
            sizes,
        })
    }

    async fn login(&self) -> Result<Pop3Session, Error> {
        let s = &self.settings;
        let client = connect(&s.endpoint).await?;
        let method = s.auth.unwrap_or_else(|| client.best_auth());
        debug!(mailbox = %s.mailbox, ?method, "Logging in.");
        client.login(method, &s.username, s.password.expose()).await
    }

    /// Builds the alert of one mail, or decides its fate without one.
    fn prepare(&self, candidate: &Candidate, raw: &[u8]) -> Prepared {
        let s = &self.settings;
        let MailAlert {
            mut alert,
            sender,
            message_id,
            auth_results,
            problem,
        } = mail::alert_from_mail(raw, &s.mail);
        let refusal = if !s.senders.allows(sender.as_deref()) {
            Some("not in allowed_senders".to_owned())
        } else if let Some(id) = &s.trusted_authserv_id {
            match auth_results::vouches(
                auth_results.iter().map(String::as_str),
                id,
                sender.as_deref(),
            ) {
                Verdict::Pass(_) => None,
                v => Some(format!("not vouched for by {id}: {v}")),
            }
        } else {
            None
        };
        if let Some(why) = refusal {
            self.counters.disallowed.fetch_add(1, Ordering::Relaxed);
            let delete = s.on_disallowed == OnDisallowed::Delete;
            warn!(mailbox = %s.mailbox, msg = candidate.msg, sender = ?sender, subject = %alert.subject, reason = %why, deleted = delete && !s.keep,
                "Mail from a sender not accepted; no alert.");
            return Prepared::Done(if delete {
                Disposition::Delete
            } else {
                Disposition::Keep
            });
        }
        if let Some(problem) = &problem {
            self.counters.problems.fetch_add(1, Ordering::Relaxed);
            warn!(mailbox = %s.mailbox, msg = candidate.msg, problem = %problem, "Mail not fully readable; submitting it with a mail.problem label.");
        }
        let key = pop3_key(&s.mailbox, candidate.uid.as_deref(), message_id.as_deref());
        set_keys(&mut alert, key, &s.mailbox);
        Prepared::Submit(alert)
    }

    /// What the host's answer means for the mail; `Err` only for a refusal worth retrying.
    fn settle(
        &self,
        candidate: &Candidate,
        answer: Result<Receipt, PluginError>,
    ) -> Result<Disposition, PluginError> {
        let s = &self.settings;
        match answer {
            Ok(receipt) => {
                self.counters.alerts.fetch_add(1, Ordering::Relaxed);
                debug!(mailbox = %s.mailbox, msg = candidate.msg, alert_id = receipt.alert_id, duplicate = receipt.duplicate, "Alert queued.");
                Ok(Disposition::Delete)
            }
            Err(e) if e.kind == ErrorKind::TRANSIENT || e.kind == ErrorKind::SHUTTING_DOWN => {
                Err(e)
            }
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                error!(mailbox = %s.mailbox, msg = candidate.msg, uid = ?candidate.uid, error = %e,
                    "Host refused the alert for good; the mail stays on the server.");
                Ok(Disposition::Keep)
            }
        }
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
        if i > start && (i - start == PIPELINE_BATCH || bytes + c.size > PIPELINE_BATCH_BYTES) {
            out.push(&candidates[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += c.size;
    }
    if start < candidates.len() {
        out.push(&candidates[start..]);
    }
    out
}

/// The DELEs decided so far (taken out of `deletes`) followed by the RETRs of `chunk`, and how
/// many DELEs lead.
fn fetch_commands(deletes: &mut Vec<u32>, chunk: &[Candidate]) -> (Vec<Command>, usize) {
    let mut commands: Vec<Command> = deletes.drain(..).map(Command::Dele).collect();
    let n_dele = commands.len();
    commands.extend(chunk.iter().map(|c| Command::Retr(c.msg)));
    (commands, n_dele)
}

/// Message number → unique-id, leaving out unique-ids the server gave to more than one message
/// (a broken server): as dedup keys they would make the host drop one of the mails.
fn unique_uids(mailbox: &str, list: Vec<crate::protocol::UidlEntry>) -> HashMap<u32, String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for e in &list {
        *count.entry(e.uid.as_str()).or_default() += 1;
    }
    let repeated: HashSet<String> = count
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(u, _)| u.to_owned())
        .collect();
    if !repeated.is_empty() {
        warn!(
            mailbox,
            repeated = repeated.len(),
            "Server gave one unique-id to several messages; keying those by Message-ID."
        );
    }
    list.into_iter()
        .filter(|e| !repeated.contains(&e.uid))
        .map(|e| (e.msg, e.uid))
        .collect()
}

/// `pop3:<user>@<server>:<UIDL>`, or the Message-ID when the server has no UIDL.
fn pop3_key(mailbox: &str, uid: Option<&str>, message_id: Option<&str>) -> Option<String> {
    match (uid, message_id) {
        (Some(uid), _) => Some(format!("pop3:{mailbox}:{uid}")),
        (None, Some(id)) => Some(format!("pop3:{mailbox}:<{id}>")),
        (None, None) => None,
    }
}

/// The dedup key: the mailbox key, or, when the alert document brought its own, that key in a
/// namespace of its own (`sender:<key>`), which no key the mailbox makes (`pop3:…`) can equal:
/// a mail cannot pre-claim the key of another mail. The mailbox key is kept in the `pop3.key`
/// attribute either way.
fn set_keys(alert: &mut Alert, key: Option<String>, mailbox: &str) {
    alert
        .attributes
        .insert("pop3.mailbox".into(), mailbox.to_owned());
    if let Some(chosen) = alert.dedup_key.take() {
        alert.dedup_key = Some(format!("{SENDER_KEY_PREFIX}{chosen}"));
    }
    if let Some(key) = key {
        alert.attributes.insert("pop3.key".into(), key.clone());
        alert.dedup_key.get_or_insert(key);
    }
}

/// The namespace of dedup keys chosen by a mail's sender (`<dedup-key>`).
pub const SENDER_KEY_PREFIX: &str = "sender:";

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

    #[test]
    fn repeated_uids_are_left_out() {
        let entry = |msg, uid: &str| crate::protocol::UidlEntry {
            msg,
            uid: uid.into(),
        };
        let map = unique_uids("m", vec![entry(1, "a"), entry(2, "b"), entry(3, "a")]);
        assert_eq!(map, HashMap::from([(2, "b".to_owned())]));
    }

    #[test]
    fn keys() {
        assert_eq!(
            pop3_key("a@h:110", Some("0001"), Some("m@x")).as_deref(),
            Some("pop3:a@h:110:0001")
        );
        assert_eq!(
            pop3_key("a@h:110", None, Some("m@x")).as_deref(),
            Some("pop3:a@h:110:<m@x>")
        );
        assert_eq!(pop3_key("a@h:110", None, None), None);
        let mut a = Alert::new("s");
        set_keys(&mut a, Some("pop3:k".into()), "a@h:110");
        assert_eq!(a.dedup_key.as_deref(), Some("pop3:k"));
        let mut b = Alert {
            dedup_key: Some("db01-disk".into()),
            ..Alert::new("s")
        };
        set_keys(&mut b, Some("pop3:k".into()), "a@h:110");
        assert_eq!(
            (b.dedup_key.as_deref(), b.attributes["pop3.key"].as_str()),
            (Some("sender:db01-disk"), "pop3:k")
        );
        // A sender's key naming another mail's mailbox key does not collide with it.
        let mut forged = Alert {
            dedup_key: Some("pop3:a@h:110:0002".into()),
            ..Alert::new("s")
        };
        set_keys(
            &mut forged,
            pop3_key("a@h:110", Some("0001"), None),
            "a@h:110",
        );
        assert_eq!(
            forged.dedup_key.as_deref(),
            Some("sender:pop3:a@h:110:0002")
        );
        assert_ne!(forged.dedup_key, pop3_key("a@h:110", Some("0002"), None));
    }
}
