//! The same data in plain Rust types, for plugin code and the host, with the conversions to and
//! from the `Ffi*` types that cross the boundary.

use std::{collections::BTreeMap, fmt, time::Duration};

use abi_stable::std_types::{RString, RVec, Tuple2};

use crate::types::{
    DeliveryStatus, ErrorKind, FfiAlert, FfiError, FfiHealth, FfiMessage, FfiPairs, FfiPresence,
    FfiRecipientResult, HealthState, PresenceState, Severity,
};

/// An alert as a source builds it. Only `subject` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Alert {
    pub subject: String,
    pub body: String,
    pub severity: Severity,
    /// Groups named inside the alert.
    pub groups: Vec<String>,
    /// Users (SIP URIs) named inside the alert.
    pub users: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// A key the host de-duplicates on within its dedup window.
    pub dedup_key: Option<String>,
    /// After this instant (Unix milliseconds) the alert is no longer worth delivering.
    pub expires_unix_ms: Option<i64>,
    /// Extra data without a field of its own.
    pub attributes: BTreeMap<String, String>,
}

impl Alert {
    /// An alert with this subject and every other field at its default.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Whether the alert fires or says its problem is over: [`AlertStatus::Resolved`] when
    /// attribute [`STATUS_ATTRIBUTE`] is `resolved`, else [`AlertStatus::Firing`] (also for
    /// any other value, so an unknown status never turns a page into a resolve).
    pub fn status(&self) -> AlertStatus {
        match self.attributes.get(STATUS_ATTRIBUTE).map(String::as_str) {
            Some("resolved") => AlertStatus::Resolved,
            _ => AlertStatus::Firing,
        }
    }

    /// Sets the status: `Resolved` puts attribute `status = resolved`, `Firing` takes it off.
    pub fn set_status(&mut self, status: AlertStatus) {
        match status {
            AlertStatus::Resolved => {
                self.attributes
                    .insert(STATUS_ATTRIBUTE.to_owned(), status.as_str().to_owned());
            }
            AlertStatus::Firing => {
                self.attributes.remove(STATUS_ATTRIBUTE);
            }
        }
    }

    /// The alert with this status ([`Alert::set_status`]).
    pub fn with_status(mut self, status: AlertStatus) -> Self {
        self.set_status(status);
        self
    }
}

/// The attribute of an alert that carries its status (`FfiAlert.attributes["status"]`): the
/// value `resolved` says the problem is over; absent means firing.
pub const STATUS_ATTRIBUTE: &str = "status";

/// Whether an alert reports a problem (`Firing`, the default) or its end (`Resolved`: the host
/// resolves the open incident with the same dedup key and pages nobody).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AlertStatus {
    #[default]
    Firing,
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`, as the alert format writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

impl fmt::Display for AlertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is neither `firing` nor `resolved`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}, expected firing or resolved")]
pub struct UnknownStatus(pub String);

impl std::str::FromStr for AlertStatus {
    type Err = UnknownStatus;

    /// `firing` or `resolved`, in any letter case, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "firing" => Ok(Self::Firing),
            "resolved" => Ok(Self::Resolved),
            _ => Err(UnknownStatus(s.to_owned())),
        }
    }
}

/// One delivery attempt of an alert to some recipients of one sink.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub alert_id: u64,
    pub attempt: u32,
    pub source: String,
    pub subject: String,
    pub body: String,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub recipients: Vec<String>,
    pub attributes: BTreeMap<String, String>,
}

/// What the host puts before the subject and the text of a message its recipients may already
/// have: a send that a restart caught between its start and its outcome. The attribute
/// [`REPEAT_ATTRIBUTE`] `= after_restart` says the mark is there.
pub const REPEAT_MARK: &str = "(repeat after restart)";

/// The attribute that flags a repeat after a restart (value `after_restart`).
pub const REPEAT_ATTRIBUTE: &str = "repeat";

/// The attribute with the message's text as HTML, rendered by the host from the operator's
/// template: every alert value escaped, the template's own markup kept. A sink that sends HTML
/// sends it instead of escaping `body` itself; absent when no template applies.
pub const HTML_BODY_ATTRIBUTE: &str = "body_html";

impl Message {
    /// True for a send the host repeats after a restart (its text carries [`REPEAT_MARK`]).
    pub fn is_repeat(&self) -> bool {
        self.attributes.get(REPEAT_ATTRIBUTE).map(String::as_str) == Some("after_restart")
    }

    /// The host's HTML form of the text ([`HTML_BODY_ATTRIBUTE`]), if a template made one.
    pub fn html_body(&self) -> Option<&str> {
        self.attributes.get(HTML_BODY_ATTRIBUTE).map(String::as_str)
    }

    /// Takes the host's repeat mark off again. Only for a sink whose far end drops a second copy
    /// by itself (an idempotency key over the content): sent exactly as the first time, the
    /// repeat is answered from the far end's store and no user sees it twice.
    pub fn unmark_repeat(&mut self) {
        if !self.is_repeat() {
            return;
        }
        let html = self.attributes.get_mut(HTML_BODY_ATTRIBUTE);
        for text in [&mut self.subject, &mut self.body].into_iter().chain(html) {
            if let Some(rest) = text.strip_prefix(REPEAT_MARK) {
                *text = rest.strip_prefix(' ').unwrap_or(rest).to_owned();
            }
        }
        self.attributes.remove(REPEAT_ATTRIBUTE);
    }
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    pub user: String,
    pub state: PresenceState,
    pub detail: String,
}

impl Presence {
    pub fn new(user: impl Into<String>, state: PresenceState) -> Self {
        Self {
            user: user.into(),
            state,
            detail: String::new(),
        }
    }
}

/// The outcome of a delivery for one recipient.
///
/// Build it with [`RecipientResult::new`] / [`RecipientResult::delivered`] and the `with_*`
/// methods; data added after API 1.0 goes into `attributes` (the wire's
/// `FfiRecipientResult.attributes`), read and written through methods such as
/// [`RecipientResult::with_conversation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    pub user: String,
    pub status: DeliveryStatus,
    pub detail: String,
    pub retry_after: Option<Duration>,
    /// Extra data without a field of its own (wire: `FfiRecipientResult.attributes`).
    pub attributes: BTreeMap<String, String>,
}

/// The attribute of a recipient's outcome naming the conversation the page went out in, for a
/// sink that hears replies there (`conversation.send/1` answers into it).
pub const CONVERSATION_ATTRIBUTE: &str = "conversation";

impl RecipientResult {
    pub fn new(user: impl Into<String>, status: DeliveryStatus, detail: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            status,
            detail: detail.into(),
            retry_after: None,
            attributes: BTreeMap::new(),
        }
    }

    pub fn delivered(user: impl Into<String>) -> Self {
        Self::new(user, DeliveryStatus::DELIVERED, "")
    }

    /// Sets the retry advice.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Names the conversation the page went out in (attribute [`CONVERSATION_ATTRIBUTE`]): a
    /// reference of at most [`MAX_CONVERSATION_BYTES`] that the sink can later answer into
    /// (`conversation.send/1`) and that its inbound messages in that conversation carry. An
    /// empty or longer reference is left out (the host then has none for this page).
    pub fn with_conversation(mut self, conversation: impl Into<String>) -> Self {
        let conversation = conversation.into();
        if conversation.is_empty() || conversation.len() > MAX_CONVERSATION_BYTES {
            tracing::warn!(
                user = %self.user,
                bytes = conversation.len(),
                "A conversation reference that is empty or longer than 512 bytes is left out."
            );
        } else {
            self.attributes
                .insert(CONVERSATION_ATTRIBUTE.to_owned(), conversation);
        }
        self
    }

    /// The conversation the page went out in, if the sink named one.
    pub fn conversation(&self) -> Option<&str> {
        self.attributes
            .get(CONVERSATION_ATTRIBUTE)
            .map(String::as_str)
            .filter(|c| !c.is_empty())
    }
}

/// The largest conversation reference, in bytes (`inbound.message/1`, recipient outcomes).
pub const MAX_CONVERSATION_BYTES: usize = 512;

/// An error a plugin reports to the host, or the host to a plugin.
///
/// The boundary carries a message, not a cause chain, so the constructors render the whole
/// chain of the error they are given (`"connect: connection refused"`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
pub struct PluginError {
    pub kind: ErrorKind,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// For a config error about one key: its dotted path (`tls.ca_file`), which the host maps
    /// to a line of its config file.
    pub key: Option<String>,
}

impl PluginError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after: None,
            key: None,
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFIG, message)
    }

    /// A transient error built from an error and its causes.
    pub fn transient(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(ErrorKind::TRANSIENT, error_chain(error))
    }

    /// A permanent error built from an error and its causes.
    pub fn permanent(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(ErrorKind::PERMANENT, error_chain(error))
    }

    /// True if and only if the same call may succeed later unchanged: a `TRANSIENT` error, or
    /// the other side stopping (`SHUTTING_DOWN`). Every plugin's error type answers the same
    /// question under the same name.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::TRANSIENT | ErrorKind::SHUTTING_DOWN)
    }

    /// Sets the retry advice.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// Renders an error and its sources as `outer: inner: innermost`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors repeat their cause in their own message; do not say it twice.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// An instance's health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    pub message: String,
}

impl Health {
    pub fn ok() -> Self {
        Self {
            state: HealthState::OK,
            message: String::new(),
        }
    }

    pub fn new(state: HealthState, message: impl Into<String>) -> Self {
        Self {
            state,
            message: message.into(),
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.state)
        } else {
            write!(f, "{}: {}", self.state, self.message)
        }
    }
}

fn strings(v: &[String]) -> RVec<RString> {
    v.iter().map(|s| RString::from(s.as_str())).collect()
}

fn from_strings(v: &RVec<RString>) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn pairs(map: &BTreeMap<String, String>) -> FfiPairs {
    map.iter()
        .map(|(k, v)| Tuple2(RString::from(k.as_str()), RString::from(v.as_str())))
        .collect()
}

fn from_pairs(p: &FfiPairs) -> BTreeMap<String, String> {
    p.iter()
        .map(|Tuple2(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

fn from_millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

impl From<&Alert> for FfiAlert {
    fn from(a: &Alert) -> Self {
        Self {
            subject: a.subject.as_str().into(),
            body: a.body.as_str().into(),
            severity: a.severity,
            groups: strings(&a.groups),
            users: strings(&a.users),
            labels: pairs(&a.labels),
            dedup_key: a.dedup_key.as_deref().unwrap_or_default().into(),
            expires_unix_ms: a.expires_unix_ms.unwrap_or(0),
            attributes: pairs(&a.attributes),
        }
    }
}

impl From<&FfiAlert> for Alert {
    fn from(a: &FfiAlert) -> Self {
        Self {
            subject: a.subject.to_string(),
            body: a.body.to_string(),
            severity: a.severity,
            groups: from_strings(&a.groups),
            users: from_strings(&a.users),
            labels: from_pairs(&a.labels),
            dedup_key: (!a.dedup_key.is_empty()).then(|| a.dedup_key.to_string()),
            expires_unix_ms: (a.expires_unix_ms != 0).then_some(a.expires_unix_ms),
            attributes: from_pairs(&a.attributes),
        }
    }
}

impl From<&Message> for FfiMessage {
    fn from(m: &Message) -> Self {
        Self {
            alert_id: m.alert_id,
            attempt: m.attempt,
            source: m.source.as_str().into(),
            subject: m.subject.as_str().into(),
            body: m.body.as_str().into(),
            severity: m.severity,
            labels: pairs(&m.labels),
            recipients: strings(&m.recipients),
            attributes: pairs(&m.attributes),
        }
    }
}

impl From<&FfiMessage> for Message {
    fn from(m: &FfiMessage) -> Self {
        Self {
            alert_id: m.alert_id,
            attempt: m.attempt,
            source: m.source.to_string(),
            subject: m.subject.to_string(),
            body: m.body.to_string(),
            severity: m.severity,
            labels: from_pairs(&m.labels),
            recipients: from_strings(&m.recipients),
            attributes: from_pairs(&m.attributes),
        }
    }
}

impl From<&Presence> for FfiPresence {
    fn from(p: &Presence) -> Self {
        Self {
            user: p.user.as_str().into(),
            state: p.state,
            detail: p.detail.as_str().into(),
            attributes: FfiPairs::new(),
        }
    }
}

impl From<&FfiPresence> for Presence {
    fn from(p: &FfiPresence) -> Self {
        Self {
            user: p.user.to_string(),
            state: p.state,
            detail: p.detail.to_string(),
        }
    }
}

impl From<&RecipientResult> for FfiRecipientResult {
    fn from(r: &RecipientResult) -> Self {
        Self {
            user: r.user.as_str().into(),
            status: r.status,
            detail: r.detail.as_str().into(),
            retry_after_ms: millis(r.retry_after),
            attributes: pairs(&r.attributes),
        }
    }
}

impl From<&FfiRecipientResult> for RecipientResult {
    fn from(r: &FfiRecipientResult) -> Self {
        Self {
            user: r.user.to_string(),
            status: r.status,
            detail: r.detail.to_string(),
            retry_after: from_millis(r.retry_after_ms),
            attributes: from_pairs(&r.attributes),
        }
    }
}

impl From<&PluginError> for FfiError {
    fn from(e: &PluginError) -> Self {
        Self {
            kind: e.kind,
            message: e.message.as_str().into(),
            retry_after_ms: millis(e.retry_after),
            key: e.key.as_deref().unwrap_or_default().into(),
            attributes: FfiPairs::new(),
        }
    }
}

impl From<PluginError> for FfiError {
    fn from(e: PluginError) -> Self {
        Self::from(&e)
    }
}

impl From<&FfiError> for PluginError {
    fn from(e: &FfiError) -> Self {
        Self {
            kind: e.kind,
            message: e.message.to_string(),
            retry_after: from_millis(e.retry_after_ms),
            key: Some(e.key.to_string()).filter(|k| !k.is_empty()),
        }
    }
}

impl From<FfiError> for PluginError {
    fn from(e: FfiError) -> Self {
        Self::from(&e)
    }
}

impl From<&Health> for FfiHealth {
    fn from(h: &Health) -> Self {
        Self {
            state: h.state,
            message: h.message.as_str().into(),
            attributes: FfiPairs::new(),
        }
    }
}

impl From<&FfiHealth> for Health {
    fn from(h: &FfiHealth) -> Self {
        Self {
            state: h.state,
            message: h.message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_unmarked_only_when_flagged() {
        let mut m = Message {
            subject: format!("{REPEAT_MARK} Disk full"),
            body: format!("{REPEAT_MARK} /var at 98%"),
            attributes: [(
                HTML_BODY_ATTRIBUTE.into(),
                format!("{REPEAT_MARK} <i>/var</i>"),
            )]
            .into(),
            ..Message::default()
        };
        let unflagged = m.clone();
        m.unmark_repeat();
        assert_eq!(m, unflagged, "no attribute: the text is the sender's own");
        m.attributes
            .insert(REPEAT_ATTRIBUTE.into(), "after_restart".into());
        assert!(m.is_repeat());
        m.unmark_repeat();
        assert_eq!(
            (m.subject.as_str(), m.body.as_str()),
            ("Disk full", "/var at 98%")
        );
        assert_eq!(m.html_body(), Some("<i>/var</i>"));
        assert!(!m.is_repeat());
    }

    #[test]
    fn alert_round_trips_through_ffi() {
        let mut a = Alert::new("Disk full on db01");
        a.body = "/var is at 98% — ünïcode".into();
        a.severity = Severity::CRITICAL;
        a.groups = vec!["ops".into()];
        a.users = vec!["sip:carol@contoso.com".into()];
        a.labels.insert("host".into(), "db01".into());
        a.dedup_key = Some("db01-disk".into());
        a.expires_unix_ms = Some(1_796_119_200_000);
        a.attributes
            .insert("sender".into(), "nagios@contoso.com".into());
        assert_eq!(Alert::from(&FfiAlert::from(&a)), a);
        let empty = Alert::new("x");
        assert_eq!(Alert::from(&FfiAlert::from(&empty)), empty);
    }

    #[test]
    fn status_rides_in_the_attributes_and_unknown_values_fire() {
        let a = Alert::new("x").with_status(AlertStatus::Resolved);
        assert_eq!(a.status(), AlertStatus::Resolved);
        let ffi = FfiAlert::from(&a);
        assert!(
            ffi.attributes
                .iter()
                .any(|Tuple2(k, v)| k == "status" && v == "resolved")
        );
        assert_eq!(Alert::from(&ffi).status(), AlertStatus::Resolved);
        let mut b = a.clone();
        b.set_status(AlertStatus::Firing);
        assert!(b.attributes.is_empty());
        b.attributes.insert("status".into(), "RESOLVED?".into());
        assert_eq!(b.status(), AlertStatus::Firing, "only `resolved` resolves");
        assert_eq!(" Resolved ".parse(), Ok(AlertStatus::Resolved));
        assert_eq!(
            "ok".parse::<AlertStatus>().unwrap_err().to_string(),
            "unknown status \"ok\", expected firing or resolved"
        );
    }

    #[test]
    fn a_conversation_reaches_the_wire_and_back() {
        let r = RecipientResult::delivered("sip:alice@x").with_conversation("conv/1");
        assert_eq!(r.conversation(), Some("conv/1"));
        let ffi = FfiRecipientResult::from(&r);
        assert_eq!(ffi.attributes.len(), 1);
        assert_eq!(
            (ffi.attributes[0].0.as_str(), ffi.attributes[0].1.as_str()),
            ("conversation", "conv/1")
        );
        assert_eq!(RecipientResult::from(&ffi), r);
        // Unusable references are left out rather than sent.
        let none = RecipientResult::delivered("sip:a@x").with_conversation("");
        assert_eq!(none.conversation(), None);
        let long = RecipientResult::delivered("sip:a@x")
            .with_conversation("c".repeat(MAX_CONVERSATION_BYTES + 1));
        assert_eq!(long.conversation(), None);
        let max = RecipientResult::delivered("sip:a@x")
            .with_conversation("c".repeat(MAX_CONVERSATION_BYTES));
        assert!(max.conversation().is_some());
    }

    #[test]
    fn error_chain_renders_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("connect to 127.0.0.1:110")]
        struct Connect(#[source] std::io::Error);
        let e = PluginError::transient(&Connect(io));
        assert_eq!(e.message, "connect to 127.0.0.1:110: connection refused");
        assert_eq!(e.kind, ErrorKind::TRANSIENT);
    }

    #[test]
    fn retry_advice_survives_and_sub_millisecond_is_not_lost() {
        let e = PluginError::config("x").retry_after(Duration::from_micros(10));
        assert_eq!(
            PluginError::from(FfiError::from(&e)).retry_after,
            Some(Duration::from_millis(1))
        );
    }
}
