//! People: `people/{user}/presence` for any provisioned user (404 for others), alone or as
//! parts of a `batch` request.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    application::{app_base, check},
    state::{Sim, normalize, unix_ms},
};

/// The `contactPresence` resource of `user`, or a 404 error body.
pub fn presence_doc(sim: &Sim, app_id: &str, user: &str) -> (StatusCode, Value) {
    let inner = sim.lock();
    let Some(person) = inner.users.get(&normalize(user)) else {
        return (
            StatusCode::NOT_FOUND,
            json!({ "code": "NotFound", "message": "The person was not found." }),
        );
    };
    let doc = json!({
        "availability": person.availability,
        "deviceType": if person.availability == "Offline" { "Unknown" } else { "Computer" },
        "lastActive": format!("/Date({})/", unix_ms()),
        "_links": { "self": { "href": format!("{}/people/{user}/presence", app_base(app_id)) } },
        "rel": "contactPresence",
    });
    (StatusCode::OK, doc)
}

/// `GET <people>/{user}/presence`.
pub async fn presence(
    State(sim): State<Arc<Sim>>,
    Path((id, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check(&sim, &headers, &id) {
        return response;
    }
    let (status, doc) = presence_doc(&sim, &id, &user);
    (status, Json(doc)).into_response()
}
