//! Authentication: the MsRtcOAuth challenge, the `/WebTicket/oauthtoken` password grant, bearer
//! checks on every protected call, and the UCWA error bodies and throttling shared by handlers.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::state::{Sim, Token, normalize};

/// The path of the token endpoint on each listener.
pub const TOKEN_PATH: &str = "/WebTicket/oauthtoken";

/// Where the token endpoint sends its `307` with [`super::SimOptions::http_redirects`].
pub const GRANT_PATH: &str = "/WebTicket/oauthtoken/grant";

/// A UCWA error body: `{"code":..,"subcode":..,"message":..}` with `application/json`.
pub fn ucwa_error(
    status: StatusCode,
    code: &str,
    subcode: Option<&str>,
    message: &str,
) -> Response {
    let mut body = json!({ "code": code, "message": message });
    if let Some(subcode) = subcode {
        body["subcode"] = json!(subcode);
    }
    (status, Json(body)).into_response()
}

/// Whether a request arrived on the pool listener (by the port in its `Host` header).
pub fn on_pool(sim: &Sim, headers: &HeaderMap) -> bool {
    let Some(port) = sim.pool_port else {
        return false;
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        == Some(port)
}

/// The `401` a client gets without a valid token: an IIS-style HTML page and the two
/// `WWW-Authenticate` headers, the second naming this listener's token endpoint.
pub fn challenge(sim: &Sim, headers: &HeaderMap) -> Response {
    sim.lock().challenges += 1;
    let base = if on_pool(sim, headers) {
        &sim.pool_base
    } else {
        &sim.web_base
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/html")],
        "<html><head><title>401 - Unauthorized</title></head><body><h1>401 - Unauthorized</h1></body></html>",
    )
        .into_response();
    let h = response.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer trusted_issuers=\"00000002-0000-0ff1-ce00-000000000000@contoso.com\", client_id=\"00000004-0000-0ff1-ce00-000000000000\"",
        ),
    );
    let oauth = format!(
        "MsRtcOAuth href=\"{base}{TOKEN_PATH}\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\""
    );
    if let Ok(v) = HeaderValue::from_str(&oauth) {
        h.append(header::WWW_AUTHENTICATE, v);
    }
    h.insert(
        "X-MS-Server-Fqdn",
        HeaderValue::from_static("SIM-LYNC-SE1.contoso.com"),
    );
    response
}

/// The signed-in user of a request, or the response to send instead (`401` challenge; `403`
/// InvalidToken for a bad token when so configured).
#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send, built once per request"
)]
pub fn authorize(sim: &Sim, headers: &HeaderMap) -> Result<String, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(challenge(sim, headers));
    };
    let pool = on_pool(sim, headers);
    let user = match sim.lock().tokens.get(presented) {
        Some(t) if t.expires > Instant::now() && t.pool == pool => Some(t.user.clone()),
        _ => None,
    };
    user.ok_or_else(|| {
        let mut response = challenge(sim, headers);
        if sim.config.invalid_token_403 {
            *response.status_mut() = StatusCode::FORBIDDEN;
            let h = response.headers_mut();
            h.insert(header::WARNING, HeaderValue::from_static("120 SIM-LYNC-SE1.contoso.com \"InvalidToken\""));
            h.insert(
                "X-Ms-diagnostics",
                HeaderValue::from_static("28055;source=\"SIM-LYNC-SE1.contoso.com\";reason=\"The OAuth token is invalid.\";faultcode=\"wsse:FailedAuthentication\""),
            );
        }
        response
    })
}

/// Takes one injected `429` if any are pending.
pub fn throttled(sim: &Sim) -> Option<Response> {
    let mut inner = sim.lock();
    if inner.throttle == 0 {
        return None;
    }
    inner.throttle -= 1;
    let retry_after = inner.throttle_retry_after;
    drop(inner);
    let mut response = ucwa_error(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        None,
        "Too many outstanding requests.",
    );
    if let Some(secs) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, secs);
    }
    Some(response)
}

/// Splits an `application/x-www-form-urlencoded` body into decoded pairs.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        percent_encoding::percent_decode_str(&s)
            .decode_utf8_lossy()
            .into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// `POST /WebTicket/oauthtoken`: the password grant, or with `http_redirects` a `307` to
/// [`GRANT_PATH`] on the same listener.
pub async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    if sim.options.http_redirects {
        let base = if on_pool(&sim, &headers) {
            &sim.pool_base
        } else {
            &sim.web_base
        };
        let location = format!("{base}{GRANT_PATH}");
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    grant(State(sim), headers, body).await
}

/// `POST /WebTicket/oauthtoken/grant`: the password grant itself.
pub async fn grant(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = form_pairs(&body);
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let bad =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response();
    match field("grant_type") {
        Some("password") => {}
        Some(_) => return bad("unsupported_grant_type"),
        None => return bad("invalid_request"),
    }
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return bad("invalid_request");
    };
    let user = normalize(username);
    let pool = on_pool(&sim, &headers);
    let lifetime = sim.config.token_lifetime;
    let mut inner = sim.lock();
    if inner
        .users
        .get(&user)
        .is_none_or(|u| u.password != password)
    {
        return bad("invalid_grant");
    }
    let access_token = format!("cwt=AAEB{}{:016x}", inner.id(), rand::random::<u64>());
    inner.tokens.insert(
        access_token.clone(),
        Token {
            user,
            pool,
            expires: Instant::now() + lifetime,
        },
    );
    drop(inner);
    let body = json!({
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "ms_rtc_identityscope": "local",
        "token_type": "Bearer",
    });
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::form_pairs;

    #[test]
    fn form_bodies_decode_plus_and_percent() {
        let pairs =
            form_pairs(b"grant_type=password&username=lenea%40contoso.com&password=pass+word%261");
        assert_eq!(pairs[1], ("username".into(), "lenea@contoso.com".into()));
        assert_eq!(pairs[2], ("password".into(), "pass word&1".into()));
    }
}
