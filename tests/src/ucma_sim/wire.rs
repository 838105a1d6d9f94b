//! The JSON documents of the UCMA bridge protocol (docs/ucma-bridge-protocol.md), server side,
//! and the availability scale they use.

use serde::{Deserialize, Serialize};

/// A presence availability of §4.2, with the value the simulator publishes for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Availability {
    Online,
    IdleOnline,
    Busy,
    IdleBusy,
    DoNotDisturb,
    BeRightBack,
    Away,
    Offline,
    Unknown,
}

impl Availability {
    pub const ALL: [Self; 9] = [
        Self::Online,
        Self::IdleOnline,
        Self::Busy,
        Self::IdleBusy,
        Self::DoNotDisturb,
        Self::BeRightBack,
        Self::Away,
        Self::Offline,
        Self::Unknown,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::IdleOnline => "IdleOnline",
            Self::Busy => "Busy",
            Self::IdleBusy => "IdleBusy",
            Self::DoNotDisturb => "DoNotDisturb",
            Self::BeRightBack => "BeRightBack",
            Self::Away => "Away",
            Self::Offline => "Offline",
            Self::Unknown => "Unknown",
        }
    }

    /// Parses a wire name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The `AvailabilityValue` a Lync 2010 client publishes for this state.
    pub fn published_value(self) -> i64 {
        match self {
            Self::Online => 3500,
            Self::IdleOnline => 5000,
            Self::Busy => 6500,
            Self::IdleBusy => 7500,
            Self::DoNotDisturb => 9500,
            Self::BeRightBack => 12500,
            Self::Away => 15500,
            Self::Offline => 18000,
            Self::Unknown => -1,
        }
    }
}

/// `POST /v1/presence/query` request.
#[derive(Debug, Deserialize)]
pub struct PresenceQuery {
    pub targets: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    /// `max_age_s` is accepted and ignored: the simulator has no presence cache, every answer
    /// is `"source":"query"`.
    pub timeout_ms: Option<u64>,
}

/// One target's answer in `POST /v1/presence/query`.
#[derive(Debug, Serialize)]
pub struct PresenceResult {
    pub target: String,
    pub availability: Availability,
    pub availability_value: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecipientError>,
}

/// `POST /v1/messages` request.
#[derive(Clone, Debug, Deserialize)]
pub struct SendRequest {
    pub to: Vec<String>,
    pub body: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub importance: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub toast: Option<String>,
    #[serde(default)]
    pub skip_if: Vec<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub wait: Option<bool>,
}

/// The message document of §4.3 / §4.4.
#[derive(Clone, Debug, Serialize)]
pub struct MessageDoc {
    pub id: String,
    pub state: &'static str,
    pub created_at: String,
    pub recipients: Vec<RecipientDoc>,
}

/// One recipient's entry in a message document.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientDoc {
    pub to: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_before: Option<Availability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecipientError>,
    /// The conversation the bridge keeps open with this recipient after a delivered session
    /// IM (§4.8): replies in it come back on `/v1/inbound`, answers go into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
}

impl RecipientDoc {
    /// True once the recipient needs no further attempt under its key (§3).
    pub fn is_final(&self) -> bool {
        match self.status {
            "delivered" | "sent" | "skipped" => true,
            "failed" => self.error.as_ref().is_some_and(|e| !e.retryable),
            _ => false,
        }
    }
}

/// A per-recipient (or per-target) error of §5.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientError {
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    pub reason: String,
    pub retryable: bool,
}

impl RecipientError {
    /// The error a final SIP status other than 200 stands for, per the table of §5.
    pub fn from_sip(status: u16) -> Self {
        let (code, reason, retryable) = match status {
            480 => ("unavailable", "Temporarily Unavailable", true),
            486 => ("busy", "Busy Here", true),
            603 => ("declined", "Decline", false),
            404 => ("not_found", "Not Found", false),
            604 => ("not_found", "Does Not Exist Anywhere", false),
            403 => ("forbidden", "Forbidden", false),
            408 => ("timeout", "Request Timeout", true),
            _ => ("bridge_error", "Server Error", true),
        };
        Self {
            code,
            sip_status: Some(status),
            reason: reason.to_owned(),
            retryable,
        }
    }

    /// An error without a SIP response.
    pub fn other(code: &'static str, reason: &str, retryable: bool) -> Self {
        Self {
            code,
            sip_status: None,
            reason: reason.to_owned(),
            retryable,
        }
    }
}

/// One message a user sent the bot (§4.5): in a conversation the bridge started for a page
/// (`kind` `reply`) or in one the user started (`new`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InboundMessage {
    pub cursor: u64,
    pub id: String,
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub text: String,
    pub conversation: String,
    pub kind: &'static str,
    pub received_at: String,
}

/// `POST /v1/inbound/ack`.
#[derive(Debug, Deserialize)]
pub struct AckRequest {
    pub up_to: u64,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize)]
pub struct SayRequest {
    pub to: String,
    pub text: String,
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The body of every request-level error (§6).
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    pub retryable: bool,
}

/// True if `uri` has the shape `sip:user@host` the bridge can place a call to.
pub fn is_sip_uri(uri: &str) -> bool {
    let Some(rest) = uri.strip_prefix("sip:") else {
        return false;
    };
    let Some((user, host)) = rest.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !host.is_empty()
        && !rest.contains(char::is_whitespace)
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

/// Formats Unix seconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(unix_s: u64) -> String {
    let days = i64::try_from(unix_s / 86_400).unwrap_or(i64::MAX);
    let secs = unix_s % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Now, as Unix seconds.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_119_200), "2026-12-01T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn sip_uris_are_recognised() {
        assert!(is_sip_uri("sip:alice@contoso.com"));
        assert!(!is_sip_uri("alice@contoso.com"));
        assert!(!is_sip_uri("sip:alice"));
        assert!(!is_sip_uri("sip:@contoso.com"));
        assert!(!is_sip_uri("sip:al ice@contoso.com"));
    }

    #[test]
    fn only_final_outcomes_are_final() {
        let mut r = RecipientDoc {
            to: "sip:a@b".into(),
            status: "failed",
            presence_before: None,
            sip_status: Some(480),
            completed_at: None,
            error: Some(RecipientError::from_sip(480)),
            conversation: None,
        };
        assert!(!r.is_final());
        r.error = Some(RecipientError::from_sip(603));
        assert!(r.is_final());
        r.status = "pending";
        assert!(!r.is_final());
    }
}
