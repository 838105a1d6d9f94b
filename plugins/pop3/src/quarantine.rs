//! Poison mail: what the source remembers about mails that failed, and the one alert a
//! quarantined mail becomes.
//!
//! A mail that fails to be fetched (`-ERR`, a reply too large, a connection that breaks while
//! it is read) or to become an alert (the host refuses it for good) counts a failure against its
//! UIDL; one that is larger than `max_message_bytes`, too large on the wire or refused for good
//! is quarantined at once, any other after `max_fetch_attempts` failures. A quarantined mail is
//! not fetched again: only its headers (`TOP n 0`, skipped when that broke a connection
//! before) become an alert labelled `mail.problem` with sender, subject, size and reason; once
//! the host took it, the UIDL is written to the quarantine file and the mail is left on the
//! server or deleted (`on_quarantine`). Mails without a UIDL cannot be remembered: they are
//! skipped for the session.

use std::collections::{HashMap, HashSet};

use alertbridge_plugin_api::{Alert, Severity};

use crate::{
    mail::{MailAlert, MailOptions, alert_from_mail},
    state::SeenUids,
};

/// Longest reason kept (a server's `-ERR` text is the server's to choose).
const MAX_REASON_CHARS: usize = 300;
/// Longest original subject quoted in the problem alert's subject.
const MAX_SUBJECT_CHARS: usize = 120;

/// Failures of one mail so far.
#[derive(Debug, Clone, Default)]
struct Trouble {
    failures: u32,
    reason: String,
    /// Reading its headers broke a connection once: quarantine it without them.
    headers_failed: bool,
}

/// Why a mail is quarantined, and whether its headers can still be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub reason: String,
    pub headers: bool,
}

/// What the source remembers between sessions about mails it did not turn into alerts.
#[derive(Debug)]
pub struct Memory {
    /// UIDLs left on the server for now (sender not accepted, problem alert refused).
    pub skipped: HashSet<String>,
    trouble: HashMap<String, Trouble>,
    /// Quarantined UIDLs (on disk: they stay quarantined across restarts).
    pub quarantined: SeenUids,
    max_failures: u32,
}

impl Memory {
    pub fn new(quarantined: SeenUids, max_failures: u32) -> Self {
        Self {
            skipped: HashSet::new(),
            trouble: HashMap::new(),
            quarantined,
            max_failures: max_failures.max(1),
        }
    }

    /// Mails this instance leaves aside: the listing window grows by this many.
    pub fn left_aside(&self) -> usize {
        self.skipped.len() + self.quarantined.len()
    }

    /// True if and only if the mail is not to be fetched (skipped or quarantined).
    pub fn is_aside(&self, uid: &str) -> bool {
        self.skipped.contains(uid) || self.quarantined.contains(uid)
    }

    /// Counts a failure of `uid`; `at_once` (a failure that would repeat: too large, refused
    /// for good) makes it due for quarantine now. True if the mail is now due.
    pub fn failed(&mut self, uid: &str, reason: &str, at_once: bool) -> bool {
        let t = self.trouble.entry(uid.to_owned()).or_default();
        t.failures = if at_once {
            t.failures.max(self.max_failures)
        } else {
            t.failures.saturating_add(1)
        };
        t.reason = cut(reason, MAX_REASON_CHARS);
        t.failures >= self.max_failures
    }

    /// Reading the headers of `uid` broke the connection: next time quarantine it without.
    pub fn headers_failed(&mut self, uid: &str) {
        self.trouble
            .entry(uid.to_owned())
            .or_default()
            .headers_failed = true;
    }

    /// The mail became an alert: its failures are forgotten.
    pub fn succeeded(&mut self, uid: &str) {
        self.trouble.remove(uid);
    }

    /// Failures so far (0 for a mail that never failed).
    pub fn failures(&self, uid: &str) -> u32 {
        self.trouble.get(uid).map_or(0, |t| t.failures)
    }

    /// `Some` if the mail is due for quarantine.
    pub fn due(&self, uid: &str) -> Option<Due> {
        let t = self.trouble.get(uid)?;
        (t.failures >= self.max_failures).then(|| Due {
            reason: t.reason.clone(),
            headers: !t.headers_failed,
        })
    }

    /// The mail is quarantined (its problem alert is queued): remembered on disk, its
    /// failures forgotten.
    pub fn quarantine(&mut self, uid: &str) -> Result<(), crate::state::StateError> {
        self.trouble.remove(uid);
        self.quarantined.insert(uid)
    }

    /// Forgets what concerns mails no longer on the server (`present`: every UIDL listed).
    pub fn retain_present(
        &mut self,
        present: &HashSet<&str>,
    ) -> Result<(), crate::state::StateError> {
        self.trouble.retain(|u, _| present.contains(u.as_str()));
        self.skipped.retain(|u| present.contains(u.as_str()));
        self.quarantined.retain_present(present)
    }
}

/// What a problem alert says about its mail.
#[derive(Debug, Clone)]
pub struct Problem<'a> {
    pub uid: &'a str,
    pub size: u64,
    pub reason: &'a str,
    /// The mail's header block (`TOP n 0`), if it could be read.
    pub headers: &'a [u8],
    /// `deleted from` or `left on` the server, for the body.
    pub deleted: bool,
}

/// The alert of a quarantined mail, and what its headers say (sender, for the checks).
pub fn problem_alert(p: &Problem<'_>, options: &MailOptions) -> MailAlert {
    let mut from_headers = (!p.headers.is_empty()).then(|| alert_from_mail(p.headers, options));
    // A header block that is no message tells nothing.
    if from_headers.as_ref().is_some_and(|m| {
        m.sender.is_none() && m.message_id.is_none() && !m.alert.labels.contains_key("mail.subject")
    }) {
        from_headers = None;
    }
    let (sender, message_id, auth_results, mut labels) = match from_headers {
        Some(m) => {
            let labels: std::collections::BTreeMap<String, String> = m
                .alert
                .labels
                .into_iter()
                .filter(|(k, _)| crate::mail::is_reserved_label(k))
                .collect();
            (m.sender, m.message_id, m.auth_results, labels)
        }
        None => Default::default(),
    };
    let subject = labels.get("mail.subject").map_or_else(
        || "(subject unknown)".to_owned(),
        |s: &String| cut(s, MAX_SUBJECT_CHARS),
    );
    let reason = cut(p.reason, MAX_REASON_CHARS);
    labels.insert("mail.problem".into(), reason.clone());
    labels.insert("mail.size".into(), p.size.to_string());
    let mut alert = Alert::new(format!("Mail quarantined: {subject}"));
    alert.severity = Severity::HIGH;
    alert.body = format!(
        "A mail could not be turned into an alert: {reason}.\nFrom: {}\nSubject: {subject}\nSize: {} bytes\nUIDL: {}\nIt was {} the server and will not be fetched again.",
        sender.as_deref().unwrap_or("(unknown)"),
        p.size,
        p.uid,
        if p.deleted { "deleted from" } else { "left on" },
    );
    alert.labels = labels;
    alert.attributes.insert("pop3.uid".into(), p.uid.to_owned());
    MailAlert {
        alert,
        sender,
        message_id,
        auth_results,
        problem: Some(reason),
    }
}

fn cut(s: &str, max: usize) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(max: u32) -> (tempfile::TempDir, Memory) {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = SeenUids::load_quarantine(dir.path(), "a@h:1").expect("load");
        (dir, Memory::new(q, max))
    }

    #[test]
    fn failures_count_up_to_quarantine_and_success_forgets_them() {
        let (dir, mut m) = memory(3);
        assert!(!m.failed("u1", "RETR refused", false));
        assert!(!m.failed("u1", "connection closed", false));
        assert_eq!((m.failures("u1"), m.due("u1")), (2, None));
        assert!(m.failed("u1", "timed\r\nout", false));
        assert_eq!(
            m.due("u1"),
            Some(Due {
                reason: "timed out".into(),
                headers: true
            })
        );
        m.headers_failed("u1");
        assert!(!m.due("u1").expect("due").headers);
        assert!(m.failed("u2", "too large", true));
        m.failed("u3", "x", false);
        m.succeeded("u3");
        assert_eq!(m.failures("u3"), 0);
        m.quarantine("u1").expect("saved");
        assert!(m.is_aside("u1") && m.due("u1").is_none());
        // It stays quarantined across a restart.
        let again = SeenUids::load_quarantine(dir.path(), "a@h:1").expect("reload");
        assert!(again.contains("u1") && !again.contains("u2"));
    }

    #[test]
    fn the_problem_alert_names_sender_subject_size_and_reason() {
        let headers = b"From: Nagios <nagios@example.test>\r\nSubject: Disk full\r\nMessage-ID: <m1@example.test>\r\n\r\n";
        let p = Problem {
            uid: "00000001",
            size: 10_000_000,
            reason: "reply to RETR larger than 1000 bytes (skipped)",
            headers,
            deleted: false,
        };
        let m = problem_alert(&p, &MailOptions::default());
        assert_eq!(m.alert.subject, "Mail quarantined: Disk full");
        assert_eq!(m.alert.severity, Severity::HIGH);
        assert_eq!(m.sender.as_deref(), Some("nagios@example.test"));
        let l = &m.alert.labels;
        assert_eq!(l["mail.problem"], p.reason);
        assert_eq!(l["mail.size"], "10000000");
        assert_eq!(l["mail.from"], "nagios@example.test");
        assert_eq!(l["mail.subject"], "Disk full");
        assert!(
            m.alert.body.contains("left on the server"),
            "{}",
            m.alert.body
        );
        // Without headers it still says what it knows.
        let m = problem_alert(&Problem { headers: b"", ..p }, &MailOptions::default());
        assert_eq!(m.alert.subject, "Mail quarantined: (subject unknown)");
        assert_eq!(m.sender, None);
        assert!(m.alert.body.contains("From: (unknown)"));
    }
}
