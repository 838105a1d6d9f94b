//! What becomes of one fetched mail: its alert (or none: a sender not accepted), its keys, and
//! what the host's answer means for it (delete, keep, quarantine). A quarantined mail's alert
//! is built from its headers alone (see [`crate::quarantine`]).

use std::sync::atomic::Ordering;

use alertbridge_plugin_api::{Alert, ErrorKind, PluginError, Receipt};
use tracing::{debug, error, warn};

use super::{Candidate, Disposition, Poller, Prepared};
use crate::{
    auth_results::{self, Verdict},
    config::OnDisallowed,
    mail::{self, MailAlert},
    quarantine::{Memory, Problem, problem_alert},
};

impl Poller<'_> {
    /// Builds the alert of one mail (`raw`: the whole mail, or for a quarantined one its header
    /// block, empty if unknown), or decides its fate without one.
    pub(super) fn prepare(&self, candidate: &Candidate, raw: &[u8]) -> Prepared {
        let s = self.settings;
        let mail = match &candidate.quarantine {
            None => mail::alert_from_mail(raw, &s.mail),
            Some(due) => problem_alert(
                &Problem {
                    uid: candidate.uid.as_deref().unwrap_or_default(),
                    size: candidate.size,
                    reason: &due.reason,
                    headers: raw,
                    deleted: s.on_quarantine == OnDisallowed::Delete && !s.keep,
                },
                &s.mail,
            ),
        };
        let MailAlert {
            mut alert,
            sender,
            message_id,
            auth_results,
            problem,
        } = mail;
        if let Some(why) = self.sender_refusal(sender.as_deref(), &auth_results) {
            self.counters.disallowed.fetch_add(1, Ordering::Relaxed);
            let delete = s.on_disallowed == OnDisallowed::Delete;
            warn!(mailbox = %s.mailbox, msg = candidate.msg, sender = ?sender, subject = %alert.subject, reason = %why, deleted = delete && !s.keep,
                quarantined = candidate.quarantine.is_some(), "Mail from a sender not accepted; no alert.");
            if candidate.quarantine.is_some() {
                // Remembered all the same, so it is not fetched again after a restart.
                return Prepared::Done(Disposition::Quarantine { delete });
            }
            return Prepared::Done(if delete {
                Disposition::Delete
            } else {
                Disposition::Keep
            });
        }
        if let Some(problem) = &problem {
            self.counters.problems.fetch_add(1, Ordering::Relaxed);
            warn!(mailbox = %s.mailbox, msg = candidate.msg, uid = ?candidate.uid, problem = %problem, quarantined = candidate.quarantine.is_some(),
                "Mail not (fully) readable; submitting an alert with a mail.problem label.");
        }
        let key = pop3_key(&s.mailbox, candidate.uid.as_deref(), message_id.as_deref());
        set_keys(&mut alert, key, &s.mailbox);
        Prepared::Submit(alert)
    }

    /// Why mail from `sender` is not accepted, if it is not: `allowed_senders` (which checks
    /// only the forgeable `From:` header), then the trusted MTA's `Authentication-Results`.
    fn sender_refusal(&self, sender: Option<&str>, auth_results: &[String]) -> Option<String> {
        let s = self.settings;
        if !s.senders.allows(sender) {
            return Some("not in allowed_senders".to_owned());
        }
        let id = s.trusted_authserv_id.as_deref()?;
        match auth_results::vouches(auth_results.iter().map(String::as_str), id, sender) {
            Verdict::Pass(_) => None,
            v => Some(format!("not vouched for by {id}: {v}")),
        }
    }

    /// What the host's answer means for the mail; `Err` only for a refusal worth retrying.
    pub(super) fn settle(
        &self,
        candidate: &Candidate,
        answer: Result<Receipt, PluginError>,
        memory: &mut Memory,
    ) -> Result<Disposition, PluginError> {
        let s = self.settings;
        let quarantined = candidate.quarantine.is_some();
        match answer {
            Ok(receipt) => {
                self.counters.alerts.fetch_add(1, Ordering::Relaxed);
                debug!(mailbox = %s.mailbox, msg = candidate.msg, alert_id = receipt.alert_id, duplicate = receipt.duplicate, "Alert queued.");
                if quarantined {
                    let delete = s.on_quarantine == OnDisallowed::Delete;
                    return Ok(Disposition::Quarantine { delete });
                }
                if let Some(uid) = &candidate.uid {
                    memory.succeeded(uid);
                }
                Ok(Disposition::Delete)
            }
            Err(e) if e.kind == ErrorKind::TRANSIENT || e.kind == ErrorKind::SHUTTING_DOWN => {
                Err(e)
            }
            Err(e) => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                match (&candidate.uid, quarantined) {
                    (Some(uid), false) => {
                        error!(mailbox = %s.mailbox, msg = candidate.msg, uid, error = %e,
                            "Host refused the alert for good; the mail is quarantined.");
                        memory.failed(uid, &format!("the host refused its alert: {e}"), true);
                        Ok(Disposition::Retry)
                    }
                    _ => {
                        error!(mailbox = %s.mailbox, msg = candidate.msg, uid = ?candidate.uid, quarantined, error = %e,
                            "Host refused the alert for good; the mail stays on the server.");
                        Ok(Disposition::Keep)
                    }
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
