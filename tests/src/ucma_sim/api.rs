//! The bridge's `/v1` endpoints (§4): authentication, fault injection, validation and the JSON
//! answers, over the state in `state.rs` / `messages.rs`.

use std::{collections::HashSet, sync::Arc, time::Duration};

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
    conn::Conn,
    messages::{Refused, Submitted},
    state::{self as sim, FaultAction, FaultTarget, HealthStatus},
    wire::{
        Availability, ErrorBody, ErrorDetail, PresenceQuery, PresenceResult, RecipientError,
        SendRequest,
    },
    wire::{MessageDoc, now_unix, rfc3339},
};

type Shared = Arc<sim::State>;

/// The IM body limit of §7.
const MAX_IM_BYTES: usize = 16 * 1024;

/// The presence categories a query may ask for.
const CATEGORIES: [&str; 5] = ["state", "contactCard", "note", "services", "calendarData"];

/// The `/v1` routes.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/presence/query", post(presence))
        .route("/v1/messages", post(send))
        .route("/v1/messages/{id}", get(message))
}

/// A request-level error of §6.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retryable = matches!(self.status.as_u16(), 409 | 429 | 503 | 504)
            && self.code != "idempotency_conflict";
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                retryable,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

fn error(
    status: u16,
    code: &'static str,
    message: impl Into<String>,
    retry_after_s: Option<u64>,
) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError {
        status,
        code,
        message: message.into(),
        retry_after_s,
    }
}

/// The error code an injected status stands for.
fn fault_code(status: u16) -> &'static str {
    match status {
        400 => "invalid_request",
        401 => "unauthorized",
        404 => "not_found",
        409 => "in_progress",
        413 => "payload_too_large",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "endpoint_unavailable",
        504 => "upstream_timeout",
        _ => "bridge_error",
    }
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
    if let Some(FaultAction::Status {
        status,
        retry_after_s,
    }) = state.take_fault(target, |a| matches!(a, FaultAction::Status { .. }))
    {
        return Err(error(
            status,
            fault_code(status),
            "injected fault",
            retry_after_s,
        ));
    }
    if body.len() > config.limits.max_body_bytes {
        return Err(error(
            413,
            "payload_too_large",
            format!("body over {} bytes", config.limits.max_body_bytes),
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
    let limits = state.config.limits;
    let doc = json!({
        "status": status,
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
    let max = state.config.limits.max_presence_targets;
    if query.targets.is_empty() {
        return error(422, "unprocessable", "`targets` is empty", None).into_response();
    }
    if query.targets.len() > max {
        return error(
            413,
            "too_many_targets",
            format!("{} targets, at most {max}", query.targets.len()),
            None,
        )
        .into_response();
    }
    if has_duplicates(&query.targets) {
        return error(422, "unprocessable", "`targets` has duplicates", None).into_response();
    }
    if let Some(c) = query
        .categories
        .iter()
        .find(|c| !CATEGORIES.contains(&c.as_str()))
    {
        return error(
            422,
            "unprocessable",
            format!("unknown category `{c}`"),
            None,
        )
        .into_response();
    }
    if let Some(t) = query.timeout_ms.filter(|t| !(100..=30_000).contains(t)) {
        return error(
            422,
            "unprocessable",
            format!("timeout_ms {t} outside 100..=30000"),
            None,
        )
        .into_response();
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
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key.is_empty() || key.len() > 128 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return error(
            400,
            "idempotency_key_required",
            "Idempotency-Key must be 1-128 printable characters",
            None,
        )
        .into_response();
    }
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(400, "invalid_request", e.to_string(), None).into_response(),
    };
    if let Err(e) = validate(&request, state.config.limits.max_recipients) {
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
        .take_fault(FaultTarget::Messages, |a| *a == FaultAction::DropAfterSend)
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

fn document(status: StatusCode, doc: MessageDoc) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/messages/{}", doc.id)).ok();
    let mut response = (status, Json(doc)).into_response();
    if let Some(l) = location {
        response.headers_mut().insert(header::LOCATION, l);
    }
    response
}

/// The whole-request checks of §4.3; bad recipient URIs are left to the per-recipient answer.
fn validate(request: &SendRequest, max_recipients: usize) -> Result<(), ApiError> {
    let bad = |message: String| Err(error(422, "unprocessable", message, None));
    if request.to.is_empty() {
        return bad("`to` is empty".into());
    }
    if request.to.len() > max_recipients {
        let message = format!("{} recipients, at most {max_recipients}", request.to.len());
        return Err(error(413, "too_many_recipients", message, None));
    }
    if has_duplicates(&request.to) {
        return bad("`to` has duplicates".into());
    }
    if request.body.len() > MAX_IM_BYTES {
        return bad(format!("`body` over {MAX_IM_BYTES} bytes"));
    }
    if let Some(m) = request
        .mode
        .as_deref()
        .filter(|m| !matches!(*m, "session" | "page"))
    {
        return bad(format!("unknown mode `{m}`"));
    }
    if let Some(c) = request
        .content_type
        .as_deref()
        .filter(|c| !matches!(*c, "text/plain" | "text/html"))
    {
        return bad(format!("unsupported content_type `{c}`"));
    }
    if let Some(i) = request
        .importance
        .as_deref()
        .filter(|i| !matches!(*i, "normal" | "urgent"))
    {
        return bad(format!("unknown importance `{i}`"));
    }
    if let Some(t) = request.timeout_ms.filter(|t| !(1000..=60_000).contains(t)) {
        return bad(format!("timeout_ms {t} outside 1000..=60000"));
    }
    if let Some(s) = request
        .skip_if
        .iter()
        .find(|s| Availability::from_name(s).is_none())
    {
        return bad(format!("unknown availability `{s}` in skip_if"));
    }
    Ok(())
}

fn has_duplicates(items: &[String]) -> bool {
    let mut seen = HashSet::new();
    !items.iter().all(|i| seen.insert(i.to_ascii_lowercase()))
}
