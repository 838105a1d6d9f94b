//! Autodiscover: the root document (optionally behind one `redirect` hop), the authenticated
//! `user` document that names the `applications` URL, and the XFrame page.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{
    auth::{authorize, on_pool},
    control::page,
    state::Sim,
};

pub const ROOT_PATH: &str = "/Autodiscover/AutodiscoverService.svc/root";
pub const USER_PATH: &str = "/Autodiscover/AutodiscoverService.svc/root/oauth/user";
pub const XFRAME_PATH: &str = "/Autodiscover/XFrame/XFrame.html";

fn link(href: String) -> Value {
    json!({ "href": href })
}

/// The root document: `self`, `user` and `xframe` links.
fn root_document(sim: &Sim) -> Value {
    let base = &sim.web_base;
    json!({ "_links": {
        "self": link(format!("{base}{ROOT_PATH}?originalDomain=contoso.com")),
        "user": link(format!("{base}{USER_PATH}?originalDomain=contoso.com")),
        "xframe": link(format!("{base}{XFRAME_PATH}")),
    }})
}

/// `GET /`: the lyncdiscover entry point. A browser (`Accept: text/html`) gets the status page
/// instead; every UCWA client asks for JSON.
pub async fn discover(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return page(&sim).into_response();
    }
    if sim.options.http_redirects {
        let location = format!("{}{ROOT_PATH}?originalDomain=contoso.com", sim.web_base);
        return (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    }
    if sim.config.redirect_hop {
        let href = format!("{}{ROOT_PATH}?originalDomain=contoso.com", sim.web_base);
        return Json(json!({ "_links": { "redirect": link(href) } })).into_response();
    }
    Json(root_document(&sim)).into_response()
}

/// `GET <root>`: the root document the redirect hop points at.
pub async fn root(State(sim): State<Arc<Sim>>) -> Json<Value> {
    Json(root_document(&sim))
}

/// `GET <user>`: `401` challenge without a token, else the `applications` link (on the pool
/// listener when there is one), or with `user_hop` first a `user` link to the pool's copy.
pub async fn user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Query(_query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(challenge) = authorize(&sim, &headers) {
        return challenge;
    }
    let web = &sim.web_base;
    if sim.config.user_hop && sim.pool_port.is_some() && !on_pool(&sim, &headers) {
        return Json(json!({ "_links": {
            "self": link(format!("{web}/Autodiscover/AutodiscoverService.svc/root/user")),
            "user": link(format!("{}{USER_PATH}?originalDomain=contoso.com", sim.pool_base)),
        }}))
        .into_response();
    }
    Json(json!({ "_links": {
        "self": link(format!("{web}/Autodiscover/AutodiscoverService.svc/root/user")),
        "applications": link(format!("{}/ucwa/oauth/v1/applications", sim.pool_base)),
        "xframe": link(format!("{web}{XFRAME_PATH}")),
    }}))
    .into_response()
}

/// `GET <xframe>`: a placeholder for the browser cross-domain frame.
pub async fn xframe() -> Html<&'static str> {
    Html("<!DOCTYPE html><html><head><title>XFrame</title></head><body></body></html>")
}
