//! The event channel: each application's queue of pending events and the P-GET long poll
//! (`ack` numbering, `next`, re-delivery of the last batch, `resync` on a bad `ack`, release
//! after the timeout, `409 PGetReplaced` for a parked P-GET that a newer one replaces).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    application::{app_base, app_missing},
    auth::{authorize, ucwa_error},
    state::Sim,
};

/// One event and the resource that sent it.
#[derive(Debug)]
struct SenderEvent {
    rel: &'static str,
    href: String,
    event: Value,
}

/// One application's event channel.
#[derive(Debug)]
pub struct Channel {
    next_ack: u64,
    pending: Vec<SenderEvent>,
    last: Option<(u64, Value)>,
    /// Generation of the P-GET currently parked; a newer P-GET bumps it.
    waiter: u64,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            next_ack: 1,
            pending: Vec::new(),
            last: None,
            waiter: 0,
        }
    }
}

impl Channel {
    /// Queues an event from `sender` (`rel` and `href`) for the next P-GET.
    pub fn push(&mut self, rel: &'static str, href: String, event: Value) {
        self.pending.push(SenderEvent { rel, href, event });
    }

    /// The response body carrying every pending event, grouped by consecutive sender.
    fn batch(&mut self, base: &str, ack: u64) -> Value {
        let mut senders: Vec<Value> = Vec::new();
        let mut current: Option<(&'static str, String, Vec<Value>)> = None;
        for e in self.pending.drain(..) {
            match &mut current {
                Some((rel, href, events)) if *rel == e.rel && *href == e.href => {
                    events.push(e.event)
                }
                _ => {
                    if let Some((rel, href, events)) = current.take() {
                        senders.push(json!({ "rel": rel, "href": href, "events": events }));
                    }
                    current = Some((e.rel, e.href, vec![e.event]));
                }
            }
        }
        if let Some((rel, href, events)) = current {
            senders.push(json!({ "rel": rel, "href": href, "events": events }));
        }
        json!({
            "_links": { "self": { "href": format!("{base}?ack={ack}") }, "next": { "href": format!("{base}?ack={}", ack + 1) } },
            "sender": senders,
        })
    }
}

/// `GET <events>?ack=N`: the P-GET.
pub async fn pget(
    State(sim): State<Arc<Sim>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = match authorize(&sim, &headers) {
        Ok(user) => user,
        Err(challenge) => return challenge,
    };
    let ack = query.get("ack").and_then(|a| a.parse::<u64>().ok());
    let timeout = query
        .get("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(sim.config.pget_timeout, std::time::Duration::from_secs);
    let deadline = Instant::now() + timeout;
    let base = format!("{}/events", app_base(&app_id));
    // Every P-GET that arrives replaces the one parked before it (which gets 409).
    let (notify, generation) = {
        let mut inner = sim.lock();
        let inner = &mut *inner;
        match inner.apps.get_mut(&app_id) {
            Some(app) if app.owner == user => {
                app.channel.waiter += 1;
                app.notify.notify_waiters();
                (app.notify.clone(), app.channel.waiter)
            }
            Some(_) => {
                return ucwa_error(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    None,
                    "Not your application.",
                );
            }
            None => return app_missing(inner, &app_id),
        }
    };
    let mut stopping = sim.stopping.clone();
    let mut expired = false;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut inner = sim.lock();
            let Some(app) = inner.apps.get_mut(&app_id) else {
                return app_missing(&inner, &app_id);
            };
            let channel = &mut app.channel;
            if generation != channel.waiter {
                inner.replaced_pgets += 1;
                return ucwa_error(
                    StatusCode::CONFLICT,
                    "Conflict",
                    Some("PGetReplaced"),
                    "A newer P-GET replaced this one.",
                );
            }
            match ack {
                Some(a) if a == channel.next_ack => {
                    if !channel.pending.is_empty() {
                        let body = channel.batch(&base, a);
                        channel.last = Some((a, body.clone()));
                        channel.next_ack += 1;
                        return Json(body).into_response();
                    }
                    if expired {
                        return Json(json!({ "_links": {
                            "self": { "href": format!("{base}?ack={a}") },
                            "next": { "href": format!("{base}?ack={a}") },
                        }}))
                        .into_response();
                    }
                }
                Some(a) if channel.last.as_ref().is_some_and(|(l, _)| *l == a) => {
                    let body = channel
                        .last
                        .as_ref()
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    return Json(body).into_response();
                }
                _ => {
                    return Json(json!({ "_links": {
                        "self": { "href": format!("{base}?ack={}", ack.unwrap_or(0)) },
                        "resync": { "href": format!("{base}?ack={}", channel.next_ack) },
                    }}))
                    .into_response();
                }
            }
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => expired = true,
            _ = stopping.wait_for(|s| *s) => {
                return ucwa_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", None, "The server is stopping.");
            }
        }
    }
}
