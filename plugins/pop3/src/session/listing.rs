//! What a session looks at: STAT, the listing (whole, or the first window in a backlog), and
//! which of the listed mails to fetch, to quarantine, or to leave alone.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
};

use tracing::warn;

use super::{Candidate, Listing, Poller, Pop3Session, SessionError};
use crate::{
    error::Error,
    protocol::{Command, parse_list, parse_uidl},
    quarantine::Memory,
    state::SeenUids,
};

impl Poller<'_> {
    /// STAT, then the listing, and whether more messages wait beyond it. An empty mailbox
    /// costs one command; in a backlog only the first `max_messages_per_session + extra`
    /// messages are listed (one pipelined `UIDL n`/`LIST n` pair each) instead of the whole
    /// mailbox in every session.
    pub(super) async fn listing(
        &self,
        session: &mut Pop3Session,
        extra: usize,
    ) -> Result<(Listing, bool), SessionError> {
        let s = self.settings;
        let (count, _) = session.stat().await?;
        if count == 0 {
            let empty = Listing {
                uids: None,
                sizes: Vec::new(),
                complete: true,
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

    /// The mails to fetch: not yet seen (keep mode), not left aside or quarantined before, not
    /// taken by the session before (`excluded`). Oversize mail and mail that failed too often
    /// are quarantined (only their headers are fetched); mail that failed before goes last, so
    /// the mails after it flow even if it breaks the session again.
    pub(super) fn select(
        &self,
        listing: Listing,
        mut seen: Option<&mut SeenUids>,
        memory: &mut Memory,
        excluded: &HashSet<String>,
    ) -> Result<Vec<Candidate>, SessionError> {
        let s = self.settings;
        if let Some(uids) = listing.uids.as_ref().filter(|_| listing.complete) {
            let present: HashSet<&str> = uids.values().map(String::as_str).collect();
            if let Some(seen) = seen.as_deref_mut() {
                seen.retain_present(&present)?;
            }
            memory.retain_present(&present)?;
        }
        let mut candidates = Vec::new();
        for entry in listing.sizes {
            let uid = listing
                .uids
                .as_ref()
                .and_then(|u| u.get(&entry.msg))
                .cloned();
            if let Some(uid) = &uid
                && (memory.is_aside(uid)
                    || excluded.contains(uid)
                    || seen.as_deref().is_some_and(|seen| seen.contains(uid)))
            {
                continue;
            }
            if entry.size > s.max_message_bytes {
                let Some(uid) = &uid else {
                    self.counters.oversize.fetch_add(1, Ordering::Relaxed);
                    warn!(mailbox = %s.mailbox, msg = entry.msg, size = entry.size, limit = s.max_message_bytes,
                        "Mail larger than max_message_bytes (and no UIDL to remember it by); left on the server.");
                    continue;
                };
                if memory.due(uid).is_none() {
                    self.counters.oversize.fetch_add(1, Ordering::Relaxed);
                    warn!(mailbox = %s.mailbox, msg = entry.msg, uid, size = entry.size, limit = s.max_message_bytes,
                        "Mail larger than max_message_bytes; quarantining it.");
                    let reason = format!(
                        "larger than max_message_bytes ({} > {})",
                        entry.size, s.max_message_bytes
                    );
                    memory.failed(uid, &reason, true);
                }
            }
            let quarantine = uid.as_deref().and_then(|u| memory.due(u));
            candidates.push(Candidate {
                msg: entry.msg,
                uid,
                size: entry.size,
                quarantine,
            });
        }
        // Stable: mails that failed before (and are not due yet) go last.
        candidates.sort_by_key(|c| {
            c.quarantine.is_none() && c.uid.as_deref().is_some_and(|u| memory.failures(u) > 0)
        });
        Ok(candidates)
    }

    /// UIDL and LIST of the whole mailbox.
    pub(super) async fn list_all(
        &self,
        session: &mut Pop3Session,
    ) -> Result<Listing, SessionError> {
        let s = self.settings;
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
            complete: true,
        })
    }

    /// `UIDL n` and `LIST n` for messages 1..=`window`, pipelined. A message gone meanwhile
    /// (`-ERR`) is left out; a UIDL refused or unparseable leaves that message without a uid.
    pub(super) async fn list_first(
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
            complete: false,
        })
    }
}

/// Message number → unique-id, leaving out unique-ids the server gave to more than one message
/// (a broken server): as dedup keys they would make the host drop one of the mails.
pub(super) fn unique_uids(
    mailbox: &str,
    list: Vec<crate::protocol::UidlEntry>,
) -> HashMap<u32, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_uids_are_left_out() {
        let entry = |msg, uid: &str| crate::protocol::UidlEntry {
            msg,
            uid: uid.into(),
        };
        let map = unique_uids("m", vec![entry(1, "a"), entry(2, "b"), entry(3, "a")]);
        assert_eq!(map, HashMap::from([(2, "b".to_owned())]));
    }
}
