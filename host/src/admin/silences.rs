//! `GET /api/v1/silences[/{id}]`, `POST /api/v1/silences` (201 with the id) and
//! `DELETE /api/v1/silences/{id}` (expire now), behind the same guard as every other write
//! (same origin and the admin token); the listings hold labels, so they need the token too.
//! Without silences every path answers 404 `silences_off`.

use std::sync::Arc;

use alertbridge_plugin_api::kit::format::unix_ms_rfc3339;
use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection, rejection::PathRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AdminState, answer::ApiError};
use crate::{
    model::now_ms,
    silences::{NewSilence, Silence, SilenceError, Silences},
};

fn registry(s: &AdminState) -> Result<&Silences, ApiError> {
    s.silences.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "silences_off",
            "this host keeps no silences",
        )
    })
}

/// A silence as the API shows it, with its state at `now`.
pub fn view(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "state": s.state(now).name(),
        "matchers": s.matchers,
        "match": s.matchers.compile().map_or_else(|e| e.to_string(), |m| m.describe()),
        "starts_at": unix_ms_rfc3339(s.starts_ms),
        "ends_at": unix_ms_rfc3339(s.ends_ms),
        "starts_ms": s.starts_ms,
        "ends_ms": s.ends_ms,
        "created_ms": s.created_ms,
        "expired_ms": s.expired_ms,
        "author": s.author,
        "comment": s.comment,
    })
}

fn id_of(p: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    match p {
        Ok(Path(n)) if n > 0 => Ok(n),
        _ => Err(ApiError::bad_request(
            "the silence id is a positive whole number",
        )),
    }
}

fn failed(e: SilenceError) -> ApiError {
    match e {
        SilenceError::Invalid(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_silence", e.to_string())
                .with("field", e.key)
        }
        e @ SilenceError::TooManyPatterns { .. } => {
            ApiError::new(StatusCode::CONFLICT, "too_many_patterns", e.to_string())
        }
        e @ SilenceError::TooMany { .. } => {
            ApiError::new(StatusCode::CONFLICT, "too_many_silences", e.to_string())
        }
        SilenceError::Unknown(id) => ApiError::not_found(format!("no silence {id}")),
        e @ SilenceError::AlreadyExpired(_) => {
            ApiError::new(StatusCode::CONFLICT, "already_expired", e.to_string())
        }
        e => {
            tracing::warn!(error = %crate::error_chain(&e), "Silence store failed.");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "silences_unavailable",
                crate::error_chain(&e),
            )
            .retry_after(5)
        }
    }
}

/// Every silence, newest first.
pub async fn list(State(s): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let now = now_ms();
    let items: Vec<Value> = registry(&s)?.list().iter().map(|x| view(x, now)).collect();
    Ok(Json(json!({ "silences": items })).into_response())
}

pub async fn get(
    State(s): State<Arc<AdminState>>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(p)?;
    match registry(&s)?.get(id) {
        Some(x) => Ok(Json(view(&x, now_ms())).into_response()),
        None => Err(ApiError::not_found(format!("no silence {id}"))),
    }
}

/// Creates a silence; queued alerts it matches are looked at again at once.
pub async fn create(
    State(s): State<Arc<AdminState>>,
    body: Result<Json<NewSilence>, JsonRejection>,
) -> Result<Response, ApiError> {
    let silences = registry(&s)?;
    let Json(req) = body?;
    let now = now_ms();
    let made = silences.create(&req, now).await.map_err(failed)?;
    s.dispatcher.recheck_all();
    Ok((StatusCode::CREATED, Json(view(&made, now))).into_response())
}

/// Expires a silence now.
pub async fn expire(
    State(s): State<Arc<AdminState>>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(p)?;
    let now = now_ms();
    let gone = registry(&s)?.expire(id, now).await.map_err(failed)?;
    Ok(Json(view(&gone, now)).into_response())
}
