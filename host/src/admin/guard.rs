//! Who may use the admin server: the `Host` allow-list (against DNS rebinding), the checks that
//! keep a web page from driving it (CSRF), the admin token, bounded request bodies, and the
//! headers every answer carries.

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    body::{Body, HttpBody as _},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest as _, Sha256};

use super::{AdminSettings, AdminState, answer::ApiError, server::Peer};

/// The largest request body the admin server reads (a test alert is far smaller).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The page's own files only: no inline script or style, no framing, no form posts.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// The part of the settings that can change on reload.
pub struct Access {
    /// SHA-256 of the admin token: compared in constant time, whatever the length given.
    token: Option<[u8; 32]>,
    hosts: Vec<String>,
}

impl Access {
    pub fn new(s: &AdminSettings) -> Self {
        Self {
            token: s.token.as_ref().map(|t| digest(t.expose().as_bytes())),
            hosts: s.hosts.clone(),
        }
    }
}

/// Shared, swappable [`Access`].
pub type SharedAccess = Arc<RwLock<Arc<Access>>>;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a request was turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Host,
    Origin,
    ContentType,
    NoToken,
    WrongToken,
    BodyTooLarge,
    BodyTimeout,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::Host => StatusCode::MISDIRECTED_REQUEST,
            Self::Origin => StatusCode::FORBIDDEN,
            Self::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NoToken | Self::WrongToken => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Host => "host_not_allowed",
            Self::Origin => "cross_origin",
            Self::ContentType => "content_type",
            Self::NoToken => "token_required",
            Self::WrongToken => "token_wrong",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyTimeout => "body_timeout",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Self::Host => "the Host header is not an IP address or a name listed in admin_hosts",
            Self::Origin => "a state-changing request from another origin is refused",
            Self::ContentType => {
                "a state-changing request must send JSON (Content-Type: application/json) or no body"
            }
            Self::NoToken => "this needs the admin token (Authorization: Bearer <token>)",
            Self::WrongToken => "wrong admin token",
            Self::BodyTooLarge => "the request body is too large",
            Self::BodyTimeout => "the request body did not arrive in time",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = ApiError::new(self.status(), self.code(), self.message()).into_response();
        if matches!(self, Self::NoToken | Self::WrongToken) {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"alertbridge admin\""),
            );
        }
        if matches!(self, Self::BodyTimeout | Self::BodyTooLarge) {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`).
fn host_part(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']').map_or(value, |(ip, _)| ip);
    }
    match value.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => value,
    }
}

/// The Host header names an IP literal, `localhost` (which browsers never resolve through DNS)
/// or an allowed name.
pub fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(value) = host else {
        return false;
    };
    let h = host_part(value);
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || allowed.contains(&h)
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A state-changing request comes from our own origin (or states none), not from a page
/// elsewhere, and does not carry a type a cross-site form or simple request can send.
pub fn same_origin_write(headers: &HeaderMap, body_empty: bool) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(Refusal::Origin);
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = header_str(headers, header::HOST).unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if authority.is_none_or(|a| a != host.to_ascii_lowercase()) {
            return Err(Refusal::Origin);
        }
    }
    match header_str(headers, header::CONTENT_TYPE) {
        None if body_empty => Ok(()),
        None => Err(Refusal::ContentType),
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if essence.eq_ignore_ascii_case("application/json") {
                Ok(())
            } else {
                Err(Refusal::ContentType)
            }
        }
    }
}

/// Checks the `Authorization: Bearer` token against the configured one.
fn token_ok(headers: &HeaderMap, expected: &[u8; 32]) -> Result<(), Refusal> {
    let given = header_str(headers, header::AUTHORIZATION)
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(Refusal::NoToken)?;
    if same(&digest(given.as_bytes()), expected) {
        Ok(())
    } else {
        Err(Refusal::WrongToken)
    }
}

/// Paths whose answers hold alert contents or SIP addresses.
fn holds_contents(path: &str) -> bool {
    path == "/api/v1/alerts"
        || path.starts_with("/api/v1/alerts/")
        || path == "/api/v1/status"
        || path == "/api/v1/incidents"
        || path.starts_with("/api/v1/incidents/")
        || path == "/api/v1/silences"
        || path.starts_with("/api/v1/silences/")
}

fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Logs a refused request: a wrong token at `warn` (someone is guessing, or a client has an
/// old token), at most once a second with the number left out; the rest at `debug`.
fn log_refusal(refusal: &Refusal, peer: Option<SocketAddr>, method: &Method, path: &str) {
    static LAST_S: AtomicU64 = AtomicU64::new(0);
    static QUIET: AtomicU64 = AtomicU64::new(0);
    if *refusal != Refusal::WrongToken {
        tracing::debug!(?peer, %method, path = %path.escape_debug(), reason = ?refusal, "Admin request refused.");
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_S.swap(now, Ordering::Relaxed) == now {
        QUIET.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let not_logged = QUIET.swap(0, Ordering::Relaxed);
    tracing::warn!(?peer, %method, path = %path.escape_debug(), not_logged, "Admin request with a wrong token refused.");
}

/// The middleware in front of every route.
pub async fn guard(State(s): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let mut resp = match check(&s, req).await {
        Ok(req) => next.run(req).await,
        Err(refusal) => {
            log_refusal(&refusal, peer, &method, &path);
            refusal.into_response()
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn check(s: &AdminState, req: Request) -> Result<Request, Refusal> {
    let access = Arc::clone(&s.access.read().unwrap_or_else(|e| e.into_inner()));
    let headers = req.headers();
    // The Host header, and the authority of an absolute-form request target when there is one
    // (which a server must prefer): both must be acceptable.
    let host = header_str(headers, header::HOST).or(req.uri().authority().map(|a| a.as_str()));
    let target = req.uri().authority().map(|a| a.as_str());
    if !host_allowed(host, &access.hosts)
        || target.is_some_and(|t| !host_allowed(Some(t), &access.hosts))
    {
        return Err(Refusal::Host);
    }
    let body_empty = req.body().size_hint().exact() == Some(0);
    let write = writes(req.method());
    if write {
        same_origin_write(headers, body_empty)?;
    }
    if let Some(expected) = &access.token
        && (write || holds_contents(req.uri().path()))
    {
        token_ok(headers, expected)?;
    }
    if body_empty {
        return Ok(req);
    }
    // Read the whole (bounded) body now, within the read timeout: a client trickling it
    // cannot hold a handler.
    let (parts, body) = req.into_parts();
    let bytes = tokio::time::timeout(
        s.settings.read_timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    .map_err(|_| Refusal::BodyTimeout)?
    .map_err(|_| Refusal::BodyTooLarge)?;
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn hosts_are_ip_literals_or_listed_names() {
        let allowed = vec!["alerts.example.net".to_owned()];
        for ok in [
            "127.0.0.1:9180",
            "10.1.2.3",
            "[::1]:9180",
            "localhost:9180",
            "Alerts.Example.Net.",
        ] {
            assert!(host_allowed(Some(ok), &allowed), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9180",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "",
        ] {
            assert!(!host_allowed(Some(bad), &allowed), "{bad}");
        }
        assert!(!host_allowed(None, &allowed));
    }

    #[test]
    fn writes_need_our_origin_and_json() {
        let host = ("host", "127.0.0.1:9180");
        assert!(same_origin_write(&headers(&[host]), true).is_ok());
        assert!(
            same_origin_write(
                &headers(&[
                    host,
                    ("origin", "http://127.0.0.1:9180"),
                    ("content-type", "application/json; charset=utf-8")
                ]),
                false
            )
            .is_ok()
        );
        for (h, empty) in [
            (vec![host, ("origin", "http://evil.example")], true),
            (vec![host, ("origin", "null")], true),
            (vec![host, ("origin", "http://127.0.0.1:9181")], true),
            (vec![host, ("sec-fetch-site", "cross-site")], true),
            (
                vec![host, ("content-type", "application/x-www-form-urlencoded")],
                false,
            ),
            (vec![host, ("content-type", "text/plain")], false),
            (
                vec![host, ("content-type", "multipart/form-data; b=1")],
                false,
            ),
            (vec![host], false),
        ] {
            assert!(same_origin_write(&headers(&h), empty).is_err(), "{h:?}");
        }
    }

    #[test]
    fn tokens_compare_by_digest() {
        let expected = digest(b"a-long-admin-token-1234");
        let ok = headers(&[("authorization", "Bearer a-long-admin-token-1234")]);
        assert_eq!(token_ok(&ok, &expected), Ok(()));
        let wrong = headers(&[("authorization", "Bearer a-long-admin-token-1235")]);
        assert_eq!(token_ok(&wrong, &expected), Err(Refusal::WrongToken));
        assert_eq!(
            token_ok(&HeaderMap::new(), &expected),
            Err(Refusal::NoToken)
        );
    }
}
