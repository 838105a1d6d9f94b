//! The `ucma` sink's configuration: the TOML it reads and the checks that turn it into
//! [`Settings`] (secret resolved, TLS material loaded, plain HTTP only where allowed, and a
//! bearer secret never in clear off loopback).

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use alertbridge_plugin_api::{
    PluginError,
    kit::{Secret, config_error, resolve_secret},
};
use reqwest::Url;
use serde::Deserialize;

/// The bridge's documented limits (docs/ucma-bridge-protocol.md §7).
pub const BRIDGE_MAX_PRESENCE_TARGETS: usize = 500;
pub const BRIDGE_MAX_RECIPIENTS: usize = 100;

/// `[sink.config]` of a `ucma` sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UcmaConfig {
    /// Base URL of the bridge, e.g. `https://ucma-bridge.contoso.com:8443`; `/v1/...` is appended.
    pub endpoint: String,
    /// The shared secret, inline (a TOML string; never printed).
    pub secret: Option<Secret>,
    /// A file holding the shared secret (surrounding whitespace is ignored).
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// PEM client certificate (chain) for bridges that check client certificates.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust besides the public roots (an internal PKI).
    pub ca_file: Option<PathBuf>,
    /// Sign each request with HMAC-SHA256 instead of sending the secret (§2.3).
    #[serde(default)]
    pub sign_requests: bool,
    /// Allow `http://` to a bridge that is not on loopback.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Most users in one presence query (at most the bridge's `max_presence_targets`).
    #[serde(default = "default_presence_batch_size")]
    pub presence_batch_size: usize,
    /// Most recipients in one send; 1 sends each recipient under a key of its own.
    #[serde(default = "default_max_recipients_per_message")]
    pub max_recipients_per_message: usize,
    /// How long the bridge may take to establish a call and send (`timeout_ms` of a send).
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// How long the bridge may take to answer a presence query.
    #[serde(default = "default_presence_timeout_ms")]
    pub presence_timeout_ms: u64,
    /// The HTTP deadline of one request, and of a send including polling its outcome.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// How often `/v1/health` is polled.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// `session` (an IM conversation, confirmed) or `page` (page-mode, best effort).
    #[serde(default)]
    pub mode: Mode,
    /// Requests to the bridge in flight at once for one delivery or presence call.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Long-poll the bridge for users' replies and hand them to the host (§4.5).
    #[serde(default = "default_true")]
    pub inbound: bool,
    /// How long one long poll of `/v1/inbound` may wait at the bridge.
    #[serde(default = "default_inbound_wait_ms")]
    pub inbound_wait_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_inbound_wait_ms() -> u64 {
    25_000
}

/// How the bridge sends an IM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Session,
    Page,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Page => "page",
        }
    }
}

fn default_presence_batch_size() -> usize {
    100
}
fn default_max_recipients_per_message() -> usize {
    1
}
fn default_send_timeout_ms() -> u64 {
    30_000
}
fn default_presence_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    40_000
}
fn default_health_interval_ms() -> u64 {
    15_000
}
fn default_max_concurrent_requests() -> usize {
    8
}

/// A checked configuration, ready to build the client from.
#[derive(Debug)]
pub struct Settings {
    pub config: UcmaConfig,
    pub endpoint: Url,
    pub secret: Secret,
    /// Client certificate and key, concatenated PEM.
    pub identity_pem: Option<Vec<u8>>,
    pub ca_pem: Option<Vec<u8>>,
}

impl Settings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }
}

impl UcmaConfig {
    /// Checks every value and loads the files it names. Errors name the key.
    pub fn check(self) -> Result<Settings, PluginError> {
        let endpoint = check_endpoint(&self.endpoint, self.allow_insecure_http)?;
        check_bearer_in_clear(&endpoint, self.sign_requests)?;
        let secret = self.resolve_secret()?;
        in_range(
            "presence_batch_size",
            self.presence_batch_size,
            1,
            BRIDGE_MAX_PRESENCE_TARGETS,
        )?;
        in_range(
            "max_recipients_per_message",
            self.max_recipients_per_message,
            1,
            BRIDGE_MAX_RECIPIENTS,
        )?;
        in_range("send_timeout_ms", self.send_timeout_ms, 1_000, 60_000)?;
        in_range("presence_timeout_ms", self.presence_timeout_ms, 100, 30_000)?;
        in_range(
            "health_interval_ms",
            self.health_interval_ms,
            100,
            3_600_000,
        )?;
        in_range(
            "max_concurrent_requests",
            self.max_concurrent_requests,
            1,
            64,
        )?;
        in_range("inbound_wait_ms", self.inbound_wait_ms, 1_000, 30_000)?;
        let longest = self.send_timeout_ms.max(self.presence_timeout_ms);
        if self.request_timeout_ms <= longest {
            return Err(config_error(
                "request_timeout_ms",
                format!(
                    "must be longer than send_timeout_ms and presence_timeout_ms ({longest} ms)"
                ),
            ));
        }
        let identity_pem = match (&self.client_cert_file, &self.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let mut pem = read("client_cert_file", cert)?;
                pem.push(b'\n');
                pem.extend(read("client_key_file", key)?);
                reqwest::Identity::from_pem(&pem).map_err(|e| {
                    config_error(
                        "client_cert_file",
                        format!("not a PEM certificate and key: {e}"),
                    )
                })?;
                Some(pem)
            }
            (Some(_), None) => {
                return Err(config_error(
                    "client_key_file",
                    "required with `client_cert_file`",
                ));
            }
            (None, Some(_)) => {
                return Err(config_error(
                    "client_cert_file",
                    "required with `client_key_file`",
                ));
            }
        };
        let ca_pem = match &self.ca_file {
            None => None,
            Some(path) => {
                let pem = read("ca_file", path)?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| config_error("ca_file", format!("not PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(config_error("ca_file", "holds no certificate"));
                }
                Some(pem)
            }
        };
        Ok(Settings {
            config: self,
            endpoint,
            secret,
            identity_pem,
            ca_pem,
        })
    }

    /// The shared secret from exactly one of `secret`, `secret_file` (its first line) or
    /// `secret_env`, surrounding whitespace ignored; at least 16 printable ASCII characters.
    /// Errors name the key, never the value.
    fn resolve_secret(&self) -> Result<Secret, PluginError> {
        let secret = resolve_secret(
            "secret",
            self.secret.as_ref(),
            self.secret_file.as_deref(),
            self.secret_env.as_deref(),
        )?;
        let key = if self.secret.is_some() {
            "secret"
        } else if self.secret_file.is_some() {
            "secret_file"
        } else {
            "secret_env"
        };
        let value = secret.expose().trim();
        if value.len() < 16 || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(config_error(
                key,
                "the secret must be at least 16 printable ASCII characters",
            ));
        }
        Ok(Secret::new(value))
    }
}

/// Parses the endpoint and refuses plain HTTP to anything but loopback unless allowed.
pub fn check_endpoint(text: &str, allow_insecure_http: bool) -> Result<Url, PluginError> {
    let url = Url::parse(text).map_err(|e| config_error("endpoint", format!("not a URL: {e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| config_error("endpoint", "has no host"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(host) => {}
        "http" => {
            return Err(config_error(
                "endpoint",
                format!(
                    "plain http:// to `{host}`, which is not loopback, would expose the secret and the alerts; \
                     use https://, or set `allow_insecure_http = true` (then `sign_requests = true` is advised)"
                ),
            ));
        }
        other => {
            return Err(config_error(
                "endpoint",
                format!("scheme `{other}` is not http or https"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(
            "endpoint",
            "must not have a query or fragment",
        ));
    }
    Ok(url)
}

/// Refuses a bearer secret over plain HTTP to anything but loopback: whoever sees the traffic
/// could use it. Off loopback, plain HTTP needs `sign_requests = true` (§2.3: the secret is then
/// never sent).
pub fn check_bearer_in_clear(endpoint: &Url, sign_requests: bool) -> Result<(), PluginError> {
    let host = endpoint.host_str().unwrap_or_default();
    if endpoint.scheme() == "http" && !sign_requests && !is_loopback(host) {
        return Err(config_error(
            "sign_requests",
            format!(
                "plain http:// to `{host}`, which is not loopback, would send the secret in clear as a bearer; \
                 set `sign_requests = true` (the secret then never leaves this host), or use https://"
            ),
        ));
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

fn in_range<T: PartialOrd + fmt::Display>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), PluginError> {
    if value < min || value > max {
        return Err(config_error(
            key,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

fn read(key: &str, path: &std::path::Path) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path)
        .map_err(|e| config_error(key, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_only_for_loopback_unless_allowed() {
        assert!(check_endpoint("http://127.0.0.1:9000", false).is_ok());
        assert!(check_endpoint("http://[::1]:9000", false).is_ok());
        assert!(check_endpoint("http://localhost:9000", false).is_ok());
        assert!(check_endpoint("https://bridge.contoso.com", false).is_ok());
        let e = check_endpoint("http://bridge.contoso.com:9000", false).expect_err("refused");
        assert!(
            e.to_string().starts_with("`endpoint`: ")
                && e.to_string().contains("allow_insecure_http"),
            "{}",
            e.to_string()
        );
        assert!(check_endpoint("http://10.0.0.5:9000", true).is_ok());
        let remote = check_endpoint("http://10.0.0.5:9000", true).expect("allowed");
        let e = check_bearer_in_clear(&remote, false).expect_err("bearer in clear");
        assert!(
            e.to_string()
                .starts_with("`sign_requests`: plain http:// to `10.0.0.5`"),
            "{}",
            e.to_string()
        );
        assert!(check_bearer_in_clear(&remote, true).is_ok());
        let local = check_endpoint("http://127.0.0.1:9000", false).expect("loopback");
        assert!(check_bearer_in_clear(&local, false).is_ok());
        let tls = check_endpoint("https://bridge.contoso.com", false).expect("https");
        assert!(check_bearer_in_clear(&tls, false).is_ok());
        assert!(check_endpoint("ftp://bridge", true).is_err());
        assert!(check_endpoint("https://bridge/?x=1", false).is_err());
    }

    #[test]
    fn loopback_is_recognised() {
        assert!(is_loopback("127.0.0.2"));
        assert!(is_loopback("[::1]"));
        assert!(!is_loopback("127.0.0.1.nip.io"));
        assert!(!is_loopback("10.1.2.3"));
    }
}
