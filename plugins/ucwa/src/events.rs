//! The event channel: the P-GET loop (`next` / `resume` / `resync`, 409 PGetReplaced, retry
//! with back-off, ends when the application is gone) and the dispatcher that routes
//! messagingInvitation and messaging events to the conversation waiting for them, keeps the
//! links of conversations kept open for replies, and hands inbound events out. What a
//! conversation learns is a fixed-size state (latest links, outcomes), never a queue, and the
//! hrefs tracked per conversation are capped, so no stream of events grows memory.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{error_chain, kit::Backoff};
use reqwest::Method;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{
    api::{Api, Body},
    error::UcwaError,
    kept::{Kept, KeptConversation, Leaving},
    protocol::{
        events::{Event, NextLink, Reason, parse_events},
        inbound::{Dropped, Incoming, parse_incoming},
    },
    session::Application,
};

/// Hrefs (invitation, messaging, conversation) tracked per conversation; a real server names 3.
pub const MAX_HREFS_PER_CONVERSATION: usize = 8;

/// What a conversation has learnt from the event channel so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The messaging modality's latest `sendMessage` link (while Connected).
    pub send: Option<String>,
    /// The messaging modality's latest `stopMessaging` link.
    pub stop: Option<String>,
    /// The invitation completed: `Ok` on Success, else the failure reason.
    pub invitation: Option<Result<(), Reason>>,
    /// Messages completed so far, and the last one's outcome.
    pub messages: u32,
    pub message: Option<Result<(), Reason>>,
    /// The conversation's href, once the invitation named it.
    pub conversation: Option<String>,
}

#[derive(Debug)]
struct Waiter {
    tx: watch::Sender<Conversation>,
    hrefs: Vec<String>,
}

#[derive(Debug)]
struct Routes {
    /// Waiting conversations by the `operationId` they sent.
    by_operation: HashMap<String, Waiter>,
    /// Invitation, conversation and messaging hrefs to the operation they belong to.
    by_href: HashMap<String, String>,
    /// Conversations kept open for replies, by conversation href.
    kept: Kept,
    closed: bool,
}

/// Routes events to the conversations of one application.
#[derive(Debug)]
pub struct Dispatcher {
    routes: Mutex<Routes>,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new(1000)
    }
}

impl Dispatcher {
    /// A dispatcher keeping at most `max_kept` conversations open for replies.
    pub fn new(max_kept: usize) -> Self {
        Self {
            routes: Mutex::new(Routes {
                by_operation: HashMap::new(),
                by_href: HashMap::new(),
                kept: Kept::new(max_kept),
                closed: false,
            }),
        }
    }

    /// Keeps `conversation` open for replies from `user`; returns one evicted to make room.
    pub fn keep(
        &self,
        conversation: &str,
        user: &str,
        send: Option<String>,
        stop: Option<String>,
    ) -> Option<Leaving> {
        let mut routes = self.lock();
        if routes.closed {
            return None;
        }
        routes
            .kept
            .keep(conversation, user, send, stop, tokio::time::Instant::now())
    }

    /// A kept conversation, marked as used now.
    pub fn kept(&self, conversation: &str) -> Option<KeptConversation> {
        self.lock()
            .kept
            .use_now(conversation, tokio::time::Instant::now())
    }

    /// Forgets a kept conversation.
    pub fn forget(&self, conversation: &str) -> Option<KeptConversation> {
        self.lock().kept.forget(conversation)
    }

    /// Removes the kept conversations unused for `keep`.
    pub fn expired(&self, keep: Duration) -> Vec<Leaving> {
        self.lock().kept.expired(keep, tokio::time::Instant::now())
    }

    /// How many conversations are kept.
    pub fn kept_count(&self) -> usize {
        self.lock().kept.len()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts routing events of `operation_id`; `None` once the application is gone. The
    /// receiver sees the conversation's state; it ends when the application is gone.
    pub fn register(&self, operation_id: &str) -> Option<watch::Receiver<Conversation>> {
        let mut routes = self.lock();
        if routes.closed {
            return None;
        }
        let (tx, rx) = watch::channel(Conversation::default());
        routes.by_operation.insert(
            operation_id.to_owned(),
            Waiter {
                tx,
                hrefs: Vec::new(),
            },
        );
        Some(rx)
    }

    /// Stops routing events of `operation_id`.
    pub fn unregister(&self, operation_id: &str) {
        let mut routes = self.lock();
        if let Some(waiter) = routes.by_operation.remove(operation_id) {
            for href in waiter.hrefs {
                routes.by_href.remove(&href);
            }
        }
    }

    /// Ends every wait: the application is gone.
    pub fn close(&self) {
        let mut routes = self.lock();
        routes.closed = true;
        routes.by_operation.clear();
        routes.by_href.clear();
        routes.kept = Kept::new(1);
    }

    /// Routes one event; an inbound one (someone's message or invitation) is returned for
    /// the caller to hand on.
    pub fn dispatch(&self, event: &Event) -> Option<Result<Incoming, Dropped>> {
        let mut routes = self.lock();
        let routes = &mut *routes;
        if let Some(incoming) = parse_incoming(event) {
            let now = tokio::time::Instant::now();
            match &incoming {
                Ok(Incoming::Message(m)) => {
                    routes.kept.use_now(&m.conversation, now);
                }
                Ok(Incoming::Invitation(i)) if !routes.closed => {
                    // Kept from now on, so the messaging links that follow are taken.
                    routes.kept.keep(&i.conversation, &i.user, None, None, now);
                }
                _ => {}
            }
            return Some(incoming);
        }
        match event.rel.as_str() {
            "messagingInvitation" => {
                let operation = match event
                    .property("operationId")
                    .filter(|o| routes.by_operation.contains_key(*o))
                {
                    Some(op) => op.to_owned(),
                    None => match routes.by_href.get(&event.href) {
                        Some(op) => op.clone(),
                        None => {
                            debug!(href = %event.href, kind = %event.kind, "Invitation event for no waiting conversation.");
                            return None;
                        }
                    },
                };
                let waiter = routes.by_operation.get_mut(&operation)?;
                if let Some(c) = event.resource_link("conversation")
                    && waiter.tx.borrow().conversation.is_none()
                {
                    let c = c.to_owned();
                    waiter.tx.send_modify(|s| s.conversation = Some(c));
                }
                let hrefs = [
                    Some(event.href.as_str()),
                    event.resource_link("messaging"),
                    event.resource_link("conversation"),
                ];
                for href in hrefs.into_iter().flatten() {
                    if waiter.hrefs.len() >= MAX_HREFS_PER_CONVERSATION {
                        debug!(href = %href, "Too many hrefs for one conversation; ignoring.");
                        break;
                    }
                    if !routes.by_href.contains_key(href) {
                        routes.by_href.insert(href.to_owned(), operation.clone());
                        waiter.hrefs.push(href.to_owned());
                    }
                }
                if event.kind == "completed" {
                    let result = outcome(event);
                    waiter.tx.send_modify(|c| c.invitation = Some(result));
                }
            }
            "messaging" => {
                let (send, stop) = (
                    event.resource_link("sendMessage"),
                    event.resource_link("stopMessaging"),
                );
                if event.sender_rel == "conversation" {
                    let disconnected = event.property("state") == Some("Disconnected");
                    routes
                        .kept
                        .links(&event.sender_href, send, stop, disconnected);
                }
                let waiter = routes
                    .by_href
                    .get(&event.href)
                    .and_then(|op| routes.by_operation.get(op))?;
                if send.is_some() || stop.is_some() {
                    waiter.tx.send_modify(|c| {
                        if let Some(send) = send {
                            c.send = Some(send.to_owned());
                        }
                        if let Some(stop) = stop {
                            c.stop = Some(stop.to_owned());
                        }
                    });
                }
            }
            // Messages are reported by the conversation they belong to.
            "conversation" if event.kind == "deleted" => {
                routes.kept.forget(&event.href);
            }
            "message" if event.kind == "completed" => {
                let waiter = routes
                    .by_href
                    .get(&event.sender_href)
                    .and_then(|op| routes.by_operation.get(op))?;
                let result = outcome(event);
                waiter.tx.send_modify(|c| {
                    c.messages = c.messages.saturating_add(1);
                    c.message = Some(result);
                });
            }
            _ => {}
        }
        None
    }
}

/// `Ok` for a `Success` operation event, else its reason.
fn outcome(event: &Event) -> Result<(), Reason> {
    if event.status.as_deref() == Some("Success") {
        return Ok(());
    }
    Err(event.reason.clone().unwrap_or_else(|| Reason {
        code: "Unknown".into(),
        subcode: String::new(),
        message: format!(
            "{} completed with status {}",
            event.rel,
            event.status.as_deref().unwrap_or("none")
        ),
    }))
}

/// The wait after `failures` failed event requests in a row: 0.5 s, 1 s … up to 5 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));

/// Runs the P-GET loop of `app` until the application is gone (or a non-transient error
/// repeats), and returns why it ended. `reachable` hears whether the channel works: `None`
/// after a good response, the error while requests fail.
pub async fn run(
    api: &Api,
    app: &Application,
    dispatcher: &Dispatcher,
    timeout: Duration,
    reachable: impl Fn(Option<&UcwaError>),
    incoming: impl Fn(Result<Incoming, Dropped>),
) -> UcwaError {
    let mut url = app.events.clone();
    let mut failures = 0u32;
    loop {
        let error = match api
            .call(Method::GET, &url, &Body::Empty, Some(timeout))
            .await
        {
            Ok(reply) => match parse_events(&reply.body) {
                Ok(page) => {
                    if failures > 0 {
                        reachable(None);
                    }
                    failures = 0;
                    for event in &page.events {
                        if let Some(i) = dispatcher.dispatch(event) {
                            incoming(i);
                        }
                    }
                    let next = match page.next {
                        Some(NextLink::Next(href)) => href,
                        Some(NextLink::Resume(href)) => {
                            info!("Event channel resumed after inactivity.");
                            href
                        }
                        Some(NextLink::Resync(href)) => {
                            warn!(url = %url, "Event channel asked to resync; events may have been missed.");
                            href
                        }
                        None => {
                            return UcwaError::Protocol {
                                url: url.to_string(),
                                what: "events response has no next link".into(),
                            };
                        }
                    };
                    match api.resolve(&reply.url, &next) {
                        Ok(next) => url = next,
                        Err(e) => return e,
                    }
                    continue;
                }
                Err(source) => UcwaError::Body {
                    url: url.to_string(),
                    source,
                },
            },
            Err(e) if e.is_application_gone() => return e,
            Err(e) => e,
        };
        failures += 1;
        if error.is_pget_replaced() {
            warn!("Another P-GET replaced ours; re-issuing.");
        } else if !error.is_transient() && failures > 3 {
            return error;
        } else {
            reachable(Some(&error));
            warn!(error = %error_chain(&error), failures, "Event channel request failed; retrying.");
        }
        tokio::time::sleep(BACKOFF.delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::parse_events;

    fn page(json: &str) -> Vec<Event> {
        parse_events(json.as_bytes()).unwrap().events
    }

    #[test]
    fn invitation_and_messaging_events_reach_their_conversation() {
        let d = Dispatcher::default();
        let mut rx = d.register("op-1").unwrap();
        let _other = d.register("op-2").unwrap();
        let events = page(
            r#"{"_links":{"next":{"href":"/e?ack=2"}},"sender":[
 {"rel":"communication","href":"/c","events":[
  {"link":{"rel":"messagingInvitation","href":"/c/inv/1"},"type":"started","_embedded":{"messagingInvitation":{
    "state":"Connecting","operationId":"op-1","_links":{"messaging":{"href":"/c/conv/1/messaging"},"conversation":{"href":"/c/conv/1"}}}}}]},
 {"rel":"conversation","href":"/c/conv/1","events":[
  {"link":{"rel":"messaging","href":"/c/conv/1/messaging"},"type":"updated","_embedded":{"messaging":{"state":"Connected",
    "_links":{"stopMessaging":{"href":"/c/conv/1/messaging/terminate"}}}}},
  {"link":{"rel":"message","href":"/c/conv/1/messaging/messages/2"},"status":"Success","type":"completed"}]},
 {"rel":"communication","href":"/c","events":[
  {"link":{"rel":"messagingInvitation","href":"/c/inv/1"},"type":"completed","status":"Failure",
   "reason":{"code":"RemoteFailure","subcode":"Declined","message":"Your invitation was declined."}}]}]}"#,
        );
        for e in &events {
            d.dispatch(e);
        }
        let state = rx.borrow_and_update().clone();
        assert_eq!(state.send, None);
        assert_eq!(state.stop.as_deref(), Some("/c/conv/1/messaging/terminate"));
        assert_eq!((state.messages, state.message), (1, Some(Ok(()))));
        let Some(Err(reason)) = state.invitation else {
            panic!("expected a failure")
        };
        assert_eq!(reason.subcode, "Declined");
        d.unregister("op-1");
        assert!(d.lock().by_href.is_empty());
        d.close();
        assert!(d.register("op-3").is_none());
    }

    /// A server that sends one conversation event after event with ever new hrefs (or link
    /// updates) leaves a fixed amount of state behind: the old dispatcher queued every update
    /// and tracked every href.
    #[test]
    fn a_flood_of_events_for_one_conversation_keeps_a_fixed_state() {
        let d = Dispatcher::default();
        let rx = d.register("op-1").unwrap();
        for i in 0..20_000 {
            let json = format!(
                r#"{{"_links":{{"next":{{"href":"/e"}}}},"sender":[
 {{"rel":"communication","href":"/c","events":[
  {{"link":{{"rel":"messagingInvitation","href":"/c/inv/{i}"}},"type":"updated","_embedded":{{"messagingInvitation":{{
    "state":"Connecting","operationId":"op-1","_links":{{"messaging":{{"href":"/c/conv/{i}/messaging"}},"conversation":{{"href":"/c/conv/{i}"}}}}}}}}}}]}},
 {{"rel":"conversation","href":"/c/conv/0","events":[
  {{"link":{{"rel":"messaging","href":"/c/conv/0/messaging"}},"type":"updated","_embedded":{{"messaging":{{"state":"Connected",
    "_links":{{"sendMessage":{{"href":"/c/conv/0/messaging/messages/{i}"}}}}}}}}}}]}}]}}"#
            );
            for e in &page(&json) {
                d.dispatch(e);
            }
        }
        let routes = d.lock();
        assert!(
            routes.by_href.len() <= MAX_HREFS_PER_CONVERSATION,
            "{} hrefs tracked",
            routes.by_href.len()
        );
        assert!(routes.by_operation["op-1"].hrefs.len() <= MAX_HREFS_PER_CONVERSATION);
        drop(routes);
        let state = rx.borrow().clone();
        assert_eq!(
            state.send.as_deref(),
            Some("/c/conv/0/messaging/messages/19999"),
            "the latest link wins"
        );
        assert_eq!(state.invitation, None);
    }
}
