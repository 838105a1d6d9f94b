//! The event channel: the P-GET loop (`next` / `resume` / `resync`, 409 PGetReplaced, retry
//! with back-off, ends when the application is gone) and the dispatcher that routes
//! messagingInvitation and messaging events to the conversation waiting for them.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::error_chain;
use reqwest::Method;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    api::{Api, Body},
    error::UcwaError,
    protocol::events::{Event, NextLink, Reason, parse_events},
    session::Application,
};

/// What a conversation learns from the event channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The messaging modality's `sendMessage` / `stopMessaging` links (while Connected).
    Links {
        send: Option<String>,
        stop: Option<String>,
    },
    /// The invitation completed: `Ok` on Success, else the failure reason.
    Completed(Result<(), Reason>),
    /// A message sent with sendMessage completed.
    MessageCompleted(Result<(), Reason>),
}

#[derive(Debug)]
struct Waiter {
    tx: mpsc::UnboundedSender<Update>,
    hrefs: Vec<String>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Waiting conversations by the `operationId` they sent.
    by_operation: HashMap<String, Waiter>,
    /// Invitation, conversation and messaging hrefs to the operation they belong to.
    by_href: HashMap<String, String>,
    closed: bool,
}

/// Routes events to the conversations of one application.
#[derive(Debug, Default)]
pub struct Dispatcher {
    routes: Mutex<Routes>,
}

impl Dispatcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts routing events of `operation_id`; `None` once the application is gone.
    pub fn register(&self, operation_id: &str) -> Option<mpsc::UnboundedReceiver<Update>> {
        let mut routes = self.lock();
        if routes.closed {
            return None;
        }
        let (tx, rx) = mpsc::unbounded_channel();
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
    }

    /// Routes one event.
    pub fn dispatch(&self, event: &Event) {
        let mut routes = self.lock();
        let routes = &mut *routes;
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
                            return;
                        }
                    },
                };
                let Some(waiter) = routes.by_operation.get_mut(&operation) else {
                    return;
                };
                let hrefs = [
                    Some(event.href.as_str()),
                    event.resource_link("messaging"),
                    event.resource_link("conversation"),
                ];
                for href in hrefs.into_iter().flatten() {
                    if routes
                        .by_href
                        .insert(href.to_owned(), operation.clone())
                        .is_none()
                    {
                        waiter.hrefs.push(href.to_owned());
                    }
                }
                if event.kind == "completed" {
                    let _ = waiter.tx.send(Update::Completed(outcome(event)));
                }
            }
            "messaging" => {
                let Some(waiter) = routes
                    .by_href
                    .get(&event.href)
                    .and_then(|op| routes.by_operation.get(op))
                else {
                    return;
                };
                let (send, stop) = (
                    event.resource_link("sendMessage"),
                    event.resource_link("stopMessaging"),
                );
                if send.is_some() || stop.is_some() {
                    let _ = waiter.tx.send(Update::Links {
                        send: send.map(str::to_owned),
                        stop: stop.map(str::to_owned),
                    });
                }
            }
            // Messages are reported by the conversation they belong to.
            "message" if event.kind == "completed" => {
                let Some(waiter) = routes
                    .by_href
                    .get(&event.sender_href)
                    .and_then(|op| routes.by_operation.get(op))
                else {
                    return;
                };
                let _ = waiter.tx.send(Update::MessageCompleted(outcome(event)));
            }
            _ => {}
        }
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

fn backoff(failures: u32) -> Duration {
    (Duration::from_millis(250) * 2u32.saturating_pow(failures.min(5))).min(Duration::from_secs(5))
}

/// Runs the P-GET loop of `app` until the application is gone (or a non-transient error
/// repeats), and returns why it ended. `reachable` hears whether the channel works: `None`
/// after a good response, the error while requests fail.
pub async fn run(
    api: &Api,
    app: &Application,
    dispatcher: &Dispatcher,
    timeout: Duration,
    reachable: impl Fn(Option<&UcwaError>),
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
                        dispatcher.dispatch(event);
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
                    match api.resolve(&url, &next) {
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
        tokio::time::sleep(backoff(failures)).await;
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
        assert_eq!(
            rx.try_recv().unwrap(),
            Update::Links {
                send: None,
                stop: Some("/c/conv/1/messaging/terminate".into())
            }
        );
        assert_eq!(rx.try_recv().unwrap(), Update::MessageCompleted(Ok(())));
        let Update::Completed(Err(reason)) = rx.try_recv().unwrap() else {
            panic!("expected a failure")
        };
        assert_eq!(reason.subcode, "Declined");
        d.unregister("op-1");
        assert!(d.lock().by_href.is_empty());
        d.close();
        assert!(d.register("op-3").is_none());
    }
}
