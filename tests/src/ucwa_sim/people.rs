//! People: `people/{user}/presence` for any provisioned user (404 for others).

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    application::{app_base, check},
    auth::ucwa_error,
    state::{Sim, normalize, unix_ms},
};

/// `GET <people>/{user}/presence`: the `contactPresence` resource.
pub async fn presence(
    State(sim): State<Arc<Sim>>,
    Path((id, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let key = normalize(&user);
    let inner = sim.lock();
    let Some(person) = inner.users.get(&key) else {
        return ucwa_error(StatusCode::NOT_FOUND, "NotFound", None, "The person was not found.");
    };
    Json(json!({
        "availability": person.availability,
        "deviceType": if person.availability == "Offline" { "Unknown" } else { "Computer" },
        "lastActive": format!("/Date({})/", unix_ms()),
        "_links": { "self": { "href": format!("{}/people/{user}/presence", app_base(&id)) } },
        "rel": "contactPresence",
    }))
    .into_response()
}
