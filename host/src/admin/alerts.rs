//! `GET /api/v1/alerts` (pages, newest first, streamed one alert at a time) and
//! `GET /api/v1/alerts/{id}`.
//!
//! A page holds at most [`MAX_PAGE`] alerts and stops early once [`PAGE_BYTES`] are written; its
//! `next_before` is the cursor for the next page (`?before=`), `null` after the oldest. The
//! answer is written while the alerts are read, so a request holds a couple of alerts in memory,
//! never the page.
//!
//! `?digest=ID` lists only the alerts a digest carried (a recipient's record names it; issue 16):
//! the link in a digest IM.

use std::sync::Arc;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{AdminState, answer::ApiError};
use crate::{model::StoredAlert, queue::QueueError};

/// Alerts per page when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 50;
/// The most alerts one page holds, whatever `limit` asks for.
pub const MAX_PAGE: usize = 500;
/// A page ends after the alert that takes it past this many bytes.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Ids one page looks at, at most (ids of alerts pruned from the history are gaps).
pub const SCAN_IDS: u64 = 100_000;

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

/// The answer for a queue that failed: unavailable for now (try later), or a damaged record.
pub fn queue_error(e: &QueueError) -> Response {
    let (code, retry) = match e {
        QueueError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, false),
        _ => (StatusCode::SERVICE_UNAVAILABLE, true),
    };
    let message = format!("queue: {}", crate::error_chain(e));
    if retry {
        ApiError::new(code, "queue_unavailable", message)
            .retry_after(5)
            .into_response()
    } else {
        ApiError::new(code, "queue_corrupt", message).into_response()
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    before: Option<u64>,
    /// Only the alerts this digest carried.
    digest: Option<u64>,
}

/// Where a page starts and how much it may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    /// The newest id to look at.
    top: u64,
    limit: usize,
    /// Only alerts with a recipient whose record names this digest.
    digest: Option<u64>,
}

pub async fn list(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let newest = match s.queue.recent(1) {
        Ok(newest) => newest.first().map_or(0, |a| a.id),
        Err(e) => return queue_error(&e),
    };
    let top = q.before.map_or(newest, |b| b.saturating_sub(1).min(newest));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let queue = Arc::clone(&s.queue);
    tokio::task::spawn_blocking(move || {
        write_page(
            |id| queue.get(id),
            Page {
                top,
                limit,
                digest: q.digest,
            },
            &tx,
        )
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Writes one page as JSON chunks into `tx`, reading one alert at a time; stops when the
/// reader went away. A queue error mid-page ends the answer abnormally (the client sees a
/// truncated body, never a well-formed short page).
fn write_page(
    get: impl Fn(u64) -> Result<Option<StoredAlert>, QueueError>,
    page: Page,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let send = |chunk: Vec<u8>| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok();
    if !send(b"{\"alerts\":[".to_vec()) {
        return;
    }
    let floor = page.top.saturating_sub(SCAN_IDS);
    let (mut id, mut count, mut bytes) = (page.top, 0usize, 0usize);
    while id > floor && count < page.limit && bytes < PAGE_BYTES {
        match get(id) {
            Ok(Some(alert))
                if page
                    .digest
                    .is_none_or(|d| alert.recipients.iter().any(|r| r.digest == Some(d))) =>
            {
                let mut buf = if count == 0 { Vec::new() } else { vec![b','] };
                if let Err(e) = serde_json::to_writer(&mut buf, &view(&alert)) {
                    tracing::error!(id, error = %e, "Cannot serialize an alert for the API.");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                    return;
                }
                count += 1;
                bytes += buf.len();
                if !send(buf) {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(id, error = %crate::error_chain(&e), "Alert page cut short: the queue failed.");
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                return;
            }
        }
        id -= 1;
    }
    // `id` is the newest id not looked at yet.
    let next = if id >= 1 {
        (id + 1).to_string()
    } else {
        "null".into()
    };
    send(format!("],\"next_before\":{next}}}").into_bytes());
}

pub async fn get(
    State(s): State<Arc<AdminState>>,
    id: Result<Path<u64>, PathRejection>,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match s.queue.get(id) {
        Ok(Some(a)) => Json(view(&a)).into_response(),
        Ok(None) => ApiError::not_found(format!("no alert {id}")).into_response(),
        Err(e) => queue_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use alertbridge_plugin_api::Alert;
    use serde_json::Value;

    use super::*;

    fn stored(id: u64, body_bytes: usize) -> StoredAlert {
        let mut alert = Alert::new(format!("alert {id}"));
        alert.body = "x".repeat(body_bytes);
        StoredAlert::new(id, "test", alert, 0)
    }

    /// Runs one page over `alerts`: the ids it lists and its cursor.
    fn page(alerts: &BTreeMap<u64, StoredAlert>, top: u64, limit: usize) -> (Vec<u64>, Value) {
        page_of(alerts, top, limit, None)
    }

    fn page_of(
        alerts: &BTreeMap<u64, StoredAlert>,
        top: u64,
        limit: usize,
        digest: Option<u64>,
    ) -> (Vec<u64>, Value) {
        let (tx, mut rx) = mpsc::channel(4);
        let alerts = alerts.clone();
        let page = Page { top, limit, digest };
        let writer =
            std::thread::spawn(move || write_page(|id| Ok(alerts.get(&id).cloned()), page, &tx));
        let mut body = Vec::new();
        while let Some(chunk) = rx.blocking_recv() {
            body.extend_from_slice(&chunk.unwrap());
        }
        writer.join().unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let ids = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_u64().unwrap())
            .collect();
        (ids, v["next_before"].clone())
    }

    #[test]
    fn pages_walk_down_through_gaps_to_the_end() {
        // 1..=10 and 200_001..=200_003: a gap wider than one page's scan.
        let alerts: BTreeMap<u64, StoredAlert> = (1..=10)
            .chain(200_001..=200_003)
            .map(|id| (id, stored(id, 10)))
            .collect();
        let (ids, next) = page(&alerts, 200_003, 2);
        assert_eq!(ids, [200_003, 200_002]);
        assert_eq!(next, 200_002);
        let (ids, next) = page(&alerts, 200_001, 50);
        assert_eq!(ids, [200_001]);
        // The scan stopped after SCAN_IDS ids: the cursor goes on from there.
        assert_eq!(next, 200_001 - SCAN_IDS + 1);
        let (ids, next) = page(&alerts, next.as_u64().unwrap() - 1, 50);
        assert_eq!(ids, (2..=10).rev().collect::<Vec<_>>());
        assert_eq!(next, 2);
        let (ids, next) = page(&alerts, 1, 50);
        assert_eq!(ids, [1]);
        assert!(next.is_null());
        let (ids, next) = page(&BTreeMap::new(), 0, 50);
        assert!(ids.is_empty() && next.is_null());
    }

    #[test]
    fn a_page_ends_after_the_alert_that_passes_the_byte_bound() {
        let big = PAGE_BYTES / 3;
        let alerts: BTreeMap<u64, StoredAlert> = (1..=10).map(|id| (id, stored(id, big))).collect();
        let (ids, next) = page(&alerts, 10, MAX_PAGE);
        assert_eq!(ids, [10, 9, 8]);
        assert_eq!(next, 8);
    }

    #[test]
    fn a_digest_lists_the_alerts_it_carried() {
        let mut alerts: BTreeMap<u64, StoredAlert> =
            (1..=9).map(|id| (id, stored(id, 10))).collect();
        for (id, digest) in [(2, 2), (3, 2), (5, 2), (6, 6), (8, 2)] {
            let a = alerts.get_mut(&id).unwrap();
            // From the stored form, so fields added later keep their defaults.
            let record = serde_json::json!({
                "route": "r", "sink": "lync", "user": "sip:a@x", "outcome": "delivered",
                "attempts": 1, "updated_ms": 0, "digest": digest,
            });
            a.recipients
                .push(serde_json::from_value(record).expect("a stored record"));
        }
        let (ids, next) = page_of(&alerts, 9, 50, Some(2));
        assert_eq!(ids, [8, 5, 3, 2]);
        assert!(next.is_null());
        let (ids, next) = page_of(&alerts, 9, 2, Some(2));
        assert_eq!(ids, [8, 5], "a page of the digest's alerts");
        assert_eq!(next, 5);
        assert_eq!(page_of(&alerts, 9, 50, Some(7)).0, Vec::<u64>::new());
    }
}
