//! The admin HTTP surface: `/healthz`, `/metrics`, `/api/v1/alerts[/{id}]`, `/api/v1/status`,
//! `/api/v1/incidents[/{id}[/ack|/resolve]]`, `/api/v1/silences[/{id}]`, `/api/v1/test-alert`,
//! `/-/reload` and a status page, behind [`guard`] (Host allow-list,
//! same-origin writes, the admin token) and served by [`server`] (connection cap, timeouts).

pub mod alerts;
pub mod answer;
pub mod guard;
pub mod incidents;
pub mod server;
pub mod silences;

use std::{
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use alertbridge_plugin_api::{Alert, Severity};

use self::answer::ApiError;
pub use self::guard::{Access, SharedAccess};
pub use crate::config::admin::AdminSettings;
use crate::{
    dispatch::Dispatcher,
    ingest::Ingest,
    metrics::Metrics,
    plugins::Registry,
    queue::Queue,
    reload::ReloadRequest,
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
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// The admin settings at start (limits, timeouts).
    pub settings: AdminSettings,
    /// The token and allowed host names; a reload swaps them.
    pub access: SharedAccess,
    /// The incident engine, when escalation policies are configured.
    pub incidents: Option<crate::incidents::Engine>,
    /// The silences (`/api/v1/silences`); `None` answers 404 `silences_off`.
    pub silences: Option<Arc<crate::silences::Silences>>,
}

/// The token and host names of `settings`, shared so that a reload can swap them.
pub fn shared_access(settings: &AdminSettings) -> SharedAccess {
    Arc::new(RwLock::new(Arc::new(Access::new(settings))))
}

/// Puts the token and host names of `settings` in force.
pub fn swap_access(access: &SharedAccess, settings: &AdminSettings) {
    *access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Access::new(settings));
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/page.js", get(page_js))
        .route("/page.css", get(page_css))
        .route("/silences.js", get(silences_js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(alerts::list))
        .route("/api/v1/alerts/{id}", get(alerts::get))
        .route("/api/v1/status", get(status))
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::get))
        .route("/api/v1/incidents/{id}/ack", post(incidents::ack))
        .route("/api/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route(
            "/api/v1/silences",
            get(silences::list).post(silences::create),
        )
        .route(
            "/api/v1/silences/{id}",
            get(silences::get).delete(silences::expire),
        )
        .route("/api/v1/test-alert", post(test_alert))
        .route("/-/reload", post(reload))
        .fallback(answer::no_such_path)
        .method_not_allowed_fallback(answer::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::guard,
        ))
        .with_state(state)
}

/// Serves the admin surface on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let settings = state.settings.clone();
    let app = router(state);
    server::run(listener, app, &settings, shutdown).await;
    tracing::debug!(listen = ?addr, "Admin HTTP stopped.");
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

async fn reload(State(s): State<Arc<AdminState>>) -> Result<Response, ApiError> {
    let stopping = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "alertbridge is stopping",
        )
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return Err(stopping());
    }
    match rx.await {
        Ok(Ok(done)) => {
            Ok(Json(serde_json::json!({"status": "reloaded", "result": done})).into_response())
        }
        Ok(Err(errors)) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let n = errors.len();
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "reload_refused",
                format!(
                    "reload refused ({n} error{}); the running config stays",
                    if n == 1 { "" } else { "s" }
                ),
            )
            .with("status", "refused")
            .with("errors", errors))
        }
        Err(_) => Err(stopping()),
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
                "escalation": plan.escalations.get(&r.name),
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
async fn test_alert(
    State(s): State<Arc<AdminState>>,
    t: Result<Json<TestAlert>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(t) = t?;
    let bad = |code, msg: String| ApiError::new(StatusCode::BAD_REQUEST, code, msg);
    if s.dispatcher.plan().router.route(&t.route).is_none() {
        return Err(bad("unknown_route", format!("no route `{}`", t.route)));
    }
    let severity = match t.severity.as_deref().map(str::parse::<Severity>) {
        None => Severity::NORMAL,
        Some(Ok(sev)) => sev,
        Some(Err(e)) => return Err(bad("unknown_severity", e.to_string())),
    };
    let mut alert = Alert::new(t.subject);
    alert.body = t.body;
    alert.severity = severity;
    alert.attributes.insert(ROUTE_ATTRIBUTE.into(), t.route);
    match s.ingest.submit(&ADMIN_SOURCE.into(), alert).await {
        Ok(r) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"id": r.alert_id})),
        )
            .into_response()),
        Err(e) => Err(ApiError::from(&e)),
    }
}

/// The status page: plain HTML that polls the API, with no asset from elsewhere and no inline
/// script or style (see [`guard::CSP`]).
async fn status_page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn page_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("page.js"),
    )
        .into_response()
}

/// The status page's silences section (its own script beside `page.js`).
async fn silences_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("silences.js"),
    )
        .into_response()
}

async fn page_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("page.css"),
    )
        .into_response()
}
