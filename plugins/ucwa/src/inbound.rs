//! Replies reaching the host: incoming invitations are accepted (the message that follows in
//! the conversation is read like any other), incoming messages are handed to the host with
//! `inbound.message/1` in arrival order. A message counts as handled only when the host
//! answers `Ok` (it recorded it durably); on a transient error it is kept and offered again
//! with back-off. Memory is bounded: the hand-over channel and the pending list each hold at
//! most `max_pending_inbound` messages (the oldest pending one is dropped, logged at warn), and
//! at most [`MAX_ACCEPTS`] accepts run at once.

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use alertbridge_plugin_api::{
    error_chain,
    kit::{Backoff, CancellationToken, Host, Inbound as HostInbound},
};
use reqwest::Method;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    api::Body,
    protocol::inbound::{Dropped, Incoming, IncomingInvitation, IncomingMessage},
    shared::Core,
};

pub use alertbridge_plugin_api::kit::calls::{CONVERSATION_SEND, INBOUND_MESSAGE};

/// Takes one inbound event from the event channel (never blocks it).
pub fn offer(core: &Arc<Core>, incoming: Result<Incoming, Dropped>) {
    match incoming {
        Err(why) => debug!(reason = ?why, "Inbound event dropped."),
        Ok(Incoming::Message(m)) => {
            if let Err(e) = core.inbound.tx.try_send(m) {
                let n = core.inbound.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                let m = match e {
                    mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
                };
                warn!(user = %m.user, conversation = %m.conversation, dropped_total = n, "Inbound message dropped: too many waiting for the host.");
            }
        }
        Ok(Incoming::Invitation(invitation)) => {
            let Ok(permit) = core.inbound.accepts.clone().try_acquire_owned() else {
                warn!(user = %invitation.user, "Incoming invitation not accepted: too many accepts in flight.");
                return;
            };
            let core = core.clone();
            tokio::spawn(async move {
                accept(&core, &invitation).await;
                drop(permit);
            });
        }
    }
}

/// Accepts an incoming invitation on the live application.
async fn accept(core: &Core, invitation: &IncomingInvitation) {
    let Some(live) = core.live(None).await else {
        warn!(user = %invitation.user, "Incoming invitation not accepted: not signed in.");
        return;
    };
    let result = match core
        .api
        .resolve(&live.app.start_messaging, &invitation.accept)
    {
        Ok(url) => core
            .api
            .call(Method::POST, &url, &Body::Empty, None)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            info!(user = %invitation.user, conversation = %invitation.conversation, "Accepted a conversation someone started.")
        }
        Err(e) => {
            live.dispatcher.forget(&invitation.conversation);
            warn!(user = %invitation.user, error = %error_chain(&e), "Could not accept an incoming invitation.");
        }
    }
}

/// What the kit hands the host (`inbound.message/1`) for `m`.
fn to_host(m: &IncomingMessage) -> HostInbound {
    HostInbound {
        user: m.user.clone(),
        text: m.text.clone(),
        conversation: m.conversation.clone(),
        name: m.name.clone(),
        id: Some(m.id.clone()),
    }
}

/// What became of one offer to the host.
enum Offered {
    Recorded,
    /// The host has no incidents: drop everything inbound.
    Unsupported,
    Later,
    Refused,
}

async fn offer_to_host(host: &Host, m: &IncomingMessage, timeout: Duration) -> Offered {
    match tokio::time::timeout(timeout, host.inbound(&to_host(m))).await {
        Ok(Ok(true)) => Offered::Recorded,
        Ok(Ok(false)) => Offered::Unsupported,
        Ok(Err(e)) if e.is_transient() => {
            debug!(error = %e, "The host could not take an inbound message yet.");
            Offered::Later
        }
        Ok(Err(e)) => {
            warn!(user = %m.user, error = %e, "The host refused an inbound message; dropped.");
            Offered::Refused
        }
        Err(_) => {
            debug!("The host did not answer an inbound message in time.");
            Offered::Later
        }
    }
}

/// Hands inbound messages to the host until `shutdown`, keeping those it cannot take yet.
pub async fn run(core: Arc<Core>, host: Host, shutdown: CancellationToken) {
    let Some(mut rx) = core.inbound.take_receiver() else {
        return;
    };
    let cap = core.settings.max_pending_inbound;
    let timeout = core.settings.request_timeout;
    let mut pending: VecDeque<IncomingMessage> = VecDeque::new();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut told_unsupported = false;
    loop {
        let due = retry_at.is_none_or(|t| t <= tokio::time::Instant::now());
        if due && let Some(m) = pending.front() {
            match offer_to_host(&host, m, timeout).await {
                Offered::Recorded | Offered::Refused => {
                    pending.pop_front();
                    backoff.reset();
                    retry_at = None;
                }
                Offered::Unsupported => {
                    if !told_unsupported {
                        info!(
                            "The host takes no replies (no incidents); inbound messages are dropped."
                        );
                        told_unsupported = true;
                    }
                    pending.clear();
                }
                Offered::Later => {
                    retry_at = Some(tokio::time::Instant::now() + backoff.next());
                }
            }
            continue;
        }
        let wake = retry_at.filter(|_| !pending.is_empty());
        tokio::select! {
            () = shutdown.cancelled() => break,
            item = rx.recv() => {
                let Some(m) = item else { break };
                if pending.len() >= cap
                    && let Some(old) = pending.pop_front()
                {
                    let n = core.inbound.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    warn!(user = %old.user, conversation = %old.conversation, dropped_total = n, pending = cap, "Oldest inbound message dropped: the host has not taken them (max_pending_inbound).");
                }
                pending.push_back(m);
            }
            () = async {
                match wake {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => { retry_at = None; }
        }
    }
    if !pending.is_empty() {
        warn!(
            count = pending.len(),
            "Stopping with inbound messages the host has not taken."
        );
    }
}
