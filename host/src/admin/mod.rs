//! The admin HTTP surface: `/healthz`, `/metrics`, `/api/v1/alerts[/{id}]` and a status page.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use alertbridge_plugin_api::{Alert, Severity, abi_stable::std_types::RResult};

use crate::{
    dispatch::Dispatcher,
    host_api::Ingest,
    instances::Registry,
    metrics::Metrics,
    model::StoredAlert,
    queue::Queue,
    router::{ADMIN_SOURCE, ROUTE_ATTRIBUTE},
};

/// What the handlers read.
pub struct AdminState {
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub instances: Arc<Registry>,
    pub dispatcher: Arc<Dispatcher>,
    pub ingest: Arc<Ingest>,
    /// Where `POST /-/reload` asks the main loop to reload.
    pub reload: tokio::sync::mpsc::Sender<crate::app::ReloadRequest>,
}

/// An alert as the API shows it.
#[derive(Serialize)]
struct AlertView<'a> {
    id: u64,
    #[serde(flatten)]
    alert: &'a StoredAlert,
    state: &'static str,
}

fn view(a: &StoredAlert) -> AlertView<'_> {
    AlertView {
        id: a.id,
        alert: a,
        state: if a.is_finished() {
            "finished"
        } else if a.routed {
            "delivering"
        } else {
            "queued"
        },
    }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/status", get(status))
        .route("/api/v1/test-alert", axum::routing::post(test_alert))
        .route("/-/reload", axum::routing::post(reload))
        .with_state(state)
}

/// Serves the admin surface on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "Admin HTTP listening.");
    let app = router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "Admin HTTP server failed.");
    }
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    let statuses: Vec<_> = s
        .instances
        .all()
        .iter()
        .map(|i| (i.is_healthy(), i.status()))
        .collect();
    let mut failing: Vec<_> = statuses
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, st)| serde_json::json!(st))
        .collect();
    // The durable queue is part of health: while it cannot write, nothing can be accepted.
    let queue_fault = s.metrics.queue_fault();
    if let Some(reason) = &queue_fault {
        failing.push(serde_json::json!({
            "name": "queue", "role": "queue", "state": "failed",
            "message": format!("queue unavailable, reopening with backoff: {reason}"),
        }));
    }
    let code = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if failing.is_empty() { "ok" } else { "failing" },
        "failing": failing,
        "instances": statuses.iter().map(|(_, st)| st).collect::<Vec<_>>(),
        "queue_depth": s.metrics.queue_depth(),
        "queue": { "up": queue_fault.is_none(), "error": queue_fault },
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_alerts(State(s): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match s.queue.recent(limit) {
        Ok(list) => {
            Json(serde_json::json!({ "alerts": list.iter().map(view).collect::<Vec<_>>() }))
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("queue: {}", crate::error_chain(&e)),
        )
            .into_response(),
    }
}

async fn get_alert(State(s): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match s.queue.get(id) {
        Ok(Some(a)) => Json(view(&a)).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": format!("no alert {id}")})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("queue: {}", crate::error_chain(&e)),
        )
            .into_response(),
    }
}

async fn reload(State(s): State<Arc<AdminState>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "not accepting reloads"})),
        )
            .into_response();
    }
    match rx.await {
        Ok(Ok(done)) => {
            Json(serde_json::json!({"status": "reloaded", "result": done})).into_response()
        }
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"status": "refused", "errors": errors})),
        )
            .into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "stopping"})),
        )
            .into_response(),
    }
}

/// Instances, routes, groups and queue depth, for the status page.
async fn status(State(s): State<Arc<AdminState>>) -> Response {
    let plan = s.dispatcher.plan();
    let routes: Vec<_> = plan
        .router
        .routes
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name, "match": r.matcher.describe(), "groups": r.groups, "users": r.users,
                "sinks": r.sinks, "continue": r.cont, "offline": r.offline.to_string(),
            })
        })
        .collect();
    Json(serde_json::json!({
        "instances": s.instances.all().iter().map(|i| i.status()).collect::<Vec<_>>(),
        "routes": routes,
        "groups": plan.router.groups,
        "queue_depth": s.metrics.queue_depth(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct TestAlert {
    route: String,
    subject: String,
    #[serde(default)]
    body: String,
    severity: Option<String>,
}

/// Queues a test alert that goes through one chosen route (as source `admin`).
async fn test_alert(State(s): State<Arc<AdminState>>, Json(t): Json<TestAlert>) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": msg})),
        )
            .into_response()
    };
    if s.dispatcher.plan().router.route(&t.route).is_none() {
        return bad(format!("no route `{}`", t.route));
    }
    let severity = match t.severity.as_deref().map(Severity::from_name) {
        None => Severity::NORMAL,
        Some(Some(sev)) => sev,
        Some(None) => return bad("unknown severity".into()),
    };
    let mut alert = Alert::new(t.subject);
    alert.body = t.body;
    alert.severity = severity;
    alert.attributes.insert(ROUTE_ATTRIBUTE.into(), t.route);
    match s.ingest.submit(&ADMIN_SOURCE.into(), alert).await {
        RResult::ROk(r) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"id": r.alert_id})),
        )
            .into_response(),
        RResult::RErr(e) => bad(e.message.to_string()),
    }
}

/// The status page: plain HTML that polls the API, with no asset from elsewhere.
async fn status_page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
