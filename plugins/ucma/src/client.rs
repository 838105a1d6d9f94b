//! The HTTP client of the bridge: one method per endpoint, authentication (bearer or HMAC
//! signature), answers read up to a size cap, and request-level errors (§6) as typed
//! [`BridgeError`]s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alertbridge_plugin_api::{ErrorKind, PluginError, error_chain, kit::Secret};
use reqwest::{Method, StatusCode, Url, header};
use serde::de::DeserializeOwned;

use crate::{
    config::Settings,
    protocol::{
        AckBody, ErrorBody, HealthDoc, InboundAnswer, MessageDoc, PresenceAnswer, PresenceQuery,
        PresenceResult, SayAnswer, Signed, clip, signature,
    },
};

/// The largest answer read from the bridge. The biggest honest one, a presence answer for 500
/// targets or a message document for 100 recipients, is well under 256 KiB; past this the
/// answer is refused and the connection dropped, so a hostile bridge cannot make the sink
/// buffer without bound.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A request to the bridge that did not give a usable answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// No answer: connect error, timeout, or the connection closed before the response.
    #[error("{method} {url}: no answer")]
    Transport {
        method: Method,
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    /// The bridge refused the request (a request-level error of §6).
    #[error("bridge answered {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    /// The answer's body was larger than [`MAX_RESPONSE_BYTES`].
    #[error("{url}: answer over {limit} bytes ({status}); not read further")]
    TooLarge { url: Url, status: u16, limit: usize },
    /// The answer was not the JSON document expected.
    #[error("{url}: unreadable answer ({status})")]
    Decode {
        url: Url,
        status: u16,
        #[source]
        source: serde_json::Error,
    },
}

impl BridgeError {
    /// True if the same request may succeed later. A send is safe to repeat in every case,
    /// thanks to its idempotency key.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Decode { .. } | Self::TooLarge { .. } => true,
            Self::Refused {
                status,
                code,
                retryable,
                ..
            } => {
                code != "idempotency_conflict"
                    && (*retryable || matches!(status, 429 | 503 | 504) || *status >= 500)
            }
        }
    }

    /// The bridge's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The error as the host sees it.
    pub fn to_plugin_error(&self) -> PluginError {
        let kind = if self.is_transient() {
            ErrorKind::TRANSIENT
        } else {
            ErrorKind::PERMANENT
        };
        let error = PluginError::new(kind, error_chain(self));
        match self.retry_after() {
            Some(after) => error.retry_after(after),
            None => error,
        }
    }
}

/// A client of one bridge.
#[derive(Debug)]
pub struct BridgeClient {
    http: reqwest::Client,
    base: Url,
    secret: Secret,
    sign: bool,
}

impl BridgeClient {
    /// Builds the HTTP client (TLS roots, client certificate, timeouts). No network traffic.
    pub fn new(settings: &Settings) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.request_timeout())
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("alertbridge-ucma/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &settings.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem)?);
        }
        if let Some(pem) = &settings.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build()?,
            base: settings.endpoint.clone(),
            secret: settings.secret.clone(),
            sign: settings.config.sign_requests,
        })
    }

    /// `GET /v1/health`. A `503` carries the health document too (status `down`).
    pub async fn health(&self) -> Result<HealthDoc, BridgeError> {
        self.call(
            Method::GET,
            &["health"],
            None,
            Vec::new(),
            &[StatusCode::SERVICE_UNAVAILABLE],
        )
        .await
    }

    /// `POST /v1/presence/query` for up to the bridge's limit of targets.
    pub async fn presence(
        &self,
        targets: &[String],
        timeout_ms: u64,
    ) -> Result<Vec<PresenceResult>, BridgeError> {
        let query = PresenceQuery {
            targets,
            categories: ["state"],
            timeout_ms,
        };
        // Strings and a number only: serializing cannot fail.
        let body = serde_json::to_vec(&query).unwrap_or_default();
        let answer: PresenceAnswer = self
            .call(Method::POST, &["presence", "query"], None, body, &[])
            .await?;
        Ok(answer.results)
    }

    /// `POST /v1/messages` under `key`, with the serialized send body.
    pub async fn send(&self, key: &str, body: Vec<u8>) -> Result<MessageDoc, BridgeError> {
        self.call(Method::POST, &["messages"], Some(key), body, &[])
            .await
    }

    /// `GET /v1/messages/{id}`.
    pub async fn message(&self, id: &str) -> Result<MessageDoc, BridgeError> {
        self.call(Method::GET, &["messages", id], None, Vec::new(), &[])
            .await
    }

    /// `GET /v1/inbound?wait_ms=..&limit=..` (§4.5): the oldest unacknowledged messages,
    /// waiting up to `wait` at the bridge for one to arrive.
    pub async fn inbound(
        &self,
        wait: Duration,
        limit: usize,
    ) -> Result<InboundAnswer, BridgeError> {
        let query = [
            ("wait_ms", wait.as_millis().to_string()),
            ("limit", limit.to_string()),
        ];
        // The bridge answers at `wait` at the latest; the margin covers the trip.
        let timeout = wait + Duration::from_secs(10);
        self.call_with(
            Method::GET,
            &["inbound"],
            &query,
            None,
            Vec::new(),
            &[],
            Some(timeout),
        )
        .await
    }

    /// `POST /v1/inbound/ack` (§4.6): every message up to `up_to` is handled.
    pub async fn ack(&self, up_to: u64) -> Result<serde_json::Value, BridgeError> {
        // A number only: serializing cannot fail.
        let body = serde_json::to_vec(&AckBody { up_to }).unwrap_or_default();
        self.call(Method::POST, &["inbound", "ack"], None, body, &[])
            .await
    }

    /// `POST /v1/conversations/{id}/messages` (§4.7) under `key`.
    pub async fn say(
        &self,
        conversation: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<SayAnswer, BridgeError> {
        self.call(
            Method::POST,
            &["conversations", conversation, "messages"],
            Some(key),
            body,
            &[],
        )
        .await
    }

    /// Sends one request and decodes its JSON answer; `also_ok` lists non-2xx statuses whose
    /// body is the expected document.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        key: Option<&str>,
        body: Vec<u8>,
        also_ok: &[StatusCode],
    ) -> Result<T, BridgeError> {
        self.call_with(method, segments, &[], key, body, also_ok, None)
            .await
    }

    /// [`Self::call`] with query parameters and, for a long poll, a deadline of its own.
    #[allow(clippy::too_many_arguments)]
    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        key: Option<&str>,
        body: Vec<u8>,
        also_ok: &[StatusCode],
        timeout: Option<Duration>,
    ) -> Result<T, BridgeError> {
        let mut url = self.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if self.sign {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let path_and_query = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            let sig = signature(
                self.secret.expose().as_bytes(),
                now,
                &Signed {
                    method: method.as_str(),
                    path_and_query: &path_and_query,
                    idempotency_key: key.unwrap_or_default(),
                    body: &body,
                },
            );
            request = request
                .header("X-Bridge-Timestamp", now.to_string())
                .header("X-Bridge-Signature", sig);
        } else {
            request = request.bearer_auth(self.secret.expose());
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if method == Method::POST {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let transport = |source| BridgeError::Transport {
            method: method.clone(),
            url: url.clone(),
            source,
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let too_large = || BridgeError::TooLarge {
            url: url.clone(),
            status: status.as_u16(),
            limit: MAX_RESPONSE_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        let decode = |source| BridgeError::Decode {
            url: url.clone(),
            status: status.as_u16(),
            source,
        };
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(decode);
        }
        if also_ok.contains(&status)
            && let Ok(doc) = serde_json::from_slice(&bytes)
        {
            return Ok(doc);
        }
        let (code, message, retryable) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => (clip(&error.code), clip(&error.message), error.retryable),
            Err(_) => (
                "http_error".to_owned(),
                clip(&String::from_utf8_lossy(&bytes)),
                false,
            ),
        };
        Err(BridgeError::Refused {
            status: status.as_u16(),
            code,
            message,
            retryable,
            retry_after,
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, code: &str, retryable: bool) -> BridgeError {
        BridgeError::Refused {
            status,
            code: code.into(),
            message: "m".into(),
            retryable,
            retry_after: None,
        }
    }

    #[test]
    fn request_level_errors_are_classified() {
        assert!(refused(429, "rate_limited", true).is_transient());
        assert!(refused(503, "endpoint_unavailable", false).is_transient());
        assert!(refused(409, "in_progress", true).is_transient());
        assert!(!refused(409, "idempotency_conflict", false).is_transient());
        assert!(!refused(401, "unauthorized", false).is_transient());
        assert!(!refused(413, "too_many_recipients", false).is_transient());
        assert!(!refused(422, "unprocessable", false).is_transient());
        let e = refused(401, "unauthorized", false).to_plugin_error();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::PERMANENT, "bridge answered 401 unauthorized: m")
        );
    }
}
