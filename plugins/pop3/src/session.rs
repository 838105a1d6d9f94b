//! One poll: connect, log in, look at the mailbox (STAT, UIDL, LIST), fetch new mail in
//! pipelined batches (the next batch is requested before this one is submitted, and DELEs
//! travel with the RETRs that follow them), submit a batch's alerts together, mark DELE only
//! after each alert's receipt, and QUIT so the deletions commit.
//!
//! Dispositions: an accepted alert's mail is deleted (keep mode: its UIDL is recorded instead);
//! oversize mail, mail from a sender not allowed (unless `on_disallowed = "delete"`) and mail whose
//! alert the host refused for good stay on the server and are not fetched again by this
//! instance; a transient refusal ends the session (the mail stays and is retried after backoff).
//! A mail that cannot be read well still becomes an alert, labelled `mail.problem`.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
    time::Duration,
};

use alertbridge_plugin_api::{Alert, ErrorKind, PluginError, Receipt, kit::SourceContext};
use futures_util::future::join_all;
use tracing::{debug, error, info, warn};

use crate::{
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

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything there was is handled.
    Done,
    /// The session limit was reached: more mail is waiting.
    More,
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

impl Pop3Source {
    /// Runs one session. `seen` is the keep-mode state; `skipped` the UIDLs this instance
    /// decided to leave on the server (oversize, disallowed, refused for good).
    pub(crate) async fn session(
        &self,
        ctx: &SourceContext,
        mut seen: Option<&mut SeenUids>,
        skipped: &mut HashSet<String>,
    ) -> Result<Outcome, SessionError> {
        let s = &self.settings;
        // Nothing is marked yet: giving up here on shutdown loses nothing.
        let mut session = tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(Outcome::Done),
            r = self.login() => r?,
        };
        let (mut candidates, beyond) = self
            .candidates(&mut session, seen.as_deref_mut(), skipped)
            .await?;
        let max = s.max_messages_per_session as usize;
        let outcome = if beyond || candidates.len() > max {
            Outcome::More
        } else {
            Outcome::Done
        };
        candidates.truncate(max);

        let pipelining = session.pipelining();
        let chunks = if pipelining {
            batches(&candidates)
        } else {
            candidates.chunks(1).collect()
        };
        let mut deletes: Vec<u32> = Vec::new();
        let mut handled = 0usize;
        let mut host_error = None;
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
                    let commands = fetch_commands(&mut deletes, chunk);
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
                let next = fetch_commands(&mut deletes, next);
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
            // The batch's alerts go to the host together, so it can queue them in one durable
            // write; each mail is settled in order once every submit has its answer.
            let submits = prepared.iter().filter_map(|(_, p)| match p {
                Prepared::Submit(alert) => Some(ctx.host.submit(alert)),
                Prepared::Done(_) => None,
            });
            let mut answers = join_all(submits).await.into_iter();
            for (candidate, p) in prepared {
                let disposition = match p {
                    Prepared::Done(d) => Ok(d),
                    Prepared::Submit(_) => match answers.next() {
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
                    Ok(Disposition::Delete) => deletes.push(candidate.msg),
                    Ok(Disposition::Keep) => skipped.extend(candidate.uid.clone()),
                    Err(e) => {
                        // Later mails of the batch may have been taken: settle them all.
                        host_error.get_or_insert(e);
                        continue;
                    }
                }
                handled += 1;
            }
            if host_error.is_some() {
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
        if !deletes.is_empty() {
            let commands: Vec<Command> = deletes.iter().copied().map(Command::Dele).collect();
            check_deletes(&s.mailbox, session.batch(&commands).await?.into_iter());
        }
        session.quit().await?;
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        if handled > 0 {
            info!(mailbox = %s.mailbox, handled, deleted = !s.keep, "Drained.");
        }
        match host_error {
            Some(e) => Err(SessionError::Host(e)),
            None => Ok(outcome),
        }
    }

    /// The mails to fetch this session (and whether more wait beyond them): not yet seen (keep
    /// mode), not left aside before, not oversize. STAT first, so an empty mailbox costs one
    /// command; in a backlog only the first messages are listed (one pipelined `UIDL n`/`LIST n`
    /// pair each) instead of listing the whole mailbox in every session.
    async fn candidates(
        &self,
        session: &mut Session<Box<dyn Io>>,
        mut seen: Option<&mut SeenUids>,
        skipped: &mut HashSet<String>,
    ) -> Result<(Vec<Candidate>, bool), SessionError> {
        let s = &self.settings;
        let (count, _) = session.stat().await?;
        if count == 0 {
            return Ok((Vec::new(), false));
        }
        let window = s
            .max_messages_per_session
            .saturating_add(u32::try_from(skipped.len()).unwrap_or(u32::MAX));
        let (listing, beyond) = if !s.keep && session.pipelining() && count > window {
            (self.list_first(session, window).await?, true)
        } else {
            (self.list_all(session).await?, false)
        };
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
                && (skipped.contains(uid) || seen.as_deref().is_some_and(|seen| seen.contains(uid)))
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
        Ok((candidates, beyond))
    }

    /// UIDL and LIST of the whole mailbox.
    async fn list_all(&self, session: &mut Session<Box<dyn Io>>) -> Result<Listing, SessionError> {
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
        session: &mut Session<Box<dyn Io>>,
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

    async fn login(&self) -> Result<Session<Box<dyn Io>>, Error> {
        let s = &self.settings;
        let client = connect(&s.endpoint).await?;
        let method = s.auth.unwrap_or_else(|| client.best_auth());
        debug!(mailbox = %s.mailbox, ?method, "Logging in.");
        client.login(method, &s.username, &s.password).await
    }

    /// Builds the alert of one mail, or decides its fate without one.
    fn prepare(&self, candidate: &Candidate, raw: &[u8]) -> Prepared {
        let s = &self.settings;
        let MailAlert {
            mut alert,
            sender,
            message_id,
            problem,
        } = mail::alert_from_mail(raw, &s.mail);
        if !s.senders.allows(sender.as_deref()) {
            self.counters.disallowed.fetch_add(1, Ordering::Relaxed);
            let delete = s.on_disallowed == OnDisallowed::Delete;
            warn!(mailbox = %s.mailbox, msg = candidate.msg, sender = ?sender, subject = %alert.subject, deleted = delete && !s.keep,
                "Mail from a sender not in allowed_senders; no alert.");
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

/// The mailbox key is the dedup key unless the alert document brought its own; it is kept in
/// the `pop3.key` attribute either way.
fn set_keys(alert: &mut Alert, key: Option<String>, mailbox: &str) {
    alert
        .attributes
        .insert("pop3.mailbox".into(), mailbox.to_owned());
    if let Some(key) = key {
        alert.attributes.insert("pop3.key".into(), key.clone());
        alert.dedup_key.get_or_insert(key);
    }
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
            (Some("db01-disk"), "pop3:k")
        );
    }
}
