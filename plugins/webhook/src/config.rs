//! The `webhook` source's configuration: the TOML shape, its defaults, and the checks that turn it
//! into [`Settings`] (tokens read, TLS files loaded) in the constructor.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    PluginError, Severity,
    kit::{Secret, config_error, resolve_secret},
};
use serde::Deserialize;

use crate::{auth::Tokens, tls};

/// The `[source.config]` table of a `webhook` instance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to serve on, e.g. `"0.0.0.0:9181"`.
    pub listen: SocketAddr,
    /// Accepted bearer tokens inline, separated by commas or whitespace (prefer a file or a
    /// variable: a config file is often readable by more people than a secret should be).
    #[serde(default)]
    pub tokens: Option<Secret>,
    /// File with the accepted bearer tokens: one per line, `#` starts a comment.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Environment variable holding accepted bearer tokens, separated by commas or whitespace.
    #[serde(default)]
    pub tokens_env: Option<String>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest request body taken; larger ones get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a request's headers (and a TLS handshake) before it is dropped.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body; slower ones get 408.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Time a whole request may take, including the wait for the host's durable receipt; when
    /// it runs out the answer is 503 with `Retry-After`.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Time a connection (HTTP/2 included) may stay open with no request in flight before it
    /// is told to finish; requests refused with 401 do not count as activity.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Time after which any connection, however busy, is told to finish (HTTP/2 GOAWAY) so
    /// that clients reconnect; it is dropped `request_timeout_ms` later if it has not.
    #[serde(default = "default_max_connection_age_ms")]
    pub max_connection_age_ms: u64,
    /// How `POST /api/v1/alertmanager` maps Alertmanager (and Grafana) alerts.
    #[serde(default)]
    pub alertmanager: AlertmanagerConfig,
}

/// Certificate and key for HTTPS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The Alertmanager mapping.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// What to do with alerts whose `status` is `resolved`.
    #[serde(default)]
    pub resolved: Resolved,
    /// The label whose value gives the severity.
    #[serde(default = "default_severity_label")]
    pub severity_label: String,
    /// Severity when the label is missing or its value is not known.
    #[serde(default = "default_severity")]
    pub default_severity: Severity,
}

impl Default for AlertmanagerConfig {
    fn default() -> Self {
        Self {
            resolved: Resolved::default(),
            severity_label: default_severity_label(),
            default_severity: default_severity(),
        }
    }
}

/// What becomes of a resolved Alertmanager alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolved {
    /// Dropped (answered as `ignored` in the 202 body).
    #[default]
    Ignore,
    /// Forwarded as an `info` alert whose subject starts with `[RESOLVED]` (a notice of its
    /// own, routed and delivered like any alert).
    Forward,
    /// Handed on with status resolved and the dedup key of the firing alert it ends, so the
    /// host resolves that alert's open incident (and tells those paged) instead of paging.
    Resolve,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}

fn default_body_read_timeout_ms() -> u64 {
    30_000
}

fn default_request_timeout_ms() -> u64 {
    60_000
}

fn default_idle_timeout_ms() -> u64 {
    60_000
}

fn default_max_connection_age_ms() -> u64 {
    900_000
}

/// More connections than this would exhaust file descriptors long before they helped.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

fn default_severity_label() -> String {
    "severity".to_owned()
}

fn default_severity() -> Severity {
    Severity::NORMAL
}

/// The checked configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tokens: Arc<Tokens>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection_age: Duration,
    pub alertmanager: AlertmanagerConfig,
}

impl WebhookConfig {
    /// Checks every value and reads the files it names; errors name the key.
    pub fn validate(self) -> Result<Settings, PluginError> {
        let tokens = self.tokens()?;
        let tls = match &self.tls {
            Some(t) => Some(Arc::new(tls::server_config(&t.cert_file, &t.key_file)?)),
            None => None,
        };
        positive("max_body_bytes", self.max_body_bytes as u64)?;
        positive("max_connections", self.max_connections as u64)?;
        positive("header_read_timeout_ms", self.header_read_timeout_ms)?;
        positive("body_read_timeout_ms", self.body_read_timeout_ms)?;
        positive("request_timeout_ms", self.request_timeout_ms)?;
        positive("idle_timeout_ms", self.idle_timeout_ms)?;
        positive("max_connection_age_ms", self.max_connection_age_ms)?;
        if self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(config_error(
                "max_connections",
                format!("must be at most {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if tls.is_none() && !self.listen.ip().is_loopback() {
            tracing::warn!(listen = %self.listen,
                "Serving plain HTTP on a non-loopback address: bearer tokens and alerts cross the network readable by anyone on the path. Configure [tls] (cert_file, key_file) or listen on 127.0.0.1 behind a TLS proxy.");
        }
        if self.alertmanager.severity_label.is_empty() {
            return Err(config_error(
                "alertmanager.severity_label",
                "must not be empty",
            ));
        }
        Ok(Settings {
            listen: self.listen,
            tokens: Arc::new(tokens),
            tls,
            max_body_bytes: self.max_body_bytes,
            max_connections: self.max_connections,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connection_age: Duration::from_millis(self.max_connection_age_ms),
            alertmanager: self.alertmanager,
        })
    }

    /// Reads every token source given (inline, file, variable; all of them add up). Errors
    /// name the key and where it looked, never a token.
    fn tokens(&self) -> Result<Tokens, PluginError> {
        let mut tokens = Tokens::default();
        if self.tokens.is_none() && self.tokens_file.is_none() && self.tokens_env.is_none() {
            return Err(config_error(
                "tokens_file",
                "set `tokens_file`, `tokens_env` or `tokens`: the webhook needs bearer tokens",
            ));
        }
        if let Some(inline) = &self.tokens {
            tokens.add_list(resolve_secret("tokens", Some(inline), None, None)?.expose());
        }
        if let Some(path) = &self.tokens_file {
            let bytes = std::fs::read(path).map_err(|e| {
                config_error(
                    "tokens_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                config_error(
                    "tokens_file",
                    format!("{} is not UTF-8 text", path.display()),
                )
            })?;
            tokens.add_lines(&text);
        }
        if let Some(var) = &self.tokens_env {
            tokens.add_list(resolve_secret("tokens", None, None, Some(var))?.expose());
        }
        if tokens.is_empty() {
            let key = if self.tokens_file.is_some() {
                "tokens_file"
            } else if self.tokens_env.is_some() {
                "tokens_env"
            } else {
                "tokens"
            };
            return Err(config_error(
                key,
                "no tokens found (blank lines and `#` comments do not count)",
            ));
        }
        Ok(tokens)
    }
}

fn positive(key: &str, value: u64) -> Result<(), PluginError> {
    if value == 0 {
        Err(config_error(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::{kit::Setup, testing::TestHost};

    use super::*;

    fn settings(toml: &str) -> Result<Settings, PluginError> {
        let setup = Setup {
            instance: "hook".into(),
            kind: "webhook".into(),
            config_toml: toml.into(),
            host: TestHost::new("hook").host(),
        };
        setup.config::<WebhookConfig>()?.validate()
    }

    fn tokens_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write tokens");
        file
    }

    #[test]
    fn defaults_apply_and_tokens_are_read() {
        let file = tokens_file("# ops\nsecret-1\n\n  secret-2  # trailing comment\n");
        let s = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {:?}\n",
            file.path()
        ))
        .expect("valid");
        assert_eq!(s.max_body_bytes, 1024 * 1024);
        assert_eq!(s.alertmanager.resolved, Resolved::Ignore);
        assert_eq!(s.alertmanager.default_severity, Severity::NORMAL);
        assert!(s.tokens.check("secret-1") && s.tokens.check("secret-2"));
        assert!(!s.tokens.check("ops") && !s.tokens.check("secret-2  # trailing comment"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = settings("listen = \"127.0.0.1:0\"\ntokens_file = \"/nonexistent/tokens\"\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`tokens_file`: cannot read /nonexistent/tokens"),
            "{}",
            err.to_string()
        );
        let err = settings("listen = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("`tokens_file`:"),
            "{}",
            err.to_string()
        );
        let err = settings("listen = \"nowhere\"\ntokens_env = \"X\"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("`listen`:"),
            "{}",
            err.to_string()
        );
        let err =
            settings("listen = \"127.0.0.1:0\"\ntokens_env = \"X\"\nmax_body = 3\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `max_body`"),
            "{}",
            err.to_string()
        );
        let file = tokens_file("t\n");
        let path = file.path();
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\nmax_connections = 0\n"
        ))
        .unwrap_err();
        assert_eq!(err.to_string(), "`max_connections`: must be greater than 0");
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\n[alertmanager]\ndefault_severity = \"urgent\"\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`alertmanager.default_severity`: unknown severity"),
            "{}",
            err.to_string()
        );
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\n[tls]\ncert_file = \"/nope.pem\"\nkey_file = \"/nope.key\"\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`tls.cert_file`: cannot read /nope.pem"),
            "{}",
            err.to_string()
        );
        let empty = tokens_file("# nothing here\n\n");
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {:?}\n",
            empty.path()
        ))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`tokens_file`: no tokens found"),
            "{}",
            err.to_string()
        );
    }

    #[test]
    fn the_example_config_parses() {
        let setup = Setup {
            instance: "hook".into(),
            kind: "webhook".into(),
            config_toml: include_str!("../webhook.example.toml").into(),
            host: TestHost::new("hook").host(),
        };
        let config = setup.config::<WebhookConfig>().expect("example config");
        assert_eq!(config.max_body_bytes, default_max_body_bytes());
        assert_eq!(
            config.header_read_timeout_ms,
            default_header_read_timeout_ms()
        );
        assert_eq!(config.alertmanager.resolved, Resolved::Ignore);
        assert_eq!(config.alertmanager.default_severity, default_severity());
    }

    #[test]
    fn inline_tokens_add_up_and_are_never_shown() {
        let file = tokens_file("from-file\n");
        let s = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens = \"inline-1, inline-2\"\ntokens_file = {:?}\n",
            file.path()
        ))
        .expect("valid");
        assert!(s.tokens.check("inline-1") && s.tokens.check("inline-2"));
        assert!(s.tokens.check("from-file"));
        assert_eq!(format!("{:?}", s.tokens), "Tokens(3 redacted)");
        let err = settings("listen = \"127.0.0.1:0\"\ntokens = 91735701\n").unwrap_err();
        assert!(
            err.to_string().starts_with("`tokens`: expected a string")
                && !err.to_string().contains("91735701"),
            "{}",
            err.to_string()
        );
        let err = settings("listen = \"127.0.0.1:0\"\ntokens = \" , \"\n").unwrap_err();
        assert!(
            err.to_string().starts_with("`tokens`: no tokens found"),
            "{}",
            err.to_string()
        );
    }

    #[test]
    fn a_missing_tokens_variable_is_named() {
        // Edition 2024 makes `set_var` unsafe (and the crate denies unsafe), so only the missing
        // case is tested here; the list format is tested in `auth`.
        let var = "ALERTBRIDGE_WEBHOOK_CONFIG_TEST_UNSET";
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_env = \"{var}\"\n"
        ))
        .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "`tokens_env`: environment variable `{var}` is not set"
            )),
            "{}",
            err.to_string()
        );
    }
}
