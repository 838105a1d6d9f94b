//! The bridge's `/v1` endpoints (§4): authentication, fault injection and the JSON answers,
//! over the state in `state.rs` / `messages.rs`.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use ring::digest;
use serde_json::json;
use tracing::debug;

use super::{
    auth::{self, SignedParts},
    checks::{ApiError, error, fault_code, validate_query, validate_send},
    conn::Conn,
    inbound::AckError,
    messages::{Refused, Submitted},
    state::{self as sim, FaultAction, FaultTarget, HealthStatus},
    wire::{
        AckRequest, Availability, MessageDoc, PresenceQuery, PresenceResult, RecipientError,
        SayRequest, SendRequest, now_unix, rfc3339,
    },
};

type Shared = Arc<sim::State>;

/// The `/v1` routes.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/presence/query", post(presence))
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(message))
        .route("/v1/inbound", get(inbound))
        .route("/v1/inbound/ack", post(ack))
        .route("/v1/conversations/{id}/messages", post(say))
}

/// Authentication, injected status faults and the body size limit, common to every endpoint.
fn gate(
    state: &Shared,
    target: FaultTarget,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    state.count(|c| c.requests += 1);
    let path_and_query = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let parts = SignedParts {
        method: method.as_str(),
        path_and_query,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        body,
    };
    let config = &state.config;
    if let Err(why) = auth::check(
        headers,
        &parts,
        config.secret.as_bytes(),
        config.require_signature,
        now_unix(),
    ) {
        debug!(path = path_and_query, reason = %why, "Refused a request.");
        state.count(|c| c.unauthorized += 1);
        return Err(error(401, "unauthorized", "authentication failed", None));
    }
    let named = named_users(body);
    if let Some((
        FaultAction::Status {
            status,
            retry_after_s,
        },
        code,
    )) = state.take_fault(target, &named, |a| matches!(a, FaultAction::Status { .. }))
    {
        let code = code.unwrap_or_else(|| fault_code(status).to_owned());
        return Err(error(status, code, "injected fault", retry_after_s));
    }
    let max_body_bytes = state.limits().max_body_bytes;
    if body.len() > max_body_bytes {
        return Err(error(
            413,
            "payload_too_large",
            format!("body over {max_body_bytes} bytes"),
            None,
        ));
    }
    if target != FaultTarget::Health && state.health() == HealthStatus::Down {
        return Err(error(
            503,
            "endpoint_unavailable",
            "application endpoint is not established",
            Some(5),
        ));
    }
    Ok(())
}

/// The users a request body names (`to` of a send, `targets` of a presence query), for faults
/// aimed at one recipient's requests.
fn named_users(body: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize, Default)]
    struct Named {
        #[serde(default)]
        to: Vec<String>,
        #[serde(default)]
        targets: Vec<String>,
    }
    let named: Named = serde_json::from_slice(body).unwrap_or_default();
    named.to.into_iter().chain(named.targets).collect()
}

async fn health(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = gate(&state, FaultTarget::Health, &method, &uri, &headers, b"") {
        return e.into_response();
    }
    state.count(|c| c.health_checks += 1);
    let status = state.health();
    let limits = state.limits();
    let doc = json!({
        "status": status,
        "reason": match status {
            HealthStatus::Ok => None,
            HealthStatus::Degraded => Some("application endpoint re-establishing"),
            HealthStatus::Down => Some("application endpoint terminated"),
        },
        "ucma_version": "3.0",
        "server_family": "lync2010",
        "endpoint": {
            "uri": state.config.endpoint_uri,
            "state": match status { HealthStatus::Ok => "Established", HealthStatus::Degraded => "Reestablishing", HealthStatus::Down => "Terminated" },
        },
        "platform": {"state": "Started"},
        "in_flight": {"calls": state.calls_in_flight(), "queries": 0},
        "limits": {
            "max_presence_targets": limits.max_presence_targets,
            "max_recipients": limits.max_recipients,
            "max_body_bytes": limits.max_body_bytes,
        },
        "uptime_s": state.uptime().as_secs(),
    });
    let code = if status == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(doc)).into_response()
}

async fn presence(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = gate(
        &state,
        FaultTarget::Presence,
        &method,
        &uri,
        &headers,
        &body,
    ) {
        return e.into_response();
    }
    state.count(|c| c.presence_queries += 1);
    let query: PresenceQuery = match serde_json::from_slice(&body) {
        Ok(q) => q,
        Err(e) => return error(400, "invalid_request", e.to_string(), None).into_response(),
    };
    if let Err(e) = validate_query(&query, state.limits().max_presence_targets) {
        return e.into_response();
    }
    let as_of = rfc3339(now_unix());
    let results: Vec<PresenceResult> = query
        .targets
        .into_iter()
        .map(|target| {
            let known = super::wire::is_sip_uri(&target)
                .then(|| state.presence(&target))
                .flatten();
            let error = match known {
                Some(_) => None,
                None if super::wire::is_sip_uri(&target) => Some(RecipientError::from_sip(404)),
                None => Some(RecipientError::other(
                    "invalid_uri",
                    "not a sip:user@host URI",
                    false,
                )),
            };
            let availability = known.unwrap_or(Availability::Unknown);
            PresenceResult {
                target,
                availability,
                availability_value: availability.published_value(),
                activity: known.map(|a| a.name().to_ascii_lowercase()),
                source: known.map(|_| "query"),
                as_of: known.map(|_| as_of.clone()),
                error,
            }
        })
        .collect();
    Json(json!({ "results": results })).into_response()
}

async fn send(
    State(state): State<Shared>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = gate(
        &state,
        FaultTarget::Messages,
        &method,
        &uri,
        &headers,
        &body,
    ) {
        return e.into_response();
    }
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request", e.to_string(), None).into_response(),
    };
    if let Err(e) = validate_send(&request, state.limits().max_recipients) {
        return e.into_response();
    }
    let wait = request.wait.unwrap_or(true);
    let timeout = Duration::from_millis(request.timeout_ms.unwrap_or(30_000));
    let body_hash = digest::digest(&digest::SHA256, &body).as_ref().to_vec();
    let response = match state.submit(key, body_hash, request) {
        Err(Refused::Conflict) => {
            return error(
                409,
                "idempotency_conflict",
                "key used with a different body",
                None,
            )
            .into_response();
        }
        Err(Refused::InProgress) => {
            return error(
                409,
                "in_progress",
                "a send under this key is running",
                Some(1),
            )
            .into_response();
        }
        Ok(Submitted::Replay(doc)) => {
            let mut r = document(StatusCode::OK, doc);
            r.headers_mut()
                .insert("idempotent-replay", HeaderValue::from_static("true"));
            r
        }
        Ok(Submitted::Started { id }) if !wait => match state.message(&id) {
            Some(doc) => document(StatusCode::ACCEPTED, doc),
            None => error(500, "bridge_error", "message vanished", None).into_response(),
        },
        Ok(Submitted::Started { id }) => match state.wait_final(&id, timeout).await {
            Some(doc) => document(StatusCode::OK, doc),
            None => error(500, "bridge_error", "message vanished", None).into_response(),
        },
    };
    if state
        .take_fault(FaultTarget::Messages, &named_users(&body), |a| {
            *a == FaultAction::DropAfterSend
        })
        .is_some()
    {
        debug!(peer = %conn.peer, "Dropping the connection instead of answering.");
        state.count(|c| c.dropped += 1);
        conn.cut();
    }
    response
}

async fn message(
    State(state): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = gate(&state, FaultTarget::Messages, &method, &uri, &headers, b"") {
        return e.into_response();
    }
    match state.message(&id) {
        Some(doc) => document(StatusCode::OK, doc),
        None => error(404, "not_found", format!("no message {id}"), None).into_response(),
    }
}

/// The request's `Idempotency-Key` (§3: 1–128 printable ASCII characters).
fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(error(
            400,
            "idempotency_key_required",
            "Idempotency-Key must be 1-128 printable characters",
            None,
        ));
    }
    Ok(key)
}

/// `404 not_supported` while inbound support is off (§4.5).
fn not_supported() -> Response {
    error(
        404,
        "not_supported",
        "this bridge does not relay inbound messages",
        None,
    )
    .into_response()
}

/// A query parameter of `uri` as a number; `Err` for a present but bad one.
fn number(uri: &Uri, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return v.parse().map(Some).map_err(|_| {
                error(
                    400,
                    "invalid_request",
                    format!("`{name}` is not a number"),
                    None,
                )
            });
        }
    }
    Ok(None)
}

async fn inbound(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = gate(&state, FaultTarget::Inbound, &method, &uri, &headers, b"") {
        return e.into_response();
    }
    state.count(|c| c.inbound_polls += 1);
    if !state.inbound_supported() {
        return not_supported();
    }
    let (after, wait_ms, limit) = match (
        number(&uri, "after"),
        number(&uri, "wait_ms"),
        number(&uri, "limit"),
    ) {
        (Ok(a), Ok(w), Ok(l)) => (a.unwrap_or(0), w.unwrap_or(0), l.unwrap_or(50)),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return e.into_response(),
    };
    if wait_ms > 30_000 || !(1..=100).contains(&limit) {
        return error(
            422,
            "unprocessable",
            "wait_ms must be 0..=30000 and limit 1..=100",
            None,
        )
        .into_response();
    }
    let limit = usize::try_from(limit).unwrap_or(100);
    let mut messages = state
        .inbound(after, limit, Duration::from_millis(wait_ms))
        .await;
    // §4.5: an answer stays under 512 KiB of text (at least one message).
    let mut size = 0;
    let keep = messages
        .iter()
        .take_while(|m| {
            size += m.text.len();
            size <= 512 * 1024
        })
        .count()
        .max(1);
    messages.truncate(keep);
    let next = messages.last().map_or(after, |m| m.cursor);
    let counters = state.counters();
    Json(json!({
        "messages": messages,
        "next": next,
        "pending": state.pending_inbound().len(),
        "dropped": counters.inbound_dropped,
    }))
    .into_response()
}

async fn ack(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = gate(&state, FaultTarget::Inbound, &method, &uri, &headers, &body) {
        return e.into_response();
    }
    if !state.inbound_supported() {
        return not_supported();
    }
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request", e.to_string(), None).into_response(),
    };
    match state.ack(request.up_to) {
        Ok(acked) => Json(json!({
            "acked": acked,
            "pending": state.pending_inbound().len(),
        }))
        .into_response(),
        Err(AckError::Ahead { last }) => error(
            422,
            "unprocessable",
            format!("up_to {} is past the last cursor {last}", request.up_to),
            None,
        )
        .into_response(),
    }
}

async fn say(
    State(state): State<Shared>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = gate(
        &state,
        FaultTarget::Conversations,
        &method,
        &uri,
        &headers,
        &body,
    ) {
        return e.into_response();
    }
    if !state.inbound_supported() {
        return not_supported();
    }
    let key = match idempotency_key(&headers) {
        Ok(key) => key.to_owned(),
        Err(e) => return e.into_response(),
    };
    let request: SayRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request", e.to_string(), None).into_response(),
    };
    if request.text.is_empty() || request.text.len() > 16 * 1024 {
        return error(422, "unprocessable", "`text` must be 1..=16384 bytes", None).into_response();
    }
    if let Some(c) = request
        .content_type
        .as_deref()
        .filter(|c| !matches!(*c, "text/plain" | "text/html"))
    {
        return error(
            422,
            "unprocessable",
            format!("unsupported content_type `{c}`"),
            None,
        )
        .into_response();
    }
    let body_hash = digest::digest(&digest::SHA256, &body).as_ref().to_vec();
    let stored = state.lock().talk.answers.get(&key).cloned();
    match stored {
        Some((hash, _)) if hash != body_hash => {
            return error(
                409,
                "idempotency_conflict",
                "key used with a different body",
                None,
            )
            .into_response();
        }
        Some((_, doc)) => {
            let mut r = Json(doc).into_response();
            r.headers_mut()
                .insert("idempotent-replay", HeaderValue::from_static("true"));
            return r;
        }
        None => {}
    }
    if state.say(&id, &request.to, &request.text).is_err() {
        return error(
            404,
            "conversation_gone",
            format!("no open conversation {id} with {}", request.to),
            None,
        )
        .into_response();
    }
    let doc = json!({
        "conversation": id,
        "status": "delivered",
        "sip_status": 200,
        "completed_at": rfc3339(now_unix()),
    });
    state
        .lock()
        .talk
        .answers
        .insert(key, (body_hash, doc.clone()));
    Json(doc).into_response()
}

fn document(status: StatusCode, doc: MessageDoc) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/messages/{}", doc.id)).ok();
    let mut response = (status, Json(doc)).into_response();
    if let Some(l) = location {
        response.headers_mut().insert(header::LOCATION, l);
    }
    response
}
