//! Applications: `POST applications` (201 with `_links` and `_embedded` me / people /
//! communication), `GET` / `DELETE` of one, `makeMeAvailable` and `reportMyActivity`, and the
//! 404 / 410 answers for applications that do not exist (any more).

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    auth::{authorize, throttled, ucwa_error},
    events::Channel,
    state::{App, Inner, Sim},
};

/// The server-relative path of an application.
pub fn app_base(id: &str) -> String {
    format!("/ucwa/oauth/v1/applications/{id}")
}

/// `404 ApplicationNotFound`, or `410` for one that was deleted.
pub fn app_missing(inner: &Inner, id: &str) -> Response {
    if inner.gone.iter().any(|g| g == id) {
        ucwa_error(
            StatusCode::GONE,
            "Gone",
            Some("InactiveApplicationExpired"),
            "The application has expired.",
        )
    } else {
        ucwa_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            Some("ApplicationNotFound"),
            "An error occurred. Please retry. If the problem persists, contact your support team.",
        )
    }
}

/// The common prologue of every call on an application: throttling, the token, and that the
/// application exists and belongs to the caller. Returns the caller's user name.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send, built once per request"
)]
pub fn check(sim: &Sim, headers: &HeaderMap, id: &str) -> Result<String, Response> {
    if let Some(response) = throttled(sim) {
        return Err(response);
    }
    let user = authorize(sim, headers)?;
    let inner = sim.lock();
    match inner.apps.get(id) {
        Some(app) if app.owner == user => Ok(user),
        Some(_) => Err(ucwa_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            None,
            "Not your application.",
        )),
        None => Err(app_missing(&inner, id)),
    }
}

/// The application resource as the server returns it.
fn document(id: &str, app: &App) -> Value {
    let b = app_base(id);
    let mut me_links = json!({
        "self": { "href": format!("{b}/me") },
        "makeMeAvailable": { "href": format!("{b}/me/makeMeAvailable") },
        "photo": { "href": format!("{b}/photos/{}", app.owner) },
    });
    if app.available {
        me_links["reportMyActivity"] = json!({ "href": format!("{b}/me/reportMyActivity") });
        me_links["presence"] = json!({ "href": format!("{b}/me/presence") });
    }
    let modalities: Vec<&str> = if app.available {
        vec!["Messaging"]
    } else {
        vec![]
    };
    json!({
        "culture": app.culture,
        "userAgent": app.user_agent,
        "endpointId": app.endpoint_id,
        "_links": {
            "self": { "href": b },
            "policies": { "href": format!("{b}/policies") },
            "batch": { "href": format!("{b}/batch") },
            "events": { "href": format!("{b}/events?ack=1") },
        },
        "_embedded": {
            "me": { "name": app.owner, "uri": format!("sip:{}", app.owner), "rel": "me", "_links": me_links },
            "people": { "rel": "people", "_links": {
                "self": { "href": format!("{b}/people") },
                "presenceSubscriptions": { "href": format!("{b}/people/presenceSubscriptions") },
                "search": { "href": format!("{b}/people/search") },
            }},
            "communication": {
                "rel": "communication",
                "etag": "3140562359",
                "4d221db7-4af0-476b-9443-8bc874283085": "please pass this in a PUT request",
                "supportedModalities": modalities,
                "supportedMessageFormats": ["Plain", "Html"],
                "_links": {
                    "self": { "href": format!("{b}/communication") },
                    "conversations": { "href": format!("{b}/communication/conversations?filter=active") },
                    "startMessaging": { "href": format!("{b}/communication/messagingInvitations") },
                },
            },
        },
        "rel": "application",
    })
}

/// Reads a property case-insensitively (`UserAgent` and `userAgent` are both seen).
fn property<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// `POST applications`.
pub async fn create(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(response) = throttled(&sim) {
        return response;
    }
    let user = match authorize(&sim, &headers) {
        Ok(user) => user,
        Err(challenge) => return challenge,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return ucwa_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            Some("ParameterValidationFailure"),
            "Body is not JSON.",
        );
    };
    let (Some(user_agent), Some(endpoint_id), Some(culture)) = (
        property(&body, "UserAgent"),
        property(&body, "EndpointId"),
        property(&body, "Culture"),
    ) else {
        return ucwa_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            Some("ParameterValidationFailure"),
            "Missing UserAgent, EndpointId or Culture.",
        );
    };
    let mut inner = sim.lock();
    let existing = inner
        .apps
        .iter()
        .find(|(_, a)| a.owner == user && a.endpoint_id == endpoint_id)
        .map(|(id, _)| id.clone());
    // The same endpoint creating again gets its existing application back.
    let id = match existing {
        Some(id) => id,
        None => {
            let id = inner.id();
            let app = App {
                owner: user,
                endpoint_id: endpoint_id.to_owned(),
                user_agent: user_agent.to_owned(),
                culture: culture.to_owned(),
                available: false,
                conversations: Default::default(),
                channel: Channel::default(),
                notify: Default::default(),
            };
            inner.apps.insert(id.clone(), app);
            id
        }
    };
    let Some(app) = inner.apps.get(&id) else {
        return app_missing(&inner, &id);
    };
    let doc = document(&id, app);
    (
        StatusCode::CREATED,
        [(header::LOCATION, app_base(&id))],
        Json(doc),
    )
        .into_response()
}

/// `GET <application>`.
pub async fn get(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let inner = sim.lock();
    match inner.apps.get(&id) {
        Some(app) => Json(document(&id, app)).into_response(),
        None => app_missing(&inner, &id),
    }
}

/// `DELETE <application>`: signs the endpoint out.
pub async fn delete(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let mut inner = sim.lock();
    if let Some(app) = inner.apps.remove(&id) {
        app.notify.notify_waiters();
    }
    inner.gone.push(id);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST <me.makeMeAvailable>`: 204 once, `409 AlreadyExists` after.
pub async fn make_me_available(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let mut inner = sim.lock();
    let Some(app) = inner.apps.get_mut(&id) else {
        return app_missing(&inner, &id);
    };
    if app.available {
        return ucwa_error(
            StatusCode::CONFLICT,
            "Conflict",
            Some("AlreadyExists"),
            "The requested resource already exists. Please wait and try again.",
        );
    }
    app.available = true;
    let b = app_base(&id);
    app.channel.push(
        "me",
        format!("{b}/me"),
        json!({ "link": { "rel": "me", "href": format!("{b}/me") }, "type": "updated" }),
    );
    app.channel.push(
        "me",
        format!("{b}/me"),
        json!({ "link": { "rel": "presence", "href": format!("{b}/me/presence") }, "type": "added" }),
    );
    app.notify.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST <me.reportMyActivity>`: 204 after makeMeAvailable, `409 MakeMeAvailableRequired` before.
pub async fn report_my_activity(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let inner = sim.lock();
    match inner.apps.get(&id) {
        Some(app) if app.available => StatusCode::NO_CONTENT.into_response(),
        Some(_) => ucwa_error(
            StatusCode::CONFLICT,
            "Conflict",
            Some("MakeMeAvailableRequired"),
            "Call makeMeAvailable first.",
        ),
        None => app_missing(&inner, &id),
    }
}
