//! Request-level errors (§6) and the whole-request checks of presence queries (§4.2) and
//! sends (§4.3).

use std::{borrow::Cow, collections::HashSet};

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::wire::{Availability, ErrorBody, ErrorDetail, PresenceQuery, SendRequest};

/// The IM body limit of §7.
const MAX_IM_BYTES: usize = 16 * 1024;

/// The presence categories a query may ask for.
const CATEGORIES: [&str; 5] = ["state", "contactCard", "note", "services", "calendarData"];

/// A request-level error of §6.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
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

pub fn error(
    status: u16,
    code: impl Into<Cow<'static, str>>,
    message: impl Into<String>,
    retry_after_s: Option<u64>,
) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError {
        status,
        code: code.into(),
        message: message.into(),
        retry_after_s,
    }
}

/// The error code an injected status stands for.
pub fn fault_code(status: u16) -> &'static str {
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

/// The whole-request checks of §4.2.
pub fn validate_query(query: &PresenceQuery, max: usize) -> Result<(), ApiError> {
    if query.targets.is_empty() {
        return Err(error(422, "unprocessable", "`targets` is empty", None));
    }
    if query.targets.len() > max {
        return Err(error(
            413,
            "too_many_targets",
            format!("{} targets, at most {max}", query.targets.len()),
            None,
        ));
    }
    if has_duplicates(&query.targets) {
        return Err(error(
            422,
            "unprocessable",
            "`targets` has duplicates",
            None,
        ));
    }
    if let Some(c) = query
        .categories
        .iter()
        .find(|c| !CATEGORIES.contains(&c.as_str()))
    {
        return Err(error(
            422,
            "unprocessable",
            format!("unknown category `{c}`"),
            None,
        ));
    }
    if let Some(t) = query.timeout_ms.filter(|t| !(100..=30_000).contains(t)) {
        return Err(error(
            422,
            "unprocessable",
            format!("timeout_ms {t} outside 100..=30000"),
            None,
        ));
    }
    Ok(())
}

/// The whole-request checks of §4.3; bad recipient URIs are left to the per-recipient answer.
pub fn validate_send(request: &SendRequest, max_recipients: usize) -> Result<(), ApiError> {
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
