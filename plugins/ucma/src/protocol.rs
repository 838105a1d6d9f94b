//! The bridge protocol (docs/ucma-bridge-protocol.md) as the client sees it: the JSON
//! documents, the idempotency key, the request signature, and the pure mappings from the
//! bridge's answers to alertbridge's presence states and delivery statuses.

use std::time::Duration;

use alertbridge_plugin_api::{DeliveryStatus, Message, PresenceState, RecipientResult, Severity};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

/// The IM body limit of §4.3.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The toast limit of §4.3, in UTF-16 code units (a .NET `string.Length`).
pub const MAX_TOAST_UTF16: usize = 256;
/// What ends a body that was cut to fit (§4.3: truncation is marked).
pub const BODY_CUT_MARK: &str = "\n[truncated]";
/// What ends a toast that was cut to fit.
pub const TOAST_CUT_MARK: char = '\u{2026}';
/// The most of any text from the bridge (an error's reason or message) that is kept.
pub const MAX_BRIDGE_TEXT_CHARS: usize = 300;

/// `POST /v1/presence/query`.
#[derive(Debug, Serialize)]
pub struct PresenceQuery<'a> {
    pub targets: &'a [String],
    pub categories: [&'static str; 1],
    pub timeout_ms: u64,
}

/// The answer to a presence query.
#[derive(Debug, Deserialize)]
pub struct PresenceAnswer {
    pub results: Vec<PresenceResult>,
}

#[derive(Debug, Deserialize)]
pub struct PresenceResult {
    pub target: String,
    #[serde(default)]
    pub availability: String,
    #[serde(default = "unknown_value")]
    pub availability_value: i64,
    #[serde(default)]
    pub activity: Option<String>,
    #[serde(default)]
    pub error: Option<WireError>,
}

fn unknown_value() -> i64 {
    -1
}

/// `POST /v1/messages`. Field order is fixed, so the same message serializes to the same bytes
/// on every attempt, as the idempotency store requires (§3).
#[derive(Debug, Serialize)]
pub struct SendBody<'a> {
    pub to: &'a [String],
    pub subject: &'a str,
    pub importance: &'static str,
    pub content_type: &'static str,
    pub body: String,
    pub toast: String,
    pub mode: &'static str,
    pub timeout_ms: u64,
    pub wait: bool,
}

impl<'a> SendBody<'a> {
    /// The send of `message` to `to`.
    pub fn new(
        message: &'a Message,
        to: &'a [String],
        mode: &'static str,
        timeout_ms: u64,
    ) -> Self {
        let mut body = message.subject.clone();
        if !message.body.trim().is_empty() {
            body.push('\n');
            body.push_str(message.body.trim_end());
        }
        Self {
            to,
            subject: &message.subject,
            importance: if message.severity >= Severity::HIGH {
                "urgent"
            } else {
                "normal"
            },
            content_type: "text/plain",
            body: mark_cut_bytes(body, MAX_BODY_BYTES),
            toast: toast(&message.subject),
            mode,
            timeout_ms,
            wait: true,
        }
    }
}

/// `text` cut to at most `max` UTF-8 bytes, ending with [`BODY_CUT_MARK`] when it was cut.
pub fn mark_cut_bytes(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = truncate_bytes(text, max.saturating_sub(BODY_CUT_MARK.len()));
    cut.push_str(BODY_CUT_MARK);
    cut
}

/// The toast for `subject`: at most [`MAX_TOAST_UTF16`] UTF-16 code units, never splitting a
/// surrogate pair, ending with [`TOAST_CUT_MARK`] when it was cut.
pub fn toast(subject: &str) -> String {
    if subject.encode_utf16().count() <= MAX_TOAST_UTF16 {
        return subject.to_owned();
    }
    let room = MAX_TOAST_UTF16 - TOAST_CUT_MARK.len_utf16();
    let mut out = String::new();
    let mut used = 0;
    for c in subject.chars() {
        if used + c.len_utf16() > room {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push(TOAST_CUT_MARK);
    out
}

/// Text from the bridge, kept to [`MAX_BRIDGE_TEXT_CHARS`] characters (a hostile bridge cannot
/// fill the host's records and logs through an error reason).
pub fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_BRIDGE_TEXT_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_BRIDGE_TEXT_CHARS).collect();
    out.push(TOAST_CUT_MARK);
    out
}

fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The message document of §4.3 / §4.4.
#[derive(Debug, Deserialize)]
pub struct MessageDoc {
    pub id: String,
    pub state: String,
    #[serde(default)]
    pub recipients: Vec<RecipientDoc>,
}

#[derive(Debug, Deserialize)]
pub struct RecipientDoc {
    pub to: String,
    pub status: String,
    #[serde(default)]
    pub error: Option<WireError>,
    /// The conversation the bridge keeps open for replies (§4.8), if it does.
    #[serde(default)]
    pub conversation: Option<String>,
}

/// The answer to `GET /v1/inbound` (§4.5). Messages are read one by one
/// ([`InboundDoc`]) so that one malformed entry does not hide the others.
#[derive(Debug, Deserialize)]
pub struct InboundAnswer {
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub dropped: u64,
}

/// One inbound message (§4.5).
#[derive(Debug, Deserialize)]
pub struct InboundDoc {
    pub cursor: u64,
    pub id: String,
    pub from: String,
    #[serde(default)]
    pub name: Option<String>,
    pub text: String,
    pub conversation: String,
}

/// `POST /v1/inbound/ack`.
#[derive(Debug, Serialize)]
pub struct AckBody {
    pub up_to: u64,
}

/// `POST /v1/conversations/{id}/messages` (§4.7).
#[derive(Debug, Serialize)]
pub struct SayBody<'a> {
    pub to: &'a str,
    pub text: &'a str,
    pub content_type: &'static str,
}

/// Its answer.
#[derive(Debug, Deserialize)]
pub struct SayAnswer {
    #[serde(default)]
    pub conversation: Option<String>,
    pub status: String,
    #[serde(default)]
    pub error: Option<WireError>,
}

/// The most of a sender's text handed to the host (the plugin API's bound for
/// `inbound.message/1`).
pub const MAX_INBOUND_TEXT_BYTES: usize = 4 * 1024;
/// The longest conversation reference handed to the host.
pub const MAX_CONVERSATION_BYTES: usize = 512;
/// The longest sender URI and message id accepted from the bridge.
pub const MAX_URI_BYTES: usize = 256;

/// A message checked for the host: the sender's URI lower-cased, text trimmed and cut to
/// [`MAX_INBOUND_TEXT_BYTES`]; `Err` says why it cannot be handed over.
pub fn checked_inbound(doc: &InboundDoc) -> Result<InboundDoc, String> {
    let from = doc.from.trim().to_ascii_lowercase();
    let rest = from.strip_prefix("sip:").unwrap_or_default();
    let valid_uri = from.len() <= MAX_URI_BYTES
        && rest
            .split_once('@')
            .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty())
        && from.bytes().all(|b| b.is_ascii_graphic());
    if !valid_uri {
        return Err(format!(
            "sender `{}` is not a sip:user@host URI",
            clip(&doc.from)
        ));
    }
    let printable = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !printable(&doc.conversation, MAX_CONVERSATION_BYTES) {
        return Err(format!(
            "conversation reference is not 1..={MAX_CONVERSATION_BYTES} printable ASCII characters"
        ));
    }
    if !printable(&doc.id, MAX_URI_BYTES) {
        return Err(format!(
            "message id is not 1..={MAX_URI_BYTES} printable ASCII characters"
        ));
    }
    let text = truncate_bytes(doc.text.trim().to_owned(), MAX_INBOUND_TEXT_BYTES);
    if text.is_empty() {
        return Err("empty text".to_owned());
    }
    Ok(InboundDoc {
        cursor: doc.cursor,
        id: doc.id.clone(),
        from,
        name: doc
            .name
            .as_deref()
            .map(|n| clip(n.trim()))
            .filter(|n| !n.is_empty()),
        text,
        conversation: doc.conversation.clone(),
    })
}

/// The key of one answer into a conversation (§4.7): the same for a retry of the same answer
/// (`nonce` is the host's id of it when it gives one, else one per call).
pub fn answer_key(
    instance: &str,
    conversation: &str,
    user: &str,
    text: &str,
    nonce: &str,
) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [instance, conversation, user, text, nonce] {
        ctx.update(part.as_bytes());
        ctx.update(b"\n");
    }
    let hash = hex::encode(ctx.finish());
    format!("ab1c-{}", &hash[..32])
}

/// A per-recipient error of §5.
#[derive(Debug, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub sip_status: Option<u16>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub retryable: bool,
}

/// `GET /v1/health`.
#[derive(Debug, Deserialize)]
pub struct HealthDoc {
    pub status: String,
    /// Why the bridge is `degraded` or `down` (§4.1), if it says.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub endpoint: Option<EndpointDoc>,
    #[serde(default)]
    pub limits: Option<LimitsDoc>,
}

#[derive(Debug, Deserialize)]
pub struct EndpointDoc {
    #[serde(default)]
    pub uri: String,
    #[serde(default)]
    pub state: String,
}

#[derive(Clone, Copy, Debug, Deserialize)]
pub struct LimitsDoc {
    pub max_presence_targets: usize,
    pub max_recipients: usize,
}

/// The body of a request-level error (§6).
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

/// The key of the send of `message` to `recipients` (sorted) by sink `instance`: the same on
/// every attempt, different for different content (§8). It rests on the host's `alert_uid`
/// (unique across hosts and data directories), not on the queue id, which starts again at 1
/// in a new data directory and is shared by two hosts.
pub fn idempotency_key(instance: &str, message: &Message, recipients: &[String]) -> String {
    let alert = message
        .attributes
        .get("alert_uid")
        .cloned()
        .unwrap_or_else(|| message.alert_id.to_string());
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [
        instance,
        &alert,
        &message.source,
        &message.subject,
        &message.body,
    ] {
        ctx.update(part.as_bytes());
        ctx.update(b"\n");
    }
    for r in recipients {
        ctx.update(r.as_bytes());
        ctx.update(b"\n");
    }
    let hash = hex::encode(ctx.finish());
    format!("ab1-{}", &hash[..32])
}

/// The parts of a request that its signature covers (§2.3).
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    /// The `Idempotency-Key` header, `""` when the request has none.
    pub idempotency_key: &'a str,
    pub body: &'a [u8],
}

/// The `X-Bridge-Signature` value of §2.3 (scheme `v2`: the idempotency key is signed too, so a
/// captured send cannot be replayed under a fresh key as a second IM).
pub fn signature(secret: &[u8], unix_s: u64, parts: &Signed<'_>) -> String {
    let body_hash = hex::encode(digest::digest(&digest::SHA256, parts.body));
    let text = format!(
        "v2\n{unix_s}\n{}\n{}\n{}\n{body_hash}",
        parts.method, parts.path_and_query, parts.idempotency_key
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("v2={}", hex::encode(hmac::sign(&key, text.as_bytes())))
}

/// A presence answer as alertbridge's presence state, by name, else by value range (§4.2).
/// The same mapping as the `ucwa` sink's, so routes treat both alike: signed in but idle counts
/// as available (the IM still toasts on the user's desktop).
pub fn presence_state(availability: &str, value: i64) -> PresenceState {
    match availability {
        "Online" | "IdleOnline" => PresenceState::AVAILABLE,
        "BeRightBack" | "Away" => PresenceState::AWAY,
        "Busy" | "IdleBusy" => PresenceState::BUSY,
        "DoNotDisturb" => PresenceState::DO_NOT_DISTURB,
        "Offline" => PresenceState::OFFLINE,
        "Unknown" => PresenceState::UNKNOWN,
        _ => match value {
            ..0 => PresenceState::UNKNOWN,
            0..6000 => PresenceState::AVAILABLE,
            6000..9000 => PresenceState::BUSY,
            9000..12000 => PresenceState::DO_NOT_DISTURB,
            12000..18000 => PresenceState::AWAY,
            _ => PresenceState::OFFLINE,
        },
    }
}

/// How long to wait before asking again about a recipient still pending at the bridge.
pub const PENDING_RETRY: Duration = Duration::from_secs(1);

/// One recipient's entry as a delivery result (§5).
pub fn recipient_result(doc: &RecipientDoc) -> RecipientResult {
    let detail = || doc.error.as_ref().map(describe).unwrap_or_default();
    match doc.status.as_str() {
        "delivered" => RecipientResult::delivered(&doc.to),
        "sent" => RecipientResult::new(
            &doc.to,
            DeliveryStatus::DELIVERED,
            "page mode: sent, receipt not confirmed",
        ),
        "skipped" => RecipientResult::new(
            &doc.to,
            DeliveryStatus::OFFLINE,
            format!("skipped by the bridge: {}", detail()),
        ),
        "pending" => RecipientResult::new(
            &doc.to,
            DeliveryStatus::FAILED_TRANSIENT,
            "still pending at the bridge",
        )
        .retry_after(PENDING_RETRY),
        "failed" => {
            let Some(error) = &doc.error else {
                return RecipientResult::new(
                    &doc.to,
                    DeliveryStatus::FAILED_TRANSIENT,
                    "failed without a reason",
                );
            };
            let status = match error.code.as_str() {
                "unavailable" | "skipped_presence" => DeliveryStatus::OFFLINE,
                "declined" => DeliveryStatus::DECLINED,
                "not_found" => DeliveryStatus::NOT_FOUND,
                "busy" | "timeout" | "delivery_failed" | "bridge_error" => {
                    DeliveryStatus::FAILED_TRANSIENT
                }
                "forbidden" | "invalid_uri" => DeliveryStatus::FAILED_PERMANENT,
                _ if error.retryable => DeliveryStatus::FAILED_TRANSIENT,
                _ => DeliveryStatus::FAILED_PERMANENT,
            };
            RecipientResult::new(&doc.to, status, describe(error))
        }
        other => RecipientResult::new(
            &doc.to,
            DeliveryStatus::FAILED_TRANSIENT,
            format!("unknown status `{}`", clip(other)),
        ),
    }
}

/// `480 Temporarily Unavailable (unavailable)`, clipped.
pub fn describe(error: &WireError) -> String {
    let (reason, code) = (clip(&error.reason), clip(&error.code));
    match error.sip_status {
        Some(sip) => format!("{sip} {reason} ({code})"),
        None if reason.is_empty() => code,
        None => format!("{reason} ({code})"),
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
