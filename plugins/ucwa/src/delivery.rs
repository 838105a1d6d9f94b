//! Delivering one message: a conversation per recipient (capped in flight), each started with
//! the first message as a data URL (or sent with sendMessage once Connected), followed over
//! the event channel to Connected or Failed, then kept open for replies (or stopped, with
//! `conversation_keep_secs = 0`); the outcome mapped per recipient.

use std::sync::Arc;

use alertbridge_plugin_api::{DeliveryStatus, Message, RecipientResult, error_chain};
use reqwest::Method;
use tokio::{sync::watch, task::JoinSet};
use tracing::debug;

use crate::{
    api::{Api, Body},
    config::FirstMessage,
    error::UcwaError,
    events::Conversation,
    protocol::{
        events::classify_failure,
        messaging::{content, data_url, importance, sip_uri, start_messaging_request},
    },
    shared::{Core, Live, random_uuid},
};

/// What every recipient of one message gets.
#[derive(Debug)]
pub struct Outgoing {
    pub subject: String,
    pub importance: &'static str,
    pub content_type: &'static str,
    pub text: String,
}

/// One recipient's outcome and, when the conversation was kept open, its href (the
/// reference replies and answers use).
pub type Sent = (RecipientResult, Option<String>);

fn transient(user: &str, detail: impl Into<String>) -> RecipientResult {
    RecipientResult::new(user, DeliveryStatus::FAILED_TRANSIENT, detail)
}

/// Delivers `message` to each recipient and reports each one's outcome, in order.
pub async fn deliver(core: Arc<Core>, message: Message) -> Vec<RecipientResult> {
    let Some(live) = core.live(None).await else {
        return message
            .recipients
            .iter()
            .map(|r| transient(r, "not signed in to UCWA"))
            .collect();
    };
    let (content_type, text) = content(&message, core.settings.message_format);
    let out = Arc::new(Outgoing {
        subject: message.subject.clone(),
        importance: importance(message.severity),
        content_type,
        text,
    });
    let mut tasks = JoinSet::new();
    for (i, recipient) in message.recipients.iter().enumerate() {
        let (core, live, out, recipient) =
            (core.clone(), live.clone(), out.clone(), recipient.clone());
        tasks.spawn(async move {
            let (result, conversation) = send_one(&core, live, &recipient, &out).await;
            // The page's conversation, so a reply in it needs no incident number.
            let result = match conversation {
                Some(c) => result.with_conversation(c),
                None => result,
            };
            (i, result)
        });
    }
    let mut results: Vec<Option<RecipientResult>> = vec![None; message.recipients.len()];
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, result)) = joined {
            results[i] = Some(result);
        }
    }
    results
        .into_iter()
        .zip(&message.recipients)
        .map(|(r, user)| r.unwrap_or_else(|| transient(user, "delivery task failed")))
        .collect()
}

/// One recipient: retried once on a fresh application if the server lost ours before the
/// invitation was taken.
pub async fn send_one(core: &Core, mut live: Arc<Live>, user: &str, out: &Outgoing) -> Sent {
    let Ok(_permit) = core.conversations.acquire().await else {
        return (transient(user, "sink is stopping"), None);
    };
    for attempt in 0..2 {
        match converse(core, &live, user, out).await {
            Err(e) if e.is_application_gone() && attempt == 0 => {
                core.lost(live.generation);
                match core.live(Some(live.generation)).await {
                    Some(fresh) => live = fresh,
                    None => {
                        return (
                            transient(user, "application lost and not yet re-created"),
                            None,
                        );
                    }
                }
            }
            Err(e) => return (from_error(user, &e), None),
            Ok(sent) => return sent,
        }
    }
    (transient(user, "application lost twice"), None)
}

fn from_error(user: &str, e: &UcwaError) -> RecipientResult {
    let status = if e.is_transient() {
        DeliveryStatus::FAILED_TRANSIENT
    } else {
        DeliveryStatus::FAILED_PERMANENT
    };
    let result = RecipientResult::new(user, status, error_chain(e));
    match e.retry_after() {
        Some(after) => result.retry_after(after),
        None => result,
    }
}

/// Waits until `done` holds for the conversation's state and returns that state; `None` if the
/// application went away.
async fn until(
    updates: &mut watch::Receiver<Conversation>,
    done: impl FnMut(&Conversation) -> bool,
) -> Option<Conversation> {
    updates.wait_for(done).await.ok().map(|c| c.clone())
}

/// Starts the conversation and follows it; `Err` only when the invitation was not taken.
async fn converse(core: &Core, live: &Live, user: &str, out: &Outgoing) -> Result<Sent, UcwaError> {
    let operation = random_uuid();
    let Some(mut updates) = live.dispatcher.register(&operation) else {
        return Err(UcwaError::ApplicationLost);
    };
    let in_invitation = core.settings.first_message == FirstMessage::InInvitation;
    let message_url = in_invitation.then(|| data_url(out.content_type, &out.text));
    let body = start_messaging_request(
        &sip_uri(user),
        &out.subject,
        out.importance,
        &operation,
        message_url.as_deref(),
    );
    if let Err(e) = core
        .api
        .call(
            Method::POST,
            &live.app.start_messaging,
            &Body::json(&body),
            None,
        )
        .await
    {
        live.dispatcher.unregister(&operation);
        return Err(e);
    }
    let invited = tokio::time::timeout(
        core.settings.invitation_timeout,
        until(&mut updates, |c| c.invitation.is_some()),
    )
    .await;
    let mut result = match invited.map(|c| c.and_then(|c| c.invitation)) {
        Ok(Some(Ok(()))) => RecipientResult::delivered(user),
        Ok(Some(Err(reason))) => {
            RecipientResult::new(user, classify_failure(&reason), reason.to_string())
        }
        Ok(None) => transient(user, "application lost before the invitation completed"),
        Err(_) => transient(
            user,
            format!(
                "invitation not answered within {} s",
                core.settings.invitation_timeout.as_secs()
            ),
        ),
    };
    let connected = result.status == DeliveryStatus::DELIVERED;
    if connected && !in_invitation {
        result = send_message(core, live, user, out, &operation, &mut updates).await;
    }
    live.dispatcher.unregister(&operation);
    let state = updates.borrow().clone();
    let keep = !core.settings.conversation_keep.is_zero();
    if connected
        && keep
        && result.status == DeliveryStatus::DELIVERED
        && let Some(conversation) = state.conversation
    {
        let evicted = live
            .dispatcher
            .keep(&conversation, &sip_uri(user), state.send, state.stop);
        if let Some((_, Some(stop))) = evicted {
            stop_messaging(&core.api, live, &stop).await;
        }
        return Ok((result, Some(conversation)));
    }
    if connected && let Some(href) = &state.stop {
        stop_messaging(&core.api, live, href).await;
    }
    Ok((result, None))
}

/// Sends the text with sendMessage on a Connected conversation and waits for its completion.
async fn send_message(
    core: &Core,
    live: &Live,
    user: &str,
    out: &Outgoing,
    operation: &str,
    updates: &mut watch::Receiver<Conversation>,
) -> RecipientResult {
    let (send, sent_before) = {
        let c = updates.borrow();
        (c.send.clone(), c.messages)
    };
    let Some(href) = send else {
        return transient(user, "connected, but the server gave no sendMessage link");
    };
    let mut url = match core.api.resolve(&live.app.start_messaging, &href) {
        Ok(url) => url,
        Err(e) => return from_error(user, &e),
    };
    url.query_pairs_mut().append_pair("operationId", operation);
    let body = Body::Text {
        content_type: out.content_type,
        text: out.text.clone(),
    };
    if let Err(e) = core.api.call(Method::POST, &url, &body, None).await {
        return from_error(user, &e);
    }
    let completed = tokio::time::timeout(
        core.settings.request_timeout,
        until(updates, |c| c.messages > sent_before),
    )
    .await;
    match completed.ok().flatten().and_then(|c| c.message) {
        Some(Ok(())) => RecipientResult::delivered(user),
        Some(Err(reason)) => {
            RecipientResult::new(user, classify_failure(&reason), reason.to_string())
        }
        None => RecipientResult::new(
            user,
            DeliveryStatus::DELIVERED,
            "sendMessage accepted; no completion event",
        ),
    }
}

/// Ends the conversation; failures only cost the server a conversation that times out.
pub async fn stop_messaging(api: &Api, live: &Live, href: &str) {
    let result = match api.resolve(&live.app.start_messaging, href) {
        Ok(url) => api
            .call(Method::POST, &url, &Body::Empty, None)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        debug!(error = %error_chain(&e), "stopMessaging failed.");
    }
}

/// Stops kept conversations unused for `conversation_keep_secs`, checking every tenth of it
/// (between 1 s and 60 s). Never returns; pends forever when nothing is kept.
pub async fn expire_kept(core: &Core, live: &Live) {
    let keep = core.settings.conversation_keep;
    if keep.is_zero() {
        return std::future::pending().await;
    }
    let every = (keep / 10).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    loop {
        tokio::time::sleep(every).await;
        for (conversation, stop) in live.dispatcher.expired(keep) {
            debug!(conversation = %conversation, "Kept conversation expired; stopping it.");
            if let Some(stop) = stop {
                stop_messaging(&core.api, live, &stop).await;
            }
        }
    }
}
