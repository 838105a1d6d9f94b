//! `conversation.send/1`: the host says something in a conversation. In a kept conversation
//! whose messaging is Connected the text goes with `sendMessage`; when the conversation is gone
//! (ended, expired, unknown after a new sign-in) or sending in it fails, a new conversation is
//! started with the person and kept. The answer names the conversation actually used.

use alertbridge_plugin_api::{DeliveryStatus, ErrorKind, PluginError, error_chain};
use reqwest::Method;
use tracing::{debug, info};

use crate::{
    api::Body,
    delivery::{self, Outgoing},
    protocol::{
        clip,
        inbound::{MAX_REF_BYTES, sip_user},
    },
    shared::{Core, random_uuid},
};

/// The longest text the host may ask to send (a UCWA message is far below the server's limit).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

fn permanent(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::PERMANENT, message)
}

fn transient(message: impl Into<String>) -> PluginError {
    PluginError::new(ErrorKind::TRANSIENT, message)
}

/// Answers a `conversation.send/1` call: the conversation actually used.
pub async fn call(
    core: &Core,
    conversation: &str,
    user: &str,
    text: &str,
) -> Result<String, PluginError> {
    let user = sip_user(user)
        .ok_or_else(|| permanent(format!("`user` is not a SIP URI: {:?}", clip(user))))?;
    if text.trim().is_empty() {
        return Err(permanent("`text` is empty"));
    }
    if text.len() > MAX_ANSWER_BYTES {
        return Err(permanent(format!(
            "`text` is longer than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    send(core, conversation, &user, text).await
}

/// Sends `text` to `user` in `conversation` or, if that is gone, in a new one; returns the
/// reference used.
pub async fn send(
    core: &Core,
    conversation: &str,
    user: &str,
    text: &str,
) -> Result<String, PluginError> {
    let Some(live) = core.live(None).await else {
        return Err(transient("not signed in to UCWA"));
    };
    let known = (!conversation.is_empty() && conversation.len() <= MAX_REF_BYTES)
        .then(|| live.dispatcher.kept(conversation))
        .flatten();
    if let Some(kept) = known {
        if let Some(href) = kept.send {
            let sent = match core.api.resolve(&live.app.start_messaging, &href) {
                Ok(mut url) => {
                    url.query_pairs_mut()
                        .append_pair("operationId", &random_uuid());
                    let body = Body::Text {
                        content_type: "text/plain",
                        text: text.to_owned(),
                    };
                    core.api.call(Method::POST, &url, &body, None).await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(_) => {
                    debug!(conversation, "Answered in the conversation.");
                    return Ok(conversation.to_owned());
                }
                Err(e) if e.is_application_gone() => {
                    core.lost(live.generation);
                    return Err(transient(format!("application lost: {}", error_chain(&e))));
                }
                Err(e) if e.is_transient() && !matches!(e.status(), Some(404 | 409 | 410)) => {
                    return Err(transient(error_chain(&e)));
                }
                Err(e) => {
                    info!(conversation, error = %error_chain(&e), "The conversation is gone; starting a new one.");
                    live.dispatcher.forget(conversation);
                }
            }
        } else {
            debug!(
                conversation,
                "The conversation has no messaging link; starting a new one."
            );
            live.dispatcher.forget(conversation);
        }
    }
    let out = Outgoing {
        subject: String::new(),
        importance: "Normal",
        content_type: "text/plain",
        text: text.to_owned(),
    };
    let (result, used) = delivery::send_one(core, live, user, &out).await;
    match (result.status, used) {
        (DeliveryStatus::DELIVERED, Some(used)) => Ok(used),
        // Delivered, but the conversation is not kept (conversation_keep_secs = 0).
        (DeliveryStatus::DELIVERED, None) => Ok(String::new()),
        (status, _)
            if status == DeliveryStatus::FAILED_TRANSIENT || status == DeliveryStatus::OFFLINE =>
        {
            Err(transient(format!("{}: {}", status.name(), result.detail)))
        }
        (status, _) => Err(permanent(format!("{}: {}", status.name(), result.detail))),
    }
}
