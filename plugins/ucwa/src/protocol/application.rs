//! The application resource (the links the client lives on), the create request, and the
//! `contactPresence` resource with its availability mapping.

use alertbridge_plugin_api::PresenceState;
use serde_json::{Value, json};

use super::link;

/// The body of `POST applications`.
pub fn create_request(user_agent: &str, endpoint_id: &str, culture: &str) -> Value {
    json!({ "UserAgent": user_agent, "EndpointId": endpoint_id, "Culture": culture })
}

/// The body of `makeMeAvailable`.
pub fn make_me_available_request() -> Value {
    json!({ "SupportedModalities": ["Messaging"], "supportedMessageFormats": ["Plain", "Html"] })
}

/// The links of an application, as hrefs (server-relative ones still to be resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppLinks {
    pub self_href: String,
    pub events: String,
    pub batch: Option<String>,
    pub make_me_available: Option<String>,
    pub report_my_activity: Option<String>,
    pub people: String,
    pub start_messaging: String,
}

/// Reads the links the client needs from an application resource; `Err` names what is missing.
pub fn parse_application(body: &[u8]) -> Result<Result<AppLinks, &'static str>, serde_json::Error> {
    let v: Value = serde_json::from_slice(body)?;
    let embedded = |rel: &str| {
        v.get("_embedded")
            .and_then(|e| e.get(rel))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (me, people, communication) = (
        embedded("me"),
        embedded("people"),
        embedded("communication"),
    );
    let owned = |s: Option<&str>| s.map(str::to_owned);
    let links = (|| {
        Ok(AppLinks {
            self_href: owned(link(&v, "self")).ok_or("application has no self link")?,
            events: owned(link(&v, "events")).ok_or("application has no events link")?,
            batch: owned(link(&v, "batch")),
            make_me_available: owned(link(&me, "makeMeAvailable")),
            report_my_activity: owned(link(&me, "reportMyActivity")),
            people: owned(link(&people, "self")).ok_or("application has no people link")?,
            start_messaging: owned(link(&communication, "startMessaging"))
                .ok_or("application has no startMessaging link")?,
        })
    })();
    Ok(links)
}

/// The `availability` of a `contactPresence` resource.
pub fn parse_presence(body: &[u8]) -> Result<String, serde_json::Error> {
    let v: Value = serde_json::from_slice(body)?;
    Ok(v.get("availability")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned())
}

/// Maps a UCWA availability to the host's presence states.
pub fn presence_state(availability: &str) -> PresenceState {
    match availability.to_ascii_lowercase().as_str() {
        "online" | "idleonline" => PresenceState::AVAILABLE,
        "busy" | "idlebusy" => PresenceState::BUSY,
        "donotdisturb" => PresenceState::DO_NOT_DISTURB,
        "away" | "berightback" | "offwork" => PresenceState::AWAY,
        "offline" => PresenceState::OFFLINE,
        _ => PresenceState::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Abbreviated from the 201 in CreateAnApplication.md, after makeMeAvailable.
    const APPLICATION: &str = r#"{"culture":"en-US","userAgent":"UCWA Samples",
 "_links":{"self":{"href":"/ucwa/oauth/v1/applications/105"},
  "policies":{"href":"/ucwa/oauth/v1/applications/105/policies"},
  "batch":{"href":"/ucwa/oauth/v1/applications/105/batch"},
  "events":{"href":"/ucwa/oauth/v1/applications/105/events?ack=1"}},
 "_embedded":{
  "me":{"name":"Lene Aaling","uri":"sip:lenea@contoso.com","rel":"me","_links":{
    "self":{"href":"/ucwa/oauth/v1/applications/105/me"},
    "makeMeAvailable":{"href":"/ucwa/oauth/v1/applications/105/me/makeMeAvailable"},
    "reportMyActivity":{"href":"/ucwa/oauth/v1/applications/105/me/reportMyActivity"}}},
  "people":{"rel":"people","_links":{"self":{"href":"/ucwa/oauth/v1/applications/105/people"}}},
  "communication":{"rel":"communication","etag":"3140562359",
    "4d221db7-4af0-476b-9443-8bc874283085":"please pass this in a PUT request",
    "supportedModalities":[],"supportedMessageFormats":["Plain"],
    "_links":{"self":{"href":"/ucwa/oauth/v1/applications/105/communication"},
     "startMessaging":{"href":"/ucwa/oauth/v1/applications/105/communication/messagingInvitations"}}}},
 "rel":"application"}"#;

    #[test]
    fn application_links_are_read_from_embedded_resources() {
        let links = parse_application(APPLICATION.as_bytes()).unwrap().unwrap();
        assert_eq!(links.events, "/ucwa/oauth/v1/applications/105/events?ack=1");
        assert_eq!(
            links.start_messaging,
            "/ucwa/oauth/v1/applications/105/communication/messagingInvitations"
        );
        assert_eq!(links.people, "/ucwa/oauth/v1/applications/105/people");
        assert_eq!(
            links.report_my_activity.as_deref(),
            Some("/ucwa/oauth/v1/applications/105/me/reportMyActivity")
        );
        let missing =
            parse_application(br#"{"_links":{"self":{"href":"/a"},"events":{"href":"/e"}}}"#)
                .unwrap();
        assert_eq!(missing, Err("application has no people link"));
    }

    #[test]
    fn presence_body_and_mapping() {
        let body = br#"{"availability":"Offline","deviceType":"Unknown","lastActive":"\/Date(1358827096000)\/",
 "_links":{"self":{"href":"/ucwa/oauth/v1/applications/101/people/sarad@contoso.com/presence"}},"rel":"contactPresence"}"#;
        assert_eq!(parse_presence(body).unwrap(), "Offline");
        assert_eq!(presence_state("Offline"), PresenceState::OFFLINE);
        assert_eq!(presence_state("IdleOnline"), PresenceState::AVAILABLE);
        assert_eq!(presence_state("BeRightBack"), PresenceState::AWAY);
        assert_eq!(
            presence_state("DoNotDisturb"),
            PresenceState::DO_NOT_DISTURB
        );
        assert_eq!(presence_state("Something"), PresenceState::UNKNOWN);
    }
}
