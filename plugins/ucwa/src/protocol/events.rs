//! Event channel bodies: the page of events with its `next` / `resume` / `resync` link, each
//! event flattened with its sender, and the mapping of a failed invitation's `reason` to a
//! delivery outcome.

use alertbridge_plugin_api::DeliveryStatus;
use serde_json::Value;

use super::link;

/// Where the next P-GET goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextLink {
    /// The normal case.
    Next(String),
    /// The server reset transient state after inactivity.
    Resume(String),
    /// Our `ack` was wrong; events may have been lost.
    Resync(String),
}

/// A failure `reason`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub subcode: String,
    pub message: String,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if !self.subcode.is_empty() {
            write!(f, "/{}", self.subcode)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// One event with its sender.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub sender_rel: String,
    pub sender_href: String,
    /// `link.rel` of the resource the event is about.
    pub rel: String,
    /// `link.href` of the resource.
    pub href: String,
    /// added / updated / deleted / started / completed.
    pub kind: String,
    /// `Success` / `Failure` on completed operations.
    pub status: Option<String>,
    pub reason: Option<Reason>,
    /// `_embedded.<rel>`, when the event carries the resource.
    pub resource: Option<Value>,
}

impl Event {
    /// A string property of the embedded resource.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.resource.as_ref()?.get(name)?.as_str()
    }

    /// A link of the embedded resource.
    pub fn resource_link(&self, rel: &str) -> Option<&str> {
        link(self.resource.as_ref()?, rel)
    }
}

/// One P-GET response.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsPage {
    pub next: Option<NextLink>,
    pub events: Vec<Event>,
}

/// Parses a P-GET response, keeping the order of senders and events.
pub fn parse_events(body: &[u8]) -> Result<EventsPage, serde_json::Error> {
    let v: Value = serde_json::from_slice(body)?;
    let next = if let Some(h) = link(&v, "next") {
        Some(NextLink::Next(h.to_owned()))
    } else if let Some(h) = link(&v, "resume") {
        Some(NextLink::Resume(h.to_owned()))
    } else {
        link(&v, "resync").map(|h| NextLink::Resync(h.to_owned()))
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut events = Vec::new();
    for sender in v
        .get("sender")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for e in sender
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let rel = e.get("link").map(|l| text(l, "rel")).unwrap_or_default();
            events.push(Event {
                sender_rel: text(sender, "rel"),
                sender_href: text(sender, "href"),
                href: e.get("link").map(|l| text(l, "href")).unwrap_or_default(),
                kind: text(e, "type"),
                status: e.get("status").and_then(Value::as_str).map(str::to_owned),
                reason: e.get("reason").map(|r| Reason {
                    code: super::clip(&text(r, "code")),
                    subcode: super::clip(&text(r, "subcode")),
                    message: super::clip(&text(r, "message")),
                }),
                resource: e.get("_embedded").and_then(|em| em.get(&rel)).cloned(),
                rel,
            });
        }
    }
    Ok(EventsPage { next, events })
}

/// What a failed invitation means for the recipient.
pub fn classify_failure(reason: &Reason) -> DeliveryStatus {
    match reason.subcode.as_str() {
        "DestinationNotFound" => DeliveryStatus::NOT_FOUND,
        "TemporarilyUnavailable" | "Unreachable" => DeliveryStatus::OFFLINE,
        // Declined, or rang unanswered until the server gave up: the person saw it and
        // did not take it.
        "Declined" | "DoNotDisturb" | "Timeout" | "Missed" => DeliveryStatus::DECLINED,
        "Busy" | "TooManyConversations" | "AnotherOperationPending" | "Canceled" => {
            DeliveryStatus::FAILED_TRANSIENT
        }
        "NotAllowed" | "FederationRequired" => DeliveryStatus::FAILED_PERMANENT,
        _ => match reason.code.as_str() {
            "Forbidden" | "BadRequest" | "EntityTooLarge" => DeliveryStatus::FAILED_PERMANENT,
            "NotFound" => DeliveryStatus::NOT_FOUND,
            _ => DeliveryStatus::FAILED_TRANSIENT,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped after SendAnIM.md step 3 and the real failure capture of kenakamu issue #36.
    const PAGE: &str = r#"{"_links":{"self":{"href":"/ucwa/oauth/v1/applications/102/events?ack=2"},
 "next":{"href":"/ucwa/oauth/v1/applications/102/events?ack=3"}},
 "sender":[
  {"rel":"conversation","href":"/ucwa/oauth/v1/applications/102/communication/conversations/21a1","events":[
   {"link":{"rel":"messaging","href":"/ucwa/oauth/v1/applications/102/communication/conversations/21a1/messaging"},
    "_embedded":{"messaging":{"state":"Connected","negotiatedMessageFormats":["Plain"],"_links":{
      "sendMessage":{"href":"/ucwa/oauth/v1/applications/102/communication/conversations/21a1/messaging/messages"},
      "stopMessaging":{"href":"/ucwa/oauth/v1/applications/102/communication/conversations/21a1/messaging/terminate"}}}},
    "type":"updated"}]},
  {"rel":"communication","href":"/ucwa/oauth/v1/applications/102/communication","events":[
   {"link":{"rel":"messagingInvitation","href":"/ucwa/oauth/v1/applications/102/communication/messagingInvitations/60c6"},
    "status":"Success","_embedded":{"messagingInvitation":{"state":"Connected","direction":"Outgoing",
      "operationId":"5028e824-2268-4b14-9e59-1abad65ff393"}},"type":"completed"},
   {"link":{"rel":"participantInvitation","href":"/ucwa/oauth/v1/applications/asdf/communication/participantInvitations/x"},
    "status":"Failure","_embedded":{"participantInvitation":{"direction":"Outgoing","importance":"Normal","state":"Failed"}},
    "reason":{"code":"RemoteFailure","subcode":"Declined","message":"Your invitation was declined."},
    "type":"completed"}]}]}"#;

    #[test]
    fn events_keep_sender_order_status_reason_and_embedded_resource() {
        let page = parse_events(PAGE.as_bytes()).unwrap();
        assert_eq!(
            page.next,
            Some(NextLink::Next(
                "/ucwa/oauth/v1/applications/102/events?ack=3".into()
            ))
        );
        assert_eq!(page.events.len(), 3);
        let messaging = &page.events[0];
        assert_eq!(
            (
                messaging.sender_rel.as_str(),
                messaging.rel.as_str(),
                messaging.kind.as_str()
            ),
            ("conversation", "messaging", "updated")
        );
        assert!(
            messaging
                .resource_link("stopMessaging")
                .unwrap()
                .ends_with("/messaging/terminate")
        );
        let done = &page.events[1];
        assert_eq!(done.status.as_deref(), Some("Success"));
        assert_eq!(
            done.property("operationId"),
            Some("5028e824-2268-4b14-9e59-1abad65ff393")
        );
        let failed = &page.events[2];
        let reason = failed.reason.as_ref().unwrap();
        assert_eq!(
            reason.to_string(),
            "RemoteFailure/Declined: Your invitation was declined."
        );
        assert_eq!(classify_failure(reason), DeliveryStatus::DECLINED);
    }

    #[test]
    fn resume_and_resync_links_and_empty_release() {
        let resync = parse_events(
            br#"{"_links":{"self":{"href":"/e?ack=9"},"resync":{"href":"/e?ack=4"}}}"#,
        )
        .unwrap();
        assert_eq!(resync.next, Some(NextLink::Resync("/e?ack=4".into())));
        assert!(resync.events.is_empty());
        let resume =
            parse_events(br#"{"_links":{"resume":{"href":"/e?ack=1"}},"sender":[]}"#).unwrap();
        assert_eq!(resume.next, Some(NextLink::Resume("/e?ack=1".into())));
    }

    #[test]
    fn failure_reasons_map_to_outcomes() {
        let r = |code: &str, subcode: &str| Reason {
            code: code.into(),
            subcode: subcode.into(),
            message: String::new(),
        };
        assert_eq!(
            classify_failure(&r("RemoteFailure", "DestinationNotFound")),
            DeliveryStatus::NOT_FOUND
        );
        assert_eq!(
            classify_failure(&r("RemoteFailure", "TemporarilyUnavailable")),
            DeliveryStatus::OFFLINE
        );
        assert_eq!(
            classify_failure(&r("RemoteFailure", "Timeout")),
            DeliveryStatus::DECLINED
        );
        assert_eq!(
            classify_failure(&r("RemoteFailure", "Busy")),
            DeliveryStatus::FAILED_TRANSIENT
        );
        assert_eq!(
            classify_failure(&r("RemoteFailure", "NotAllowed")),
            DeliveryStatus::FAILED_PERMANENT
        );
        assert_eq!(
            classify_failure(&r("ServiceFailure", "")),
            DeliveryStatus::FAILED_TRANSIENT
        );
    }
}
