//! What the host keeps about an alert: the alert itself, where it came from, and each
//! recipient's outcome. This is what the queue stores and the admin API shows.

use std::collections::BTreeMap;

use alertbridge_plugin_api::{Alert, Severity};
use serde::{Deserialize, Serialize};

/// The source name of incident pages in the queue: alerts the incident engine writes, which
/// dispatch and templates know by it.
pub const PAGE_SOURCE: &str = "incidents";

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not yet tried, or waiting for a retry.
    Pending,
    /// Offline; re-checked until online or the route's `max_wait_secs`.
    Held,
    Delivered,
    /// Offline (or expired) and the policy said not to send.
    Skipped,
    /// Gave up: a permanent failure, or retries exhausted (dead-lettered).
    Failed,
    /// An active silence matched the alert: not delivered (the record names the silence).
    Silenced,
}

impl Outcome {
    /// True if and only if nothing more will happen to this recipient.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Skipped | Self::Failed | Self::Silenced
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Held => "held",
            Self::Delivered => "delivered",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Silenced => "silenced",
        }
    }
}

/// One recipient of an alert through one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRecord {
    pub route: String,
    pub sink: String,
    pub user: String,
    pub outcome: Outcome,
    /// Why: the sink's detail, the presence seen, the policy applied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub attempts: u32,
    /// When held: first found offline (Unix ms), for `max_wait_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since_ms: Option<i64>,
    /// Not before this instant (Unix ms): retry backoff, hold re-check, rate limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<i64>,
    pub updated_ms: i64,
    /// A send to this recipient began (recorded durably before the sink is called) and has no
    /// outcome yet. Still set after a restart, the send is *uncertain*: the recipient may or may
    /// not have the message (`[delivery] on_uncertain`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub sending: bool,
    /// The recipient may already have this alert (a send was uncertain after a restart): every
    /// message sent to them for it from then on is marked as a repeat.
    #[serde(default, skip_serializing_if = "is_false")]
    pub repeat: bool,
    /// The digest that carries (or last tried to carry) this alert to this recipient: one IM
    /// summarizing a route's group or what waited out the rate limit, named by the id of its
    /// first alert (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
    /// The silence that kept this alert from this recipient (outcome `silenced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An accepted alert and everything that has happened to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAlert {
    /// The queue's key; not part of the stored document.
    #[serde(skip)]
    pub id: u64,
    /// A random id, unique across hosts and data directories; sinks derive idempotency keys
    /// from it.
    pub uid: String,
    pub source: String,
    pub accepted_ms: i64,
    #[serde(with = "alert_serde")]
    pub alert: Alert,
    /// Empty until the alert has been routed.
    #[serde(default)]
    pub recipients: Vec<RecipientRecord>,
    #[serde(default)]
    pub routed: bool,
    /// Set when every recipient is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
}

impl StoredAlert {
    pub fn new(id: u64, source: &str, alert: Alert, accepted_ms: i64) -> Self {
        Self {
            id,
            uid: format!("{:032x}", rand::random::<u128>()),
            source: source.to_owned(),
            accepted_ms,
            alert,
            recipients: Vec::new(),
            routed: false,
            finished_ms: None,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished_ms.is_some()
    }
}

/// Serde for the plugin API's `Alert`, which has no serde of its own.
mod alert_serde {
    use super::*;

    /// The stored document, as read back.
    #[derive(Deserialize)]
    struct Doc {
        subject: String,
        #[serde(default)]
        body: String,
        severity: String,
        #[serde(default)]
        groups: Vec<String>,
        #[serde(default)]
        users: Vec<String>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        dedup_key: Option<String>,
        #[serde(default)]
        expires_ms: Option<i64>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
    }

    /// The document as written: borrowed from the alert, so a save copies nothing; empty
    /// fields are left out.
    #[derive(Serialize)]
    struct DocRef<'a> {
        subject: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        body: &'a str,
        severity: &'static str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        groups: &'a [String],
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        users: &'a [String],
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: &'a BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dedup_key: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_ms: Option<i64>,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        attributes: &'a BTreeMap<String, String>,
    }

    pub fn serialize<S: serde::Serializer>(a: &Alert, s: S) -> Result<S::Ok, S::Error> {
        DocRef {
            subject: &a.subject,
            body: &a.body,
            severity: a.severity.name(),
            groups: &a.groups,
            users: &a.users,
            labels: &a.labels,
            dedup_key: a.dedup_key.as_deref(),
            expires_ms: a.expires_unix_ms,
            attributes: &a.attributes,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Alert, D::Error> {
        let doc = Doc::deserialize(d)?;
        Ok(Alert {
            subject: doc.subject,
            body: doc.body,
            severity: Severity::from_name(&doc.severity).unwrap_or_default(),
            groups: doc.groups,
            users: doc.users,
            labels: doc.labels,
            dedup_key: doc.dedup_key,
            expires_unix_ms: doc.expires_ms,
            attributes: doc.attributes,
        })
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_alert_round_trips_through_json() {
        let mut a = Alert::new("Disk full");
        a.severity = Severity::CRITICAL;
        a.labels.insert("host".into(), "db01".into());
        a.dedup_key = Some("k".into());
        let mut s = StoredAlert::new(7, "mail", a, 1000);
        s.recipients.push(RecipientRecord {
            route: "r".into(),
            sink: "lync".into(),
            user: "sip:a@x".into(),
            outcome: Outcome::Held,
            reason: "offline".into(),
            attempts: 1,
            held_since_ms: Some(5),
            not_before_ms: Some(10),
            updated_ms: 5,
            sending: true,
            repeat: true,
            digest: Some(7),
            silence: Some(3),
        });
        let json = serde_json::to_vec(&s).unwrap();
        let mut back = serde_json::from_slice::<StoredAlert>(&json).unwrap();
        assert_eq!(
            back.id, 0,
            "the id is the queue's key, not part of the document"
        );
        back.id = s.id;
        assert_eq!(back, s);
    }
}
