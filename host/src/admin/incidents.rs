//! `GET /api/v1/incidents[/{id}]` (state, level, who was paged when, who acked/resolved) and
//! `POST /api/v1/incidents/{id}/ack|resolve` (behind the same guard as every other write: same
//! origin and the admin token). Without incidents configured every path answers 404
//! `incidents_off`.
//!
//! The list comes in pages, newest first by id: at most `?limit=` ([`DEFAULT_PAGE`], at most
//! [`MAX_PAGE`]) incidents in `?state=` (`open`, `resolved` or `all`, the default) with an id
//! below `?before=`; its `next_before` is the cursor for the next page of that state, `null`
//! after the oldest. The state filters before the page is cut, so `state=open` reaches every
//! open incident however many resolved ones are newer. A page is one read of the store (a
//! shared store: `LIMIT` rows), however many incidents were ever kept.

use std::sync::Arc;

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, answer::ApiError};
use crate::incidents::{Engine, Incident, IncidentError, IncidentId, PageState};

/// Who an action through the API is recorded as.
pub const API_ACTOR: &str = "admin API";
/// Incidents per page when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// The most incidents one page holds, whatever `limit` asks for.
pub const MAX_PAGE: usize = 500;

fn engine(s: &AdminState) -> Result<&Engine, ApiError> {
    s.incidents.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "incidents_off",
            "no escalation policy is configured: this host keeps no incidents",
        )
    })
}

/// An incident as the API shows it.
pub fn view(i: &Incident) -> Value {
    json!({
        "id": i.id.0,
        "number": i.id.to_string(),
        "state": i.state.name(),
        "level": i.level(),
        "title": i.title,
        "policy": i.policy,
        "route": i.route,
        "source": i.source,
        "dedup_key": i.dedup_key,
        "seen": i.seen,
        "opened_ms": i.opened_ms,
        "pages": i.pages.iter().map(|p| json!({
            "seq": p.seq,
            "level": p.level,
            "round": p.round,
            "users": p.users,
            "groups": p.groups,
            "at_ms": p.at_ms,
            "handed": p.handed,
            "reachable": p.reachable,
            "reason": p.reason,
        })).collect::<Vec<_>>(),
        "next_due_ms": i.next.map(|n| n.due_ms),
        "acked": i.acked.as_ref().map(|m| json!({"by": m.by, "at_ms": m.at_ms})),
        "resolved": i.resolved.as_ref().map(|m| json!({"by": m.by, "at_ms": m.at_ms})),
    })
}

fn id_of(p: Result<Path<u64>, PathRejection>) -> Result<IncidentId, ApiError> {
    match p {
        Ok(Path(n)) if n > 0 => Ok(IncidentId(n)),
        _ => Err(ApiError::bad_request(
            "the incident id is a positive whole number",
        )),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    before: Option<u64>,
    #[serde(default)]
    state: PageState,
}

/// One page of incidents, newest first (see the module's doc).
pub async fn list(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let engine = engine(&s)?;
    let Query(q) = q?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    // One more than the page: whether an older one follows.
    let mut page = engine
        .page(q.state, q.before.map(IncidentId), limit + 1)
        .await;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_before = page.last().filter(|_| more).map(|i| i.id.0);
    let items: Vec<Value> = page.iter().map(view).collect();
    Ok(Json(json!({ "incidents": items, "next_before": next_before })).into_response())
}

pub async fn get(
    State(s): State<Arc<AdminState>>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(p)?;
    match engine(&s)?.get(id).await {
        Some(i) => Ok(Json(view(&i)).into_response()),
        None => Err(ApiError::not_found(format!("no incident {}", id.0))),
    }
}

fn failed(e: IncidentError) -> ApiError {
    match e {
        IncidentError::Unknown(id) => ApiError::not_found(format!("no incident {}", id.0)),
        IncidentError::AlreadyResolved(id) => ApiError::new(
            StatusCode::CONFLICT,
            "already_resolved",
            format!("{id} is already resolved"),
        ),
        e => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "incidents_unavailable",
            crate::error_chain(&e),
        )
        .retry_after(5),
    }
}

pub async fn ack(
    State(s): State<Arc<AdminState>>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(p)?;
    let (inc, changed) = engine(&s)?.ack(id, API_ACTOR).await.map_err(failed)?;
    let mut v = view(&inc);
    v["changed"] = changed.into();
    Ok(Json(v).into_response())
}

pub async fn resolve(
    State(s): State<Arc<AdminState>>,
    p: Result<Path<u64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(p)?;
    let inc = engine(&s)?.resolve(id, API_ACTOR).await.map_err(failed)?;
    Ok(Json(view(&inc)).into_response())
}
