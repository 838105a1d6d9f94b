//! The `webhook` source's configuration: the TOML shape, its defaults, and the checks that turn it
//! into [`Settings`] (tokens read, TLS files loaded) in the constructor.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use alertbridge_plugin_api::{PluginError, Severity, kit::config_error};
use serde::Deserialize;

use crate::{auth::Tokens, tls};

/// The `[source.config]` table of a `webhook` instance.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to serve on, e.g. `"0.0.0.0:9181"`.
    pub listen: SocketAddr,
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
    #[serde(default = "default_severity", deserialize_with = "severity")]
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
    /// Forwarded as an `info` alert whose subject starts with `[RESOLVED]`.
    Forward,
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

fn default_severity_label() -> String {
    "severity".to_owned()
}

fn default_severity() -> Severity {
    Severity::NORMAL
}

fn severity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    let name = String::deserialize(d)?;
    Severity::from_name(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown severity {name:?}, expected info, low, normal, high or critical"
        ))
    })
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
    pub alertmanager: AlertmanagerConfig,
}

impl WebhookConfig {
    /// Checks every value and reads the files it names; errors name the key.
    pub fn validate(self) -> Result<Settings, PluginError> {
        let mut tokens = Tokens::default();
        if self.tokens_file.is_none() && self.tokens_env.is_none() {
            return Err(config_error(
                "tokens_file",
                "set `tokens_file` or `tokens_env`: the webhook needs bearer tokens",
            ));
        }
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                config_error(
                    "tokens_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            tokens.add_lines(&text);
        }
        if let Some(var) = &self.tokens_env {
            let text = std::env::var(var).map_err(|e| {
                config_error("tokens_env", format!("environment variable {var}: {e}"))
            })?;
            tokens.add_list(&text);
        }
        if tokens.is_empty() {
            let key = if self.tokens_file.is_some() {
                "tokens_file"
            } else {
                "tokens_env"
            };
            return Err(config_error(
                key,
                "no tokens found (blank lines and `#` comments do not count)",
            ));
        }
        let tls = match &self.tls {
            Some(t) => Some(Arc::new(tls::server_config(&t.cert_file, &t.key_file)?)),
            None => None,
        };
        positive("max_body_bytes", self.max_body_bytes as u64)?;
        positive("max_connections", self.max_connections as u64)?;
        positive("header_read_timeout_ms", self.header_read_timeout_ms)?;
        positive("body_read_timeout_ms", self.body_read_timeout_ms)?;
        positive("request_timeout_ms", self.request_timeout_ms)?;
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
            alertmanager: self.alertmanager,
        })
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
            err.message
                .starts_with("`tokens_file`: cannot read /nonexistent/tokens"),
            "{}",
            err.message
        );
        let err = settings("listen = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(err.message.starts_with("`tokens_file`:"), "{}", err.message);
        let err = settings("listen = \"nowhere\"\ntokens_env = \"X\"\n").unwrap_err();
        assert!(err.message.starts_with("`listen`:"), "{}", err.message);
        let err =
            settings("listen = \"127.0.0.1:0\"\ntokens_env = \"X\"\nmax_body = 3\n").unwrap_err();
        assert!(
            err.message.contains("unknown field `max_body`"),
            "{}",
            err.message
        );
        let file = tokens_file("t\n");
        let path = file.path();
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\nmax_connections = 0\n"
        ))
        .unwrap_err();
        assert_eq!(err.message, "`max_connections`: must be greater than 0");
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\n[alertmanager]\ndefault_severity = \"urgent\"\n"
        ))
        .unwrap_err();
        assert!(
            err.message
                .starts_with("`alertmanager.default_severity`: unknown severity"),
            "{}",
            err.message
        );
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {path:?}\n[tls]\ncert_file = \"/nope.pem\"\nkey_file = \"/nope.key\"\n"
        ))
        .unwrap_err();
        assert!(
            err.message
                .starts_with("`tls.cert_file`: cannot read /nope.pem"),
            "{}",
            err.message
        );
        let empty = tokens_file("# nothing here\n\n");
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {:?}\n",
            empty.path()
        ))
        .unwrap_err();
        assert!(
            err.message.starts_with("`tokens_file`: no tokens found"),
            "{}",
            err.message
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
    fn a_missing_tokens_variable_is_named() {
        // Edition 2024 makes `set_var` unsafe (and the crate denies unsafe), so only the missing
        // case is tested here; the list format is tested in `auth`.
        let var = "ALERTBRIDGE_WEBHOOK_CONFIG_TEST_UNSET";
        let err = settings(&format!(
            "listen = \"127.0.0.1:0\"\ntokens_env = \"{var}\"\n"
        ))
        .unwrap_err();
        assert!(
            err.message
                .starts_with(&format!("`tokens_env`: environment variable {var}")),
            "{}",
            err.message
        );
    }
}
