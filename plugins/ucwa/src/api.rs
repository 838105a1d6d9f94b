//! The HTTP layer: one reqwest client, a token per origin (got from the MsRtcOAuth challenge of
//! that origin, renewed before `expires_in` and on 401 / 403 InvalidToken), every URL checked
//! against the http policy, and back-off on 429 / 503.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use reqwest::{Method, StatusCode, Url, header};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{
    config::{Settings, url_allowed},
    error::UcwaError,
    protocol::{
        batch,
        discover::{is_invalid_token, parse_challenge, parse_token, password_grant},
        parse_error_body,
    },
};

/// Tries of a request the server answered 429 / 503.
const BUSY_TRIES: u32 = 5;

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
            .user_agent(settings.user_agent.clone());
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

    /// Checks `href` against the http policy, resolving it against `base` first.
    pub fn resolve(&self, base: &Url, href: &str) -> Result<Url, UcwaError> {
        let url = base.join(href).map_err(|_| UcwaError::UrlRejected {
            url: href.to_owned(),
            reason: "not a valid URL",
        })?;
        url_allowed(&url, self.settings.allow_http).map_err(|reason| UcwaError::UrlRejected {
            url: url.to_string(),
            reason,
        })?;
        Ok(url)
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
        let transport = |source| UcwaError::Transport {
            method: "POST".into(),
            url: token_url.to_string(),
            source,
        };
        let response = self
            .http
            .post(token_url.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(password_grant(
                &self.settings.username,
                &self.settings.password,
            ))
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
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
        let lifetime = Duration::from_secs(grant.expires_in);
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
        let mut auth_tries = 0;
        let mut busy_tries = 0;
        let mut retried_transport = false;
        loop {
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
            let body_bytes = response.bytes().await.map_err(transport)?;
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
                        let error = format!(
                            "the server offers no password grant (grant_type={})",
                            c.grant_types.join(",")
                        );
                        return Err(UcwaError::Grant { url: c.href, error });
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
                content_type,
                body: body_bytes.to_vec(),
            });
        }
    }
}
