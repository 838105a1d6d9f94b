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

use crate::{instances::Registry, metrics::Metrics, model::StoredAlert, queue::Queue};

/// What the handlers read.
pub struct AdminState {
    pub queue: Arc<dyn Queue>,
    pub metrics: Arc<Metrics>,
    pub instances: Arc<Registry>,
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
    AlertView { id: a.id, alert: a, state: if a.is_finished() { "finished" } else if a.routed { "delivering" } else { "queued" } }
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/-/reload", axum::routing::post(reload))
        .with_state(state)
}

/// Serves the admin surface on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(listen = ?addr, "Admin HTTP listening.");
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(error = %e, "Admin HTTP server failed.");
    }
}

async fn healthz(State(s): State<Arc<AdminState>>) -> Response {
    let statuses: Vec<_> = s.instances.all().iter().map(|i| (i.is_healthy(), i.status())).collect();
    let failing: Vec<_> = statuses.iter().filter(|(ok, _)| !ok).map(|(_, st)| st).collect();
    let code = if failing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({
        "status": if failing.is_empty() { "ok" } else { "failing" },
        "failing": failing,
        "instances": statuses.iter().map(|(_, st)| st).collect::<Vec<_>>(),
        "queue_depth": s.metrics.queue_depth(),
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_alerts(State(s): State<Arc<AdminState>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match s.queue.recent(limit) {
        Ok(list) => Json(serde_json::json!({ "alerts": list.iter().map(view).collect::<Vec<_>>() })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("queue: {}", crate::error_chain(&e))).into_response(),
    }
}

async fn get_alert(State(s): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match s.queue.get(id) {
        Ok(Some(a)) => Json(view(&a)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": format!("no alert {id}")}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("queue: {}", crate::error_chain(&e))).into_response(),
    }
}

async fn reload(State(s): State<Arc<AdminState>>) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if s.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "not accepting reloads"}))).into_response();
    }
    match rx.await {
        Ok(Ok(done)) => Json(serde_json::json!({"status": "reloaded", "result": done})).into_response(),
        Ok(Err(errors)) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({"status": "refused", "errors": errors}))).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "stopping"}))).into_response(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn status_page(State(s): State<Arc<AdminState>>) -> Html<String> {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>alertbridge</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>\
         <h1>alertbridge</h1><h2>Instances</h2><table><tr><th>name<th>role<th>plugin<th>state<th>restarts<th>last error</tr>",
    );
    for i in s.instances.all().iter() {
        let st = i.status();
        html.push_str(&format!(
            "<tr><td>{}<td>{}<td>{}<td>{} {}<td>{}<td>{}</tr>",
            escape(&st.name),
            st.role,
            escape(&st.plugin),
            escape(&st.state),
            escape(&st.message),
            st.restarts,
            escape(st.last_error.as_deref().unwrap_or(""))
        ));
    }
    html.push_str(&format!("</table><p>Queue depth: {}</p><h2>Recent alerts</h2><table><tr><th>id<th>source<th>subject<th>recipients</tr>", s.metrics.queue_depth()));
    for a in s.queue.recent(50).unwrap_or_default() {
        let who: Vec<String> = a.recipients.iter().map(|r| format!("{} via {}: {} {}", escape(&r.user), escape(&r.sink), r.outcome.name(), escape(&r.reason))).collect();
        html.push_str(&format!("<tr><td>{}<td>{}<td>{}<td>{}</tr>", a.id, escape(&a.source), escape(&a.alert.subject), who.join("<br>")));
    }
    html.push_str("</table>");
    Html(html)
}
