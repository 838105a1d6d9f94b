//! Sinks that listen: the names of the calls between a sink that hears replies and its host
//! ([`calls`]), the inbound message a sink hands the host ([`Inbound`], [`Host::inbound`]),
//! and the kit's routing of the host's `conversation.send/1` to
//! [`Sink::send_in_conversation`](super::Sink::send_in_conversation).
//!
//! Both go through `call` (API 1.0's growth mechanism), so a sink that knows none of this
//! still loads and delivers, and a host without incidents answers `UNSUPPORTED`.

use tracing::warn;

use super::{Args, Host, Sink, unsupported};
use crate::{ErrorKind, MAX_CONVERSATION_BYTES, PluginError};

/// The versioned names of the calls added after API 1.0.
pub mod calls {
    /// Sink → host: an inbound message (a reply) — `user`, `text`, `conversation`, optional
    /// `name` and `id`. Answered `recorded=1` only once the host has durably recorded it.
    pub const INBOUND_MESSAGE: &str = "inbound.message/1";
    /// Host → sink: say `text` to `user` in `conversation` (or in a new conversation when that
    /// one is gone). Answered with the `conversation` actually used.
    pub const CONVERSATION_SEND: &str = "conversation.send/1";
}

/// The longest inbound text the host is handed, in bytes; longer text is cut (at a character
/// boundary).
pub const MAX_INBOUND_TEXT_BYTES: usize = 4096;

/// The longest sender URI, conversation reference, display name or message id handed on, in
/// bytes.
pub const MAX_INBOUND_FIELD_BYTES: usize = 512;

/// A message someone sent the bot, as a sink hands it to the host.
///
/// Build it with `..Default::default()` so fields added later do not break your code:
/// `Inbound { user, text, conversation, ..Default::default() }`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// The sender's SIP URI; the kit lower-cases it and adds `sip:` when missing.
    pub user: String,
    /// The message as plain text; cut to [`MAX_INBOUND_TEXT_BYTES`].
    pub text: String,
    /// The conversation it came in, as the sink will later answer into it: at most
    /// [`MAX_CONVERSATION_BYTES`], not empty, stable for the life of that conversation.
    pub conversation: String,
    /// The sender's display name, if the sink knows it.
    pub name: Option<String>,
    /// The sink's id of this message, if it has one: the host takes a message offered again
    /// with the same (`conversation`, `id`) once.
    pub id: Option<String>,
}

impl Inbound {
    /// The call's arguments, after checking and bounding every field.
    pub(crate) fn to_args(&self) -> Result<Args, PluginError> {
        let invalid =
            |m: String| PluginError::new(ErrorKind::PERMANENT, format!("inbound message: {m}"));
        let user = sip_uri(&self.user).map_err(invalid)?;
        if self.conversation.is_empty() {
            return Err(invalid("no conversation reference".into()));
        }
        if self.conversation.len() > MAX_CONVERSATION_BYTES {
            return Err(invalid(format!(
                "the conversation reference is {} bytes, more than {MAX_CONVERSATION_BYTES}",
                self.conversation.len()
            )));
        }
        let mut args = Args::from([
            ("user".to_owned(), user),
            (
                "text".to_owned(),
                cut(&self.text, MAX_INBOUND_TEXT_BYTES).to_owned(),
            ),
            ("conversation".to_owned(), self.conversation.clone()),
        ]);
        if let Some(name) = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            args.insert("name".into(), cut(name, MAX_INBOUND_FIELD_BYTES).to_owned());
        }
        match self.id.as_deref().filter(|i| !i.is_empty()) {
            Some(id) if id.len() <= MAX_INBOUND_FIELD_BYTES => {
                args.insert("id".into(), id.to_owned());
            }
            Some(id) => warn!(
                bytes = id.len(),
                "An inbound message id longer than 512 bytes is left out; the host cannot tell a repeat of it."
            ),
            None => {}
        }
        Ok(args)
    }
}

/// `user` as a lower-cased `sip:` URI, or why it cannot be one.
fn sip_uri(user: &str) -> Result<String, String> {
    let user = user.trim();
    if user.is_empty() {
        return Err("no sender".into());
    }
    if user.len() > MAX_INBOUND_FIELD_BYTES {
        return Err(format!(
            "the sender is {} bytes, more than {MAX_INBOUND_FIELD_BYTES}",
            user.len()
        ));
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("the sender {user:?} is not a SIP URI"));
    }
    let lower = user.to_lowercase();
    Ok(if lower.starts_with("sip:") {
        lower
    } else {
        format!("sip:{lower}")
    })
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Host {
    /// Hands the host a message someone sent the bot (`inbound.message/1`).
    ///
    /// `Ok(true)`: the host has durably recorded it (and what it does); ack or forget it
    /// upstream. `Ok(false)`: this host takes no inbound messages (no incidents, or an older
    /// host): drop them, and say so once in the log. `Err` of kind `TRANSIENT`: not recorded,
    /// keep it and offer it again later (with the same `id`, the host takes it once).
    /// `PERMANENT`: the message itself is unusable (no sender, no or an oversized
    /// conversation reference); drop it.
    ///
    /// The host's answer to the sender does not come back here: the host sends it with
    /// `conversation.send/1` after the record.
    pub async fn inbound(&self, message: &Inbound) -> Result<bool, PluginError> {
        let args = message.to_args()?;
        match self.call(calls::INBOUND_MESSAGE, args).await? {
            None => Ok(false),
            Some(answer) if answer.get("recorded").map(String::as_str) == Some("1") => Ok(true),
            Some(_) => Err(PluginError::new(
                ErrorKind::TRANSIENT,
                "the host answered inbound.message/1 without `recorded=1`",
            )),
        }
    }
}

/// Routes the host's `call(name, args)` for a sink: `conversation.send/1` to
/// [`Sink::send_in_conversation`] (arguments checked), falling back to [`Sink::call`] when the
/// typed hook is not implemented; every other name to [`Sink::call`].
pub(crate) async fn sink_call<T: Sink>(
    sink: &T,
    name: &str,
    args: Args,
) -> Result<Args, PluginError> {
    if name != calls::CONVERSATION_SEND {
        return sink.call(name, args).await;
    }
    let missing = |key: &str| {
        PluginError::new(
            ErrorKind::PERMANENT,
            format!("{name}: missing argument `{key}`"),
        )
    };
    let user = args
        .get("user")
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| missing("user"))?;
    let text = args.get("text").ok_or_else(|| missing("text"))?;
    let conversation = args.get("conversation").map_or("", String::as_str);
    match sink.send_in_conversation(conversation, user, text).await {
        Ok(used) => Ok(Args::from([("conversation".to_owned(), used)])),
        Err(e) if e.kind == ErrorKind::UNSUPPORTED => sink.call(name, args).await,
        Err(e) => Err(e),
    }
}

/// The default answer of [`Sink::send_in_conversation`].
pub(crate) fn send_unsupported() -> PluginError {
    unsupported(calls::CONVERSATION_SEND)
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
