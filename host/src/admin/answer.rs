//! The one shape of every admin error answer:
//!
//! ```json
//! {"error": "what went wrong, for people", "code": "stable_machine_code"}
//! ```
//!
//! `error` stays a plain string (the status page and scripts read it as one); `code` is what a
//! program should branch on. An answer that says more adds fields beside these two (a refused
//! reload adds `status` and `errors`). A refusal the client should retry carries `Retry-After`.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

use crate::ingest::IngestError;

/// An error answer: status, code, message, and any further fields.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    /// Adds field `key` beside `error` and `code`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A request whose path, query or JSON body does not parse.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("error".into(), self.message.into());
        body.insert("code".into(), self.code.into());
        let mut r = (self.status, Json(Value::Object(body))).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self::new(e.status(), "bad_request", e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(e.body_text())
    }
}

impl From<&IngestError> for ApiError {
    fn from(e: &IngestError) -> Self {
        let (status, code) = match e {
            IngestError::Invalid(i) => (StatusCode::BAD_REQUEST, i.reason()),
            IngestError::Full(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            IngestError::Queue(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable"),
            IngestError::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        };
        let out = Self::new(status, code, e.to_string());
        match e.retry_after() {
            Some(after) => out.retry_after(after.as_secs_f64().ceil() as u64),
            None => out,
        }
    }
}

/// Any path the admin server does not serve.
pub async fn no_such_path() -> ApiError {
    ApiError::not_found("no such path")
}

/// A path served, asked with another method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn body_of(r: Response) -> (StatusCode, Option<String>, Value) {
        let status = r.status();
        let retry = r
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = to_bytes(r.into_body(), 1 << 16).await.unwrap();
        (status, retry, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn an_error_is_error_and_code_plus_its_own_fields() {
        let r = ApiError::new(StatusCode::BAD_REQUEST, "reload_refused", "refused")
            .with("errors", vec!["a", "b"])
            .retry_after(0)
            .into_response();
        let (status, retry, body) = body_of(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(retry.as_deref(), Some("1"), "never Retry-After: 0");
        assert_eq!(
            body,
            serde_json::json!({"error": "refused", "code": "reload_refused", "errors": ["a", "b"]})
        );
    }

    #[tokio::test]
    async fn an_extra_field_cannot_replace_error_or_code() {
        let r = ApiError::bad_request("the real message")
            .with("error", "forged")
            .with("code", "forged")
            .into_response();
        let (_, _, body) = body_of(r).await;
        assert_eq!(body["error"], "the real message");
        assert_eq!(body["code"], "bad_request");
    }
}
