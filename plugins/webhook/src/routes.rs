//! The HTTP API: [`Api`], its three routes and their handler — authentication, content type,
//! body limits and deadlines, parsing, and the submit of every alert to the host before
//! answering. The routes are matched by hand and answers are plain bytes: no router, boxed body
//! or extension map per request.
//!
//! | answer | when |
//! |---|---|
//! | 202 `{"ids":[..],"duplicates":[..],"ignored":[..]}` | the host durably took every alert |
//! | 400 `{"error":".."}` | malformed body (field, line, column), or the host refused an alert as invalid |
//! | 401 | no `Authorization: Bearer` token, or not an accepted one |
//! | 408 | the body did not arrive within `body_read_timeout_ms` |
//! | 413 | body over `max_body_bytes` |
//! | 415 | content type other than JSON (or XML on `/api/v1/alerts`) |
//! | 503 + `Retry-After` | the host refused for back-pressure, is stopping, or did not answer in time |
//!
//! `ids[i]` is the host's id for the `i`-th alert of the body (`null` if it was not taken);
//! `duplicates` lists the ids the host already had (same dedup key); `ignored` the indexes of
//! resolved Alertmanager alerts left out by config. A 503 or 400 after a partial acceptance
//! carries the same fields plus `refused` (indexes not taken): resend only those.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{Alert, ErrorKind, PluginError, Receipt, kit::Host};
use futures_util::{StreamExt as _, stream};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    HeaderMap, Method, Request, StatusCode,
    body::{Body, Bytes},
    header::{self, HeaderValue},
};

use crate::{config::Settings, payload};

/// How many submits of one request may wait on the host at once.
const SUBMIT_CONCURRENCY: usize = 64;
/// `Retry-After` when the host gives no advice.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A request body's error, whatever the body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An answer: status, headers and the whole body in one piece.
pub type Response = hyper::Response<Full<Bytes>>;

/// What every request shares.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: Host,
    settings: Settings,
}

impl AppState {
    pub fn new(host: Host, settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner { host, settings }),
        }
    }
}

/// The webhook's routes. Separate from serving so tests can call it without a socket.
#[derive(Clone, Debug)]
pub struct Api {
    state: AppState,
}

pub fn router(state: AppState) -> Api {
    Api { state }
}

impl Api {
    /// Answers one request: `POST /api/v1/alerts`, `POST /api/v1/alertmanager`, `GET` (or
    /// `HEAD`) `/healthz`; 405 with `Allow` for another method on those paths, else 404.
    pub async fn call<B>(&self, request: Request<B>) -> Response
    where
        B: Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let method = request.method();
        let (alertmanager, allow) = match request.uri().path() {
            "/api/v1/alerts" => (false, "POST"),
            "/api/v1/alertmanager" => (true, "POST"),
            "/healthz" if method == Method::GET || method == Method::HEAD => {
                return plain(StatusCode::OK, "text/plain; charset=utf-8", "ok\n");
            }
            "/healthz" => return not_allowed("GET,HEAD"),
            _ => return plain(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", ""),
        };
        if method != Method::POST {
            return not_allowed(allow);
        }
        handle(&self.state, request, alertmanager)
            .await
            .unwrap_or_else(Refusal::into_response)
    }
}

/// A fixed answer.
fn plain(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "",
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    // Serializing these plain structs cannot fail; an empty object would be the answer if it did.
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Which parser a request body goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
    Alertmanager,
}

/// A request that ends before any submit.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    UnsupportedType(String),
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body did not arrive within {0} ms")]
    BodyTimeout(u128),
    #[error("cannot read the body: {0}")]
    Body(String),
    #[error("{0}")]
    Payload(#[from] payload::PayloadError),
    #[error("the host did not confirm within {0} ms; resend (a dedup key makes that safe)")]
    RequestTimeout(u128),
}

impl Refusal {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::UnsupportedType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Body(_) | Self::Payload(_) => StatusCode::BAD_REQUEST,
            Self::RequestTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::debug!(status = status.as_u16(), reason = %self, "Request refused.");
        let mut response = json(
            status,
            &Error {
                error: self.to_string(),
            },
        );
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RequestTimeout(_) => {
                headers.insert(header::RETRY_AFTER, retry_after_value(DEFAULT_RETRY_AFTER));
            }
            _ => {}
        }
        response
    }
}

/// The JSON body of a refusal.
#[derive(serde::Serialize)]
struct Error {
    error: String,
}

async fn handle<B>(
    state: &AppState,
    request: Request<B>,
    alertmanager: bool,
) -> Result<Response, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let s = &state.inner.settings;
    let (parts, body) = request.into_parts();
    if !s.tokens.check_header(
        parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        return Err(Refusal::Unauthorized);
    }
    let format = content_format(&parts.headers, alertmanager)?;
    let request_timeout = s.request_timeout;
    let work = async {
        let bytes = read_body(body, &parts.headers, s.max_body_bytes, s.body_read_timeout).await?;
        let alerts = match format {
            Format::Json => payload::json::parse(&bytes, &payload::limits(s.max_body_bytes))?
                .into_iter()
                .map(Some)
                .collect(),
            Format::Xml => payload::xml::parse(
                &bytes,
                charset(&parts.headers).as_deref(),
                &payload::limits(s.max_body_bytes),
            )?
            .into_iter()
            .map(Some)
            .collect(),
            Format::Alertmanager => payload::alertmanager::parse(&bytes, &s.alertmanager)?,
        };
        Ok(submit_all(&state.inner.host, alerts).await)
    };
    tokio::time::timeout(request_timeout, work)
        .await
        .unwrap_or(Err(Refusal::RequestTimeout(request_timeout.as_millis())))
}

fn content_format(headers: &HeaderMap, alertmanager: bool) -> Result<Format, Refusal> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Compared in place, whatever the case: no copy per request.
    let mime = value.split(';').next().unwrap_or("").trim();
    let is = |name: &str| mime.eq_ignore_ascii_case(name);
    let suffix = |tail: &str| {
        mime.len() >= tail.len()
            && mime.is_char_boundary(mime.len() - tail.len())
            && mime[mime.len() - tail.len()..].eq_ignore_ascii_case(tail)
    };
    let json = is("application/json") || suffix("+json");
    let xml = is("application/xml") || is("text/xml") || suffix("+xml");
    match (alertmanager, json, xml) {
        (true, true, _) => Ok(Format::Alertmanager),
        (false, true, _) => Ok(Format::Json),
        (false, _, true) => Ok(Format::Xml),
        (true, _, _) => Err(Refusal::UnsupportedType(format!(
            "unsupported content type {value:?}: expected application/json"
        ))),
        (false, _, _) => Err(Refusal::UnsupportedType(format!(
            "unsupported content type {value:?}: expected application/json or application/xml"
        ))),
    }
}

/// The `charset` parameter of the content type, if any.
fn charset(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    value.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// Reads the whole body within the limit and the deadline. A body that comes in one piece (a
/// small POST) is that piece, not copied; only one in several pieces is joined.
async fn read_body<B>(
    body: B,
    headers: &HeaderMap,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge(limit));
    }
    let read = async {
        let mut body = std::pin::pin!(body);
        let mut first = Bytes::new();
        let mut joined: Option<Vec<u8>> = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Refusal::Body(e.into().to_string()))?;
            // Trailers say nothing about the alerts.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let have = joined.as_ref().map_or(first.len(), Vec::len);
            if have + data.len() > limit {
                return Err(Refusal::TooLarge(limit));
            }
            match &mut joined {
                Some(all) => all.extend_from_slice(&data),
                None if first.is_empty() => first = data,
                None => {
                    let expected = declared.map_or(0, |n| n as usize).max(have + data.len());
                    let mut all = Vec::with_capacity(expected);
                    all.extend_from_slice(&first);
                    all.extend_from_slice(&data);
                    joined = Some(all);
                }
            }
        }
        Ok(joined.map_or(first, Bytes::from))
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(Refusal::BodyTimeout(deadline.as_millis())))
}

/// What became of one alert of the body.
enum Outcome {
    Ignored,
    Taken(Receipt),
    Refused(PluginError),
}

/// Submits every alert (in order of the answer, a bounded number at a time) and answers for
/// all of them once the host has answered for each.
async fn submit_all(host: &Host, alerts: Vec<Option<Alert>>) -> Response {
    let submit = |alert: Option<Alert>| async move {
        match alert {
            None => Outcome::Ignored,
            Some(alert) => match host.submit(&alert).await {
                Ok(receipt) => Outcome::Taken(receipt),
                Err(e) => Outcome::Refused(e),
            },
        }
    };
    let outcomes: Vec<Outcome> = if alerts.len() == 1 {
        // The common case (one alert per request) without the stream machinery.
        let mut alerts = alerts;
        vec![submit(alerts.pop().flatten()).await]
    } else {
        stream::iter(alerts)
            .map(submit)
            .buffered(SUBMIT_CONCURRENCY)
            .collect()
            .await
    };
    answer(&outcomes)
}

/// The JSON body of an answer once the host has answered for every alert.
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    ids: &'a [Option<u64>],
    duplicates: &'a [u64],
    ignored: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<&'a [usize]>,
}

fn answer(outcomes: &[Outcome]) -> Response {
    let mut ids = Vec::with_capacity(outcomes.len());
    let (mut duplicates, mut ignored, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let mut worst: Option<(usize, &PluginError)> = None;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Taken(r) => {
                ids.push(Some(r.alert_id));
                if r.duplicate {
                    duplicates.push(r.alert_id);
                }
            }
            Outcome::Ignored => {
                ids.push(None);
                ignored.push(i);
            }
            Outcome::Refused(e) => {
                ids.push(None);
                refused.push(i);
                // A transient refusal decides the answer: the client should come back.
                if worst.is_none_or(|(_, w)| !w.is_transient() && e.is_transient()) {
                    worst = Some((i, e));
                }
            }
        }
    }
    let mut body = Answer {
        error: None,
        ids: &ids,
        duplicates: &duplicates,
        ignored: &ignored,
        refused: None,
    };
    let Some((index, error)) = worst else {
        return json(StatusCode::ACCEPTED, &body);
    };
    let status = if error.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if error.kind == ErrorKind::PERMANENT {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::warn!(status = status.as_u16(), kind = %error.kind, error = %error.message, refused = refused.len(), "Host refused alerts.");
    body.error = Some(format!(
        "alert {index}: the host refused it: {}",
        error.message
    ));
    body.refused = Some(&refused);
    let mut response = json(status, &body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        let after = error.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after_value(after));
    }
    response
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_value(after: Duration) -> HeaderValue {
    let secs = after.as_millis().div_ceil(1000).max(1);
    HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
