//! The client's error type: transport, HTTP status with the UCWA error body, parse, token and
//! protocol errors kept apart, with the retry classification in one place.

use std::time::Duration;

/// What went wrong talking to the UCWA server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UcwaError {
    /// The request did not get a response (connect, TLS, timeout, reset).
    #[error("{method} {url}")]
    Transport {
        method: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{}", describe(code, subcode, message))]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
        subcode: Option<String>,
        message: Option<String>,
        retry_after: Option<Duration>,
    },
    /// A body was not the JSON we expected.
    #[error("{url}: unexpected response body")]
    Body {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// A response lacked a link or field the protocol promises.
    #[error("{url}: {what}")]
    Protocol { url: String, what: String },
    /// A 401 came without a usable `MsRtcOAuth` challenge.
    #[error("{url}: HTTP 401 without an MsRtcOAuth challenge")]
    NoChallenge { url: String },
    /// The token endpoint refused the password grant.
    #[error("{url}: token request refused: {error}")]
    Grant { url: String, error: String },
    /// The application this request belonged to was lost and is being re-created.
    #[error("the application was lost")]
    ApplicationLost,
    /// A link, redirect or token endpoint pointed somewhere the trust policy does not allow
    /// (plain http, a downgrade, a host outside the deployment); nothing was sent there.
    #[error("refusing to follow {url}: {reason}")]
    UrlRejected { url: String, reason: String },
    /// A response body was longer than `max_response_bytes`; the rest was not read.
    #[error("{url}: response body larger than {limit} bytes (max_response_bytes); not read")]
    TooLarge { url: String, limit: usize },
}

fn describe(code: &Option<String>, subcode: &Option<String>, message: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(code) = code {
        out.push(' ');
        out.push_str(code);
        if let Some(subcode) = subcode {
            out.push('/');
            out.push_str(subcode);
        }
    }
    if let Some(message) = message {
        out.push_str(": ");
        out.push_str(message);
    }
    out
}

impl UcwaError {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn subcode(&self) -> Option<&str> {
        match self {
            Self::Status { subcode, .. } => subcode.as_deref(),
            _ => None,
        }
    }

    /// The application no longer exists on the server (404 ApplicationNotFound, any 410): it
    /// must be created again.
    pub fn is_application_gone(&self) -> bool {
        if matches!(self, Self::ApplicationLost) {
            return true;
        }
        match self.status() {
            Some(410) => true,
            Some(404) => self.subcode() == Some("ApplicationNotFound"),
            _ => false,
        }
    }

    /// A newer P-GET replaced ours (409 PGetReplaced).
    pub fn is_pget_replaced(&self) -> bool {
        self.status() == Some(409) && self.subcode() == Some("PGetReplaced")
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            // An oversized body is refused, not trusted, but the alert is kept for a retry.
            Self::Transport { .. }
            | Self::Body { .. }
            | Self::ApplicationLost
            | Self::TooLarge { .. } => true,
            Self::Status { status, .. } => {
                matches!(status, 404 | 408 | 409 | 410 | 429 | 500..=599)
            }
            Self::Protocol { .. }
            | Self::NoChallenge { .. }
            | Self::Grant { .. }
            | Self::UrlRejected { .. } => false,
        }
    }

    /// The server's retry advice, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, subcode: Option<&str>) -> UcwaError {
        UcwaError::Status {
            url: "http://x/".into(),
            status,
            code: Some("NotFound".into()),
            subcode: subcode.map(Into::into),
            message: Some("gone".into()),
            retry_after: None,
        }
    }

    #[test]
    fn application_loss_is_recognized_by_status_and_subcode() {
        assert!(status(404, Some("ApplicationNotFound")).is_application_gone());
        assert!(status(410, Some("InactiveApplicationExpired")).is_application_gone());
        assert!(!status(404, None).is_application_gone());
        assert!(status(409, Some("PGetReplaced")).is_pget_replaced());
        assert_eq!(
            status(404, Some("ApplicationNotFound")).to_string(),
            "http://x/: HTTP 404 NotFound/ApplicationNotFound: gone"
        );
    }
}
