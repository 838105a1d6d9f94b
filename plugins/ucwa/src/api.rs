//! The HTTP layer: one reqwest client, a token per origin (got from the MsRtcOAuth challenge of
//! that origin, renewed before `expires_in` and on 401 / 403 InvalidToken), every URL and every
//! redirect hop checked against the trust policy before anything is sent, response bodies read
//! up to `max_response_bytes`, and back-off on 429 / 503.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use reqwest::{Method, StatusCode, Url, header, redirect};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    config::Settings,
    error::UcwaError,
    protocol::{
        batch, clip,
        discover::{is_invalid_token, parse_challenge, parse_token, password_grant},
        parse_error_body,
    },
    trust::LocalResolver,
};

/// Tries of a request the server answered 429 / 503.
const BUSY_TRIES: u32 = 5;

/// The shortest and longest token lifetime taken from a server's `expires_in` (a token is
/// renewed when 90% of it has passed).
const MIN_TOKEN_SECS: u64 = 1;
const MAX_TOKEN_SECS: u64 = 7 * 24 * 3600;

/// Redirects followed for one request, each hop checked by [`crate::trust::Trust::check_hop`].
pub const MAX_REDIRECTS: u32 = 3;

/// What a method becomes after a redirect: 303, and 301 / 302 of anything but GET / HEAD, go
/// on as a GET without a body (as browsers do); 307 / 308 keep the method and body.
fn redirected_method(status: StatusCode, method: &Method) -> Option<Method> {
    let to_get = match status.as_u16() {
        303 => *method != Method::HEAD,
        301 | 302 => *method != Method::GET && *method != Method::HEAD,
        _ => false,
    };
    to_get.then_some(Method::GET)
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301..=303 | 307 | 308)
}

/// A request body.
#[derive(Clone, Debug)]
pub enum Body {
    Empty,
    Json(Vec<u8>),
    /// A `text/plain` or `text/html` message, UTF-8.
    Text {
        content_type: &'static str,
        text: String,
    },
    /// A `multipart/batching` request.
    Batch {
        boundary: String,
        body: String,
    },
}

impl Body {
    pub fn json(value: &impl Serialize) -> Self {
        // Serializing a `serde_json::Value` or a plain struct cannot fail.
        Self::Json(serde_json::to_vec(value).unwrap_or_default())
    }
}

/// A successful response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Where it came from (after redirects): the base for its relative links.
    pub url: Url,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Token {
    authorization: String,
    token_url: Url,
    renew_at: Instant,
}

/// The client every part of the sink talks through.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    settings: std::sync::Arc<Settings>,
    tokens: Mutex<HashMap<String, Token>>,
    /// Serializes token grants so a burst of 401s asks for one token, not many.
    grant: tokio::sync::Mutex<()>,
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

impl Api {
    pub fn new(settings: std::sync::Arc<Settings>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(settings.max_concurrent + 8)
            .user_agent(settings.user_agent.clone())
            // Every hop is checked by our code (`call`, `obtain`), never followed blindly.
            .redirect(redirect::Policy::none())
            .dns_resolver(LocalResolver::shared());
        if let Some(pem) = &settings.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build()?,
            settings,
            tokens: Mutex::default(),
            grant: tokio::sync::Mutex::new(()),
        })
    }

    /// Resolves `href` against `base` and checks the hop (scheme, no downgrade, inside the
    /// deployment).
    pub fn resolve(&self, base: &Url, href: &str) -> Result<Url, UcwaError> {
        let url = base.join(href).map_err(|_| UcwaError::UrlRejected {
            url: clip(href),
            reason: "not a valid URL".into(),
        })?;
        self.settings
            .trust
            .check_hop(base, &url)
            .map_err(|reason| UcwaError::UrlRejected {
                url: clip(url.as_str()),
                reason,
            })?;
        Ok(url)
    }

    /// Checks a URL about to be called: the last line of defence, whatever built it.
    fn check(&self, url: &Url) -> Result<(), UcwaError> {
        self.settings
            .trust
            .check(url)
            .map_err(|reason| UcwaError::UrlRejected {
                url: url.to_string(),
                reason,
            })
    }

    /// Where a redirect response points, checked as a hop from `from`.
    fn redirect_target(
        &self,
        from: &Url,
        headers: &header::HeaderMap,
        redirects: u32,
    ) -> Result<Url, UcwaError> {
        if redirects > MAX_REDIRECTS {
            return Err(UcwaError::Protocol {
                url: from.to_string(),
                what: format!("more than {MAX_REDIRECTS} redirects"),
            });
        }
        let location = headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| UcwaError::Protocol {
                url: from.to_string(),
                what: "a redirect without a Location".into(),
            })?;
        let to = self.resolve(from, location)?;
        debug!(from = %from, to = %to, "Following a redirect.");
        Ok(to)
    }

    /// Reads a response body, at most `max_response_bytes` of it: a longer one is an error and
    /// the rest is never read (the connection is dropped).
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        method: &Method,
        url: &Url,
    ) -> Result<Vec<u8>, UcwaError> {
        let limit = self.settings.max_response_bytes;
        let too_large = || UcwaError::TooLarge {
            url: url.to_string(),
            limit,
        };
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|source| UcwaError::Transport {
                method: method.to_string(),
                url: url.to_string(),
                source,
            })?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Token>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `Authorization` value for `url`'s origin, renewing it first if it is about to expire.
    async fn authorization(&self, url: &Url) -> Result<Option<String>, UcwaError> {
        let Some(token) = self.lock().get(&origin(url)).cloned() else {
            return Ok(None);
        };
        if Instant::now() < token.renew_at {
            return Ok(Some(token.authorization));
        }
        debug!(origin = %origin(url), "Renewing the token before it expires.");
        self.obtain(url, &token.token_url, Some(&token.authorization))
            .await
            .map(Some)
    }

    /// Gets a token for `url`'s origin from `token_url`, unless another task already replaced
    /// `stale` meanwhile.
    async fn obtain(
        &self,
        url: &Url,
        token_url: &Url,
        stale: Option<&str>,
    ) -> Result<String, UcwaError> {
        let _one_at_a_time = self.grant.lock().await;
        let key = origin(url);
        if let Some(current) = self.lock().get(&key)
            && Some(current.authorization.as_str()) != stale
            && Instant::now() < current.renew_at
        {
            return Ok(current.authorization.clone());
        }
        let (token_url, status, body) = self.post_grant(token_url).await?;
        let token_url = &token_url;
        let grant = match parse_token(&body) {
            Ok(Ok(grant)) if status.is_success() => grant,
            Ok(Err(error)) => {
                return Err(UcwaError::Grant {
                    url: token_url.to_string(),
                    error,
                });
            }
            Ok(Ok(_)) | Err(_) => {
                return Err(UcwaError::Grant {
                    url: token_url.to_string(),
                    error: format!("HTTP {}", status.as_u16()),
                });
            }
        };
        // A server's `expires_in` is bounded: 0 would renew before every request, a huge
        // one would overflow the clock.
        let lifetime = Duration::from_secs(grant.expires_in.clamp(MIN_TOKEN_SECS, MAX_TOKEN_SECS));
        let margin = (lifetime / 10).min(Duration::from_secs(300));
        let authorization = grant.authorization();
        info!(origin = %key, expires_in = grant.expires_in, "Got a token.");
        self.lock().insert(
            key,
            Token {
                authorization: authorization.clone(),
                token_url: token_url.clone(),
                renew_at: Instant::now() + lifetime - margin,
            },
        );
        Ok(authorization)
    }

    /// Posts the password grant to `token_url`, following 307 / 308 to checked hops only;
    /// returns where it was taken, the status and the body.
    async fn post_grant(&self, token_url: &Url) -> Result<(Url, StatusCode, Vec<u8>), UcwaError> {
        let mut url = token_url.clone();
        let mut redirects = 0;
        loop {
            // The password goes nowhere the trust policy does not allow.
            self.check(&url)?;
            let response = self
                .http
                .post(url.clone())
                .header(header::ACCEPT, "application/json")
                .header(
                    header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded;charset=UTF-8",
                )
                .body(password_grant(
                    &self.settings.username,
                    self.settings.password.expose(),
                ))
                .send()
                .await
                .map_err(|source| UcwaError::Transport {
                    method: "POST".into(),
                    url: url.to_string(),
                    source,
                })?;
            let status = response.status();
            if is_redirect(status) {
                redirects += 1;
                let next = self.redirect_target(&url, response.headers(), redirects)?;
                if !matches!(status.as_u16(), 307 | 308) {
                    return Err(UcwaError::Grant {
                        url: url.to_string(),
                        error: format!(
                            "HTTP {} redirect to {next}, which would drop the grant",
                            status.as_u16()
                        ),
                    });
                }
                url = next;
                continue;
            }
            let body = self.read_body(response, &Method::POST, &url).await?;
            return Ok((url, status, body));
        }
    }

    /// Builds one try of a request.
    fn request(
        &self,
        method: Method,
        url: &Url,
        body: &Body,
        timeout: Option<Duration>,
        auth: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let accept = if matches!(body, Body::Batch { .. }) {
            "multipart/batching"
        } else {
            "application/json"
        };
        let mut request = self
            .http
            .request(method, url.clone())
            .header(header::ACCEPT, accept);
        if let Some(a) = auth {
            request = request.header(header::AUTHORIZATION, a);
        }
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        match body {
            Body::Empty => request.header(header::CONTENT_LENGTH, "0"),
            Body::Json(bytes) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes.clone()),
            Body::Text { content_type, text } => request
                .header(
                    header::CONTENT_TYPE,
                    format!("{content_type};charset=UTF-8"),
                )
                .body(text.clone()),
            Body::Batch { boundary, body } => request
                .header(header::CONTENT_TYPE, batch::content_type(boundary))
                .body(body.clone()),
        }
    }

    /// Sends a request and returns a successful reply; any other status becomes
    /// [`UcwaError::Status`]. Handles the token challenge and 429 / 503 back-off.
    pub async fn call(
        &self,
        method: Method,
        url: &Url,
        body: &Body,
        timeout: Option<Duration>,
    ) -> Result<Reply, UcwaError> {
        const NO_BODY: &Body = &Body::Empty;
        let (mut method, mut body, mut current) = (method, body, url.clone());
        let mut auth_tries = 0;
        let mut busy_tries = 0;
        let mut redirects = 0;
        let mut retried_transport = false;
        loop {
            let url = &current;
            self.check(url)?;
            let authorization = self.authorization(url).await?;
            let request =
                self.request(method.clone(), url, body, timeout, authorization.as_deref());
            let transport = |source| UcwaError::Transport {
                method: method.to_string(),
                url: url.to_string(),
                source,
            };
            let response = match request.send().await {
                Ok(response) => response,
                // A pooled connection the server closed (restart, idle timeout) fails without
                // the request having been processed: try once more on a fresh connection.
                Err(e) if !e.is_timeout() && !retried_transport => {
                    debug!(url = %url, error = %e, "Request failed on the connection; retrying once.");
                    retried_transport = true;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(transport(e)),
            };
            let status = response.status();
            let headers = response.headers().clone();
            if is_redirect(status) {
                redirects += 1;
                let next = self.redirect_target(url, &headers, redirects)?;
                if let Some(changed) = redirected_method(status, &method) {
                    method = changed;
                    body = NO_BODY;
                }
                current = next;
                continue;
            }
            let body_bytes = self.read_body(response, &method, url).await?;
            let values = |name: header::HeaderName| -> Vec<String> {
                headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect()
            };
            let rejected_token = status == StatusCode::FORBIDDEN && {
                let warnings = values(header::WARNING);
                let diagnostics = headers
                    .get("x-ms-diagnostics")
                    .and_then(|v| v.to_str().ok());
                is_invalid_token(warnings.iter().map(String::as_str), diagnostics)
            };
            if (status == StatusCode::UNAUTHORIZED || rejected_token) && auth_tries < 2 {
                auth_tries += 1;
                let challenges = values(header::WWW_AUTHENTICATE);
                let token_url = match parse_challenge(challenges.iter().map(String::as_str)) {
                    Some(c) if !c.offers_password() => {
                        let error = clip(&format!(
                            "the server offers no password grant (grant_type={})",
                            c.grant_types.join(",")
                        ));
                        let url = clip(&c.href);
                        return Err(UcwaError::Grant { url, error });
                    }
                    Some(c) => self.resolve(url, &c.href)?,
                    None => match self.lock().get(&origin(url)) {
                        Some(t) => t.token_url.clone(),
                        None => {
                            return Err(UcwaError::NoChallenge {
                                url: url.to_string(),
                            });
                        }
                    },
                };
                self.obtain(url, &token_url, authorization.as_deref())
                    .await?;
                continue;
            }
            let retry_after = headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) && busy_tries + 1 < BUSY_TRIES
            {
                let wait = retry_after
                    .unwrap_or(Duration::from_millis(250) * 2u32.pow(busy_tries))
                    .min(Duration::from_secs(10));
                warn!(url = %url, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "Server busy; backing off.");
                busy_tries += 1;
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                let e = parse_error_body(&body_bytes);
                return Err(UcwaError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                    code: e.code,
                    subcode: e.subcode,
                    message: e.message,
                    retry_after,
                });
            }
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Reply {
                url: current,
                content_type,
                body: body_bytes,
            });
        }
    }
}
