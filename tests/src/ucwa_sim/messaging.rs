//! Communication: `startMessaging` (201 + `Location` of a messagingInvitation), the invitation's
//! life as the recipient answers it (events: started → Connected + `sendMessage` → completed
//! Success, or completed Failure with a `reason`), `sendMessage` and `stopMessaging`.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{
    application::{app_base, check},
    auth::ucwa_error,
    state::{Behaviour, Conversation, ReceivedIm, Sim, normalize, unix_ms},
};

/// Decodes a `data:` URL (percent-encoded with `+` for space, or base64) into its media type
/// and text.
pub fn decode_data_url(url: &str) -> Option<(String, String)> {
    let rest = url.trim().strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mut parts = meta.split(';').map(str::trim);
    let media = parts
        .next()
        .filter(|m| !m.is_empty())
        .unwrap_or("text/plain")
        .to_owned();
    let base64 = meta
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("base64"));
    let text = if base64 {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        String::from_utf8(bytes).ok()?
    } else {
        percent_encoding::percent_decode_str(&data.replace('+', " "))
            .decode_utf8()
            .ok()?
            .into_owned()
    };
    Some((media, text))
}

fn failure(code: &str, subcode: &str, message: &str) -> Value {
    json!({ "code": code, "subcode": subcode, "message": message })
}

/// `POST <communication.startMessaging>`.
pub async fn start(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let owner = match check(&sim, &headers, &id) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return ucwa_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            Some("ParameterValidationFailure"),
            "Body is not JSON.",
        );
    };
    let Some(to) = body.get("to").and_then(Value::as_str).map(str::to_owned) else {
        return ucwa_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            Some("ParameterValidationFailure"),
            "Missing `to`.",
        );
    };
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (subject, importance, operation_id) =
        (text("subject"), text("importance"), text("operationId"));
    let importance = if importance.is_empty() {
        "Normal".to_owned()
    } else {
        importance
    };
    let message = match body.pointer("/_links/message/href").and_then(Value::as_str) {
        Some(href) => match decode_data_url(href) {
            Some(m) => Some(m),
            None => {
                return ucwa_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    Some("ParameterValidationFailure"),
                    "Bad message data URL.",
                );
            }
        },
        None => None,
    };
    let b = app_base(&id);
    let mut inner = sim.lock();
    let conv_id = inner.id();
    let inv_id = inner.id();
    let Some(app) = inner.apps.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let conv = format!("{b}/communication/conversations/{conv_id}");
    let inv = format!("{b}/communication/messagingInvitations/{inv_id}");
    app.conversations.insert(
        conv_id.clone(),
        Conversation {
            to: to.clone(),
            subject: subject.clone(),
            importance: importance.clone(),
            connected: false,
            messages: 0,
            started_ms: unix_ms(),
            incoming: None,
        },
    );
    let invitation = json!({
        "state": "Connecting", "direction": "Outgoing", "importance": importance, "subject": subject,
        "operationId": operation_id, "rel": "messagingInvitation",
        "_links": {
            "self": { "href": inv }, "from": { "href": format!("{b}/people/{owner}") },
            "to": { "href": format!("{b}/people/{}", normalize(&to)) }, "cancel": { "href": format!("{inv}/cancel") },
            "conversation": { "href": conv }, "messaging": { "href": format!("{conv}/messaging") },
        },
    });
    let comm = format!("{b}/communication");
    app.channel.push("communication", comm.clone(), json!({
        "link": { "rel": "messagingInvitation", "href": inv }, "_embedded": { "messagingInvitation": invitation }, "type": "started",
    }));
    app.channel.push("communication", comm, json!({
        "link": { "rel": "conversation", "href": conv },
        "_embedded": { "conversation": { "state": "Connecting", "subject": subject, "activeModalities": [] } }, "type": "added",
    }));
    app.channel.push("conversation", conv.clone(), json!({
        "link": { "rel": "messaging", "href": format!("{conv}/messaging") },
        "_embedded": { "messaging": { "state": "Connecting", "_links": { "stopMessaging": { "href": format!("{conv}/messaging/terminate") } } } },
        "type": "updated",
    }));
    app.notify.notify_waiters();
    drop(inner);
    let invite = Invite {
        app: id,
        owner,
        conv_id,
        conv,
        inv,
        invitation,
        message,
    };
    tokio::spawn(answer(sim, invite));
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("{b}/communication/messagingInvitations/{inv_id}"),
        )],
    )
        .into_response()
}

struct Invite {
    app: String,
    owner: String,
    conv_id: String,
    conv: String,
    inv: String,
    invitation: Value,
    message: Option<(String, String)>,
}

/// Plays the recipient's side of an invitation and queues the events the sender sees.
async fn answer(sim: Arc<Sim>, invite: Invite) {
    tokio::time::sleep(sim.config.answer_delay).await;
    let (to, behaviour, availability) = {
        let inner = sim.lock();
        let Some(c) = inner
            .apps
            .get(&invite.app)
            .and_then(|a| a.conversations.get(&invite.conv_id))
        else {
            return;
        };
        let to = normalize(&c.to);
        match inner.users.get(&to) {
            Some(u) => (to, Some(u.behaviour.clone()), u.availability.clone()),
            None => (to, None, String::new()),
        }
    };
    let reason = match (behaviour, availability.as_str()) {
        (None, _) => Some(failure(
            "RemoteFailure",
            "DestinationNotFound",
            "The person you are trying to reach doesn't exist.",
        )),
        (Some(_), "Offline") => Some(failure(
            "RemoteFailure",
            "TemporarilyUnavailable",
            "The person you are trying to reach is not available.",
        )),
        (Some(Behaviour::Decline { subcode, message }), _) => {
            Some(failure("RemoteFailure", &subcode, &message))
        }
        (Some(Behaviour::Ignore), _) => {
            tokio::time::sleep(sim.config.invitation_timeout).await;
            Some(failure(
                "RemoteFailure",
                "Timeout",
                "The person you are trying to reach didn't answer.",
            ))
        }
        (Some(Behaviour::Accept), _) => None,
    };
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&invite.app) else {
        return;
    };
    let Some(conv) = app.conversations.get_mut(&invite.conv_id) else {
        return;
    };
    let comm = format!("{}/communication", app_base(&invite.app));
    let c = &invite.conv;
    let mut invitation = invite.invitation.clone();
    let link = json!({ "rel": "messagingInvitation", "href": invite.inv });
    if let Some(reason) = reason {
        invitation["state"] = json!("Failed");
        app.conversations.remove(&invite.conv_id);
        app.channel.push("communication", comm.clone(), json!({
            "link": link, "status": "Failure", "_embedded": { "messagingInvitation": invitation }, "reason": reason, "type": "completed",
        }));
        app.channel.push(
            "communication",
            comm,
            json!({ "link": { "rel": "conversation", "href": c }, "type": "deleted" }),
        );
        app.notify.notify_waiters();
        return;
    }
    conv.connected = true;
    let received = invite
        .message
        .as_ref()
        .map(|(content_type, text)| ReceivedIm {
            from: format!("sip:{}", invite.owner),
            subject: conv.subject.clone(),
            importance: conv.importance.clone(),
            content_type: content_type.clone(),
            text: text.clone(),
            at_unix_ms: unix_ms(),
            conversation: c.clone(),
        });
    if received.is_some() {
        conv.messages += 1;
    }
    invitation["state"] = json!("Connected");
    app.channel.push("communication", comm.clone(), json!({
        "link": { "rel": "conversation", "href": c },
        "_embedded": { "conversation": { "state": "Connected", "activeModalities": ["Messaging"] } }, "type": "updated",
    }));
    app.channel.push("conversation", c.clone(), json!({
        "link": { "rel": "messaging", "href": format!("{c}/messaging") },
        "_embedded": { "messaging": { "state": "Connected", "negotiatedMessageFormats": ["Plain", "Html"], "_links": {
            "sendMessage": { "href": format!("{c}/messaging/messages") },
            "stopMessaging": { "href": format!("{c}/messaging/terminate") },
            "setIsTyping": { "href": format!("{c}/messaging/typing") },
        }}},
        "type": "updated",
    }));
    if received.is_some() {
        app.channel.push("conversation", c.clone(), json!({
            "link": { "rel": "message", "href": format!("{c}/messaging/messages/1") }, "status": "Success",
            "_embedded": { "message": { "direction": "Outgoing", "timeStamp": format!("/Date({})/", unix_ms()) } }, "type": "completed",
        }));
    }
    app.channel.push("communication", comm, json!({
        "link": link, "status": "Success", "_embedded": { "messagingInvitation": invitation }, "type": "completed",
    }));
    app.notify.notify_waiters();
    if let (Some(im), Some(user)) = (received, inner.users.get_mut(&to)) {
        user.received.push(im);
    }
}

/// `POST <messaging.sendMessage>?operationId=..` with a `text/plain` or `text/html` body.
pub async fn send(
    State(sim): State<Arc<Sim>>,
    Path((id, conv_id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(_query): Query<std::collections::HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let owner = match check(&sim, &headers, &id) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain");
    let content_type = content_type
        .split(';')
        .next()
        .unwrap_or("text/plain")
        .trim()
        .to_owned();
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ucwa_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            None,
            "The message is not UTF-8.",
        );
    };
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(conv) = app.conversations.get_mut(&conv_id).filter(|c| c.connected) else {
        return ucwa_error(
            StatusCode::CONFLICT,
            "Conflict",
            None,
            "The messaging modality is not in the proper state.",
        );
    };
    conv.messages += 1;
    let n = conv.messages;
    let c = format!("{}/communication/conversations/{conv_id}", app_base(&id));
    let im = ReceivedIm {
        from: format!("sip:{owner}"),
        subject: conv.subject.clone(),
        importance: conv.importance.clone(),
        content_type,
        text,
        at_unix_ms: unix_ms(),
        conversation: c.clone(),
    };
    let to = normalize(&conv.to);
    let href = format!("{c}/messaging/messages/{n}");
    app.channel.push("conversation", c, json!({
        "link": { "rel": "message", "href": href }, "status": "Success",
        "_embedded": { "message": { "direction": "Outgoing", "timeStamp": format!("/Date({})/", unix_ms()) } }, "type": "completed",
    }));
    app.notify.notify_waiters();
    if let Some(user) = inner.users.get_mut(&to) {
        user.received.push(im);
    }
    (StatusCode::CREATED, [(header::LOCATION, href)]).into_response()
}

/// `POST <messaging.stopMessaging>`: 204 and the conversation ends.
pub async fn stop(
    State(sim): State<Arc<Sim>>,
    Path((id, conv_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if app.conversations.remove(&conv_id).is_none() {
        return ucwa_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            None,
            "No such conversation.",
        );
    }
    let c = format!("{}/communication/conversations/{conv_id}", app_base(&id));
    app.channel.push(
        "conversation",
        c.clone(),
        json!({
            "link": { "rel": "messaging", "href": format!("{c}/messaging") },
            "_embedded": { "messaging": { "state": "Disconnected" } }, "type": "updated",
        }),
    );
    app.channel.push(
        "communication",
        format!("{}/communication", app_base(&id)),
        json!({
            "link": { "rel": "conversation", "href": c }, "type": "deleted",
        }),
    );
    app.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

/// `GET <messagingInvitation>`: exists while its conversation does.
pub async fn invitation(
    State(sim): State<Arc<Sim>>,
    Path((id, inv_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let href = format!(
        "{}/communication/messagingInvitations/{inv_id}",
        app_base(&id)
    );
    Json(json!({ "rel": "messagingInvitation", "_links": { "self": { "href": href } } }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::decode_data_url;

    #[test]
    fn data_urls_decode_in_both_encodings() {
        let plain =
            decode_data_url("data:text/plain;charset=utf-8,Hi+Tosh%0d%0a%C3%BC%2B").unwrap();
        assert_eq!(plain, ("text/plain".to_owned(), "Hi Tosh\r\nü+".to_owned()));
        let b64 = decode_data_url("data:text/html;base64,PGI+aGk8L2I+").unwrap();
        assert_eq!(b64, ("text/html".to_owned(), "<b>hi</b>".to_owned()));
        assert!(decode_data_url("http://x").is_none());
    }
}
