//! The `ucwa` sink's configuration: the TOML table, its validation, and the resolved settings
//! the client runs with (password read, autodiscover candidates and the trusted hosts built).

use std::{path::PathBuf, time::Duration};

use alertbridge_plugin_api::{
    PluginError,
    kit::{Secret, config_error, resolve_secret},
};
use reqwest::Url;
use serde::Deserialize;

use crate::trust::{HostPattern, Trust, scheme_allowed, sip_domain};

/// The longest a UCWA server parks a P-GET (the `timeout` parameter's default is 180 s).
pub const SERVER_LONG_POLL_SECS: u64 = 180;

/// The `[sink.config]` table of a `ucwa` sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UcwaConfig {
    /// Where autodiscover starts, e.g. `https://lyncdiscover.contoso.com`. Exclusive with `domain`.
    pub autodiscover_url: Option<String>,
    /// The SIP domain: tries `https://lyncdiscoverinternal.<domain>`, then `https://lyncdiscover.<domain>`.
    pub domain: Option<String>,
    /// The account that sends the IMs, e.g. `alerts@contoso.com`.
    pub username: String,
    /// The password inline (prefer `password_file` or `password_env`).
    pub password: Option<Secret>,
    /// A file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// `UserAgent` of the application.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// `Culture` of the application (error messages come in this language).
    #[serde(default = "default_culture")]
    pub culture: String,
    /// Conversations in flight at once, across all deliveries (also caps presence reads).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_conversations: usize,
    /// Timeout of ordinary requests.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// Timeout of the event channel's P-GET; must exceed the server's long poll (180 s).
    #[serde(default = "default_event_timeout")]
    pub event_timeout_secs: u64,
    /// How long to wait for an invitation to be answered (the server gives up after ~30 s).
    #[serde(default = "default_invitation_timeout")]
    pub invitation_timeout_secs: u64,
    /// Interval of `reportMyActivity` (the server wants one at least every 4 minutes).
    #[serde(default = "default_report_activity")]
    pub report_activity_secs: u64,
    /// How long a presence answer is reused.
    #[serde(default = "default_presence_cache")]
    pub presence_cache_ms: u64,
    /// Read presence through the application's `batch` link (many users per request) when
    /// the server offers one.
    #[serde(default = "default_true")]
    pub presence_batch: bool,
    /// `plain` (the default) or `html` (subject in bold, text escaped).
    #[serde(default)]
    pub message_format: MessageFormat,
    /// `in_invitation` (the default: the text rides in startMessaging as a data URL, one round
    /// trip) or `send_message` (sendMessage once the conversation is Connected).
    #[serde(default)]
    pub first_message: FirstMessage,
    /// Allow `http://` URLs; only honoured for loopback hosts (tests, the demo).
    #[serde(default)]
    pub allow_http: bool,
    /// Hosts outside the SIP domain that may receive the password and tokens (e.g. a pool
    /// under another DNS domain): `host`, `host:port`, or `*.domain[:port]`.
    #[serde(default)]
    pub trusted_hosts: Vec<String>,
    /// The largest response body read from the server; a longer one is an error.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Extra CA certificate(s) (PEM) to trust, for an internal PKI.
    pub ca_file: Option<PathBuf>,
    /// How long a page's conversation stays open after its last message, so the person can
    /// answer in it (0: stop it right after the page, as before replies existed).
    #[serde(default = "default_conversation_keep")]
    pub conversation_keep_secs: u64,
    /// Conversations kept open at most; past it the least recently used one is stopped.
    #[serde(default = "default_max_kept")]
    pub max_kept_conversations: usize,
    /// Inbound messages kept while the host cannot take them (TRANSIENT); past it the oldest
    /// is dropped, logged at warn.
    #[serde(default = "default_max_pending_inbound")]
    pub max_pending_inbound: usize,
}

/// How the IM text is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    #[default]
    Plain,
    Html,
}

/// How the IM text reaches the recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FirstMessage {
    #[default]
    InInvitation,
    SendMessage,
}

fn default_user_agent() -> String {
    format!("alertbridge/{}", env!("CARGO_PKG_VERSION"))
}
fn default_true() -> bool {
    true
}
fn default_culture() -> String {
    "en-US".into()
}
fn default_max_concurrent() -> usize {
    64
}
fn default_request_timeout() -> u64 {
    30
}
fn default_event_timeout() -> u64 {
    SERVER_LONG_POLL_SECS + 60
}
fn default_invitation_timeout() -> u64 {
    45
}
fn default_report_activity() -> u64 {
    60
}
fn default_presence_cache() -> u64 {
    3000
}
fn default_max_response_bytes() -> usize {
    4 << 20
}
fn default_conversation_keep() -> u64 {
    3600
}
fn default_max_kept() -> usize {
    1000
}
fn default_max_pending_inbound() -> usize {
    256
}

/// The checked configuration the client runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Autodiscover URLs to try in order.
    pub discover: Vec<Url>,
    pub username: String,
    pub password: Secret,
    pub user_agent: String,
    pub culture: String,
    pub max_concurrent: usize,
    pub request_timeout: Duration,
    pub event_timeout: Duration,
    pub invitation_timeout: Duration,
    pub report_activity: Duration,
    pub presence_cache: Duration,
    pub presence_batch: bool,
    pub message_format: MessageFormat,
    pub first_message: FirstMessage,
    /// Which URLs may be called (scheme, deployment hosts, hops).
    pub trust: Trust,
    pub max_response_bytes: usize,
    /// PEM bytes of `ca_file`.
    pub ca_pem: Option<Vec<u8>>,
    /// How long a conversation is kept open after its last message (zero: not kept).
    pub conversation_keep: Duration,
    pub max_kept_conversations: usize,
    pub max_pending_inbound: usize,
}

impl UcwaConfig {
    /// Validates the table and resolves the password.
    pub fn settings(&self) -> Result<Settings, PluginError> {
        let discover = match (&self.autodiscover_url, &self.domain) {
            (Some(url), None) => {
                let url = Url::parse(url).map_err(|e| config_error("autodiscover_url", e))?;
                scheme_allowed(&url, self.allow_http)
                    .map_err(|e| config_error("autodiscover_url", e))?;
                vec![url]
            }
            (None, Some(domain)) => {
                discover_candidates(domain).map_err(|e| config_error("domain", e))?
            }
            _ => {
                return Err(config_error(
                    "autodiscover_url",
                    "set exactly one of `autodiscover_url` and `domain`",
                ));
            }
        };
        if self.username.trim().is_empty() {
            return Err(config_error("username", "must not be empty"));
        }
        let password = resolve_secret(
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        let hosts = self
            .trusted_hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| config_error("trusted_hosts", e)))
            .collect::<Result<Vec<_>, _>>()?;
        let domains = sip_domain(&self.username).into_iter().chain(
            self.domain
                .as_deref()
                .and_then(|d| sip_domain(&format!("@{d}"))),
        );
        let trust = Trust::new(self.allow_http, &discover, domains, hosts);
        if self.max_response_bytes < 64 * 1024 {
            return Err(config_error("max_response_bytes", "must be at least 65536"));
        }
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(config_error(key, "must be greater than 0"))
            } else {
                Ok(v)
            }
        };
        if self.max_concurrent_conversations == 0 {
            return Err(config_error(
                "max_concurrent_conversations",
                "must be greater than 0",
            ));
        }
        if self.event_timeout_secs <= SERVER_LONG_POLL_SECS {
            return Err(config_error(
                "event_timeout_secs",
                format!("must exceed the server's long poll of {SERVER_LONG_POLL_SECS} s"),
            ));
        }
        if self.max_kept_conversations == 0 {
            return Err(config_error(
                "max_kept_conversations",
                "must be greater than 0",
            ));
        }
        if self.max_pending_inbound == 0 {
            return Err(config_error(
                "max_pending_inbound",
                "must be greater than 0",
            ));
        }
        let ca_pem = match &self.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| config_error("ca_file", format!("{}: {e}", path.display())))?;
                reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| config_error("ca_file", e))?;
                Some(pem)
            }
            None => None,
        };
        Ok(Settings {
            discover,
            username: self.username.trim().to_owned(),
            password,
            user_agent: self.user_agent.clone(),
            culture: self.culture.clone(),
            max_concurrent: self.max_concurrent_conversations,
            request_timeout: Duration::from_secs(positive(
                "request_timeout_secs",
                self.request_timeout_secs,
            )?),
            event_timeout: Duration::from_secs(self.event_timeout_secs),
            invitation_timeout: Duration::from_secs(positive(
                "invitation_timeout_secs",
                self.invitation_timeout_secs,
            )?),
            report_activity: Duration::from_secs(positive(
                "report_activity_secs",
                self.report_activity_secs,
            )?),
            presence_cache: Duration::from_millis(self.presence_cache_ms),
            presence_batch: self.presence_batch,
            message_format: self.message_format,
            first_message: self.first_message,
            trust,
            max_response_bytes: self.max_response_bytes,
            ca_pem,
            conversation_keep: Duration::from_secs(self.conversation_keep_secs),
            max_kept_conversations: self.max_kept_conversations,
            max_pending_inbound: self.max_pending_inbound,
        })
    }
}

/// `https://lyncdiscoverinternal.<domain>` then `https://lyncdiscover.<domain>`.
pub fn discover_candidates(domain: &str) -> Result<Vec<Url>, String> {
    let domain = domain.trim().trim_end_matches('.');
    if domain.is_empty() || domain.contains(['/', ':', '@', ' ']) {
        return Err(format!("`{domain}` is not a domain name"));
    }
    ["lyncdiscoverinternal", "lyncdiscover"]
        .iter()
        .map(|prefix| Url::parse(&format!("https://{prefix}.{domain}/")).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Settings, PluginError> {
        let config: UcwaConfig =
            toml::from_str(toml_text).map_err(|e| PluginError::config(e.to_string()))?;
        config.settings()
    }

    #[test]
    fn the_sample_config_parses_with_every_key() {
        let with_password = include_str!("../sample.toml").replace(
            "password_env = \"ALERTBRIDGE_UCWA_PASSWORD\"",
            "password = \"x\"",
        );
        let s = parse(&with_password).unwrap();
        assert_eq!(s.discover[0].as_str(), "https://lyncdiscover.contoso.com/");
        assert_eq!(s.event_timeout, Duration::from_secs(240));
        assert!(s.presence_batch);
    }

    #[test]
    fn domain_gives_internal_then_external_candidates() {
        let s = parse("domain = \"contoso.com\"\nusername = \"a@contoso.com\"\npassword = \"p\"\n")
            .unwrap();
        let urls: Vec<&str> = s.discover.iter().map(Url::as_str).collect();
        assert_eq!(
            urls,
            [
                "https://lyncdiscoverinternal.contoso.com/",
                "https://lyncdiscover.contoso.com/"
            ]
        );
        assert_eq!(s.max_concurrent, 64);
        assert!(s.event_timeout > Duration::from_secs(SERVER_LONG_POLL_SECS));
    }

    #[test]
    fn http_only_for_loopback_and_only_when_allowed() {
        let base = "username = \"a\"\npassword = \"p\"\n";
        assert!(
            parse(&format!(
                "{base}autodiscover_url = \"http://127.0.0.1:8080\"\n"
            ))
            .is_err()
        );
        assert!(
            parse(&format!(
                "{base}autodiscover_url = \"http://127.0.0.1:8080\"\nallow_http = true\n"
            ))
            .is_ok()
        );
        let remote = parse(&format!(
            "{base}autodiscover_url = \"http://lync.contoso.com\"\nallow_http = true\n"
        ));
        assert!(remote.unwrap_err().to_string().contains("loopback"));
    }

    #[test]
    fn exactly_one_password_source_and_one_start_point() {
        let e =
            parse("domain = \"c.com\"\nusername = \"a\"\npassword = \"p\"\npassword_env = \"X\"\n")
                .unwrap_err();
        assert!(e.to_string().starts_with("`password`"), "{}", e.to_string());
        let e = parse("username = \"a\"\npassword = \"p\"\n").unwrap_err();
        assert!(
            e.to_string().starts_with("`autodiscover_url`"),
            "{}",
            e.to_string()
        );
        let e = parse(
            "domain = \"c.com\"\nusername = \"a\"\npassword = \"p\"\nevent_timeout_secs = 100\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("`event_timeout_secs`"),
            "{}",
            e.to_string()
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_or_errors() {
        const PLANTED: &str = "PLANTED-ucwa-5ecret";
        let text = format!(
            "domain = \"contoso.com\"\nusername = \"a@contoso.com\"\npassword = \"{PLANTED}\"\n"
        );
        let config: UcwaConfig = toml::from_str(&text).unwrap();
        let settings = config.settings().unwrap();
        assert_eq!(settings.password.expose(), PLANTED);
        let shown = format!("{config:?} {settings:?}");
        assert!(!shown.contains(PLANTED), "{shown}");
        // A mistyped password: the error says what was expected, never the value.
        let err = toml::from_str::<UcwaConfig>(
            "domain = \"c.com\"\nusername = \"a\"\npassword = 86753091\n",
        )
        .unwrap_err();
        assert!(!err.message().contains("86753091"), "{}", err.message());
        let err =
            parse("domain = \"c.com\"\nusername = \"a\"\npassword_env = \"AB_UCWA_UNSET_9\"\n")
                .unwrap_err();
        assert!(
            err.to_string().contains("`password_env`"),
            "{}",
            err.to_string()
        );
    }

    #[test]
    fn trusted_hosts_and_the_body_cap_are_checked() {
        let base = "domain = \"contoso.com\"\nusername = \"a@contoso.com\"\npassword = \"p\"\n";
        let e = parse(&format!(
            "{base}trusted_hosts = [\"https://pool.contoso.net/\"]\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().starts_with("`trusted_hosts`"),
            "{}",
            e.to_string()
        );
        let s = parse(&format!("{base}trusted_hosts = [\"pool.contoso.net\"]\n")).unwrap();
        let pool = Url::parse("https://pool.contoso.net/ucwa").unwrap();
        assert_eq!(s.trust.check(&pool), Ok(()));
        assert_eq!(s.max_response_bytes, 4 << 20);
        let e = parse(&format!("{base}max_response_bytes = 100\n")).unwrap_err();
        assert!(
            e.to_string().starts_with("`max_response_bytes`"),
            "{}",
            e.to_string()
        );
    }
}
