//! The `[source.config]` table of a `pop3` instance, and its validation into [`Settings`].

use std::{net::IpAddr, path::PathBuf, time::Duration};

use alertbridge_plugin_api::{
    PluginError,
    kit::{Secret, config_error, resolve_secret},
};
use serde::Deserialize;

use crate::{
    client::{AuthMethod, Endpoint, Timeouts, TlsMode, client_config},
    error_chain,
    mail::MailOptions,
    protocol::Limits,
};

/// Configuration of a `pop3` source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Config {
    /// `host:port` of the server (`[v6]:port` for IPv6); the port defaults to 995 with implicit
    /// TLS and 110 otherwise.
    pub server: String,
    /// `implicit` (POP3S, default), `starttls` (STLS) or `none` (loopback only).
    #[serde(default)]
    pub tls: TlsMode,
    /// PEM file of extra CA certificates, trusted besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    pub username: String,
    /// The password inline; exactly one of `password`, `password_file`, `password_env`.
    pub password: Option<Secret>,
    /// A file holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
    /// `user`, `apop` or `plain`; default: the best the server offers.
    pub auth: Option<AuthChoice>,
    /// How often to look for new mail.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// At most this many mails per session; then QUIT, so the deletions so far are committed.
    #[serde(default = "default_max_messages_per_session")]
    pub max_messages_per_session: u32,
    /// Leave mail on the server and remember which were turned into alerts (by UIDL).
    #[serde(default)]
    pub keep: bool,
    /// Where the mailbox lock and (with `keep`) the seen-UIDL state live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Addresses (`ops@example.com`) or domains (`example.com`, `@example.com`) whose mail becomes
    /// alerts; empty means everyone.
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    /// What to do with mail from other senders: `keep` it on the server (default) or `delete`
    /// it (logged with sender and subject).
    #[serde(default)]
    pub on_disallowed: OnDisallowed,
    /// The `authserv-id` of the operator's own MTA: when set, a mail becomes an alert only if the
    /// topmost `Authentication-Results` header (RFC 8601) of that id shows `dkim=pass`,
    /// `spf=pass` or `dmarc=pass` for the domain of its `From:` address.
    pub trusted_authserv_id: Option<String>,
    /// A mail that fails to be fetched (or to become an alert) this many times is quarantined:
    /// remembered by UIDL, no longer fetched, reported once in a `mail.problem` alert.
    #[serde(default = "default_max_fetch_attempts")]
    pub max_fetch_attempts: u32,
    /// What to do with a quarantined mail once its problem alert is queued: `keep` it on the
    /// server (default) or `delete` it.
    #[serde(default)]
    pub on_quarantine: OnDisallowed,
    /// Larger mail is left on the server with a warning.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How long one read or write may wait.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Further headers copied into labels as `mail.header.<lowercase name>`.
    #[serde(default)]
    pub label_headers: Vec<String>,
}

/// The `auth` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthChoice {
    User,
    Apop,
    Plain,
}

/// The `on_disallowed` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDisallowed {
    #[default]
    Keep,
    Delete,
}

fn default_poll_interval_ms() -> u64 {
    1000
}
/// Large enough that a backlog costs few logins (each makes the server rescan the mailbox),
/// small enough that a crash mid-session re-fetches little (the dedup key makes those
/// duplicates): at the drain rate through the host, 5000 mails are well under a second.
fn default_max_messages_per_session() -> u32 {
    5000
}
fn default_max_fetch_attempts() -> u32 {
    3
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/alertbridge/pop3")
}
fn default_max_message_bytes() -> u64 {
    10 << 20
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_read_timeout_ms() -> u64 {
    30_000
}
fn default_max_backoff_ms() -> u64 {
    60_000
}

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub username: String,
    pub password: Secret,
    pub auth: Option<AuthMethod>,
    pub poll_interval: Duration,
    pub max_messages_per_session: u32,
    pub keep: bool,
    pub state_dir: PathBuf,
    pub senders: SenderFilter,
    pub on_disallowed: OnDisallowed,
    /// The MTA whose `Authentication-Results` must vouch for the sender's domain, if any.
    pub trusted_authserv_id: Option<String>,
    pub max_fetch_attempts: u32,
    pub on_quarantine: OnDisallowed,
    pub max_message_bytes: u64,
    pub max_backoff: Duration,
    pub mail: MailOptions,
    /// `user@host:port`, for logs, dedup keys and state file names.
    pub mailbox: String,
}

impl Pop3Config {
    /// Checks every key and resolves the password and the TLS settings.
    pub fn validate(&self) -> Result<Settings, PluginError> {
        let (host, port) =
            split_server(&self.server, self.tls).map_err(|m| config_error("server", m))?;
        if self.tls == TlsMode::None && !is_loopback(&host) {
            return Err(config_error(
                "tls",
                "`none` is only allowed when `server` is a loopback address",
            ));
        }
        if self.username.is_empty() || self.username.contains(['\r', '\n', ' ', '\0']) {
            return Err(config_error(
                "username",
                "must be non-empty, without spaces or line breaks",
            ));
        }
        let password = resolve_secret(
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        if password.expose().contains(['\r', '\n', '\0']) {
            return Err(config_error(
                "password",
                "must not contain line breaks or NUL bytes",
            ));
        }
        positive("poll_interval_ms", self.poll_interval_ms)?;
        positive(
            "max_messages_per_session",
            u64::from(self.max_messages_per_session),
        )?;
        positive("connect_timeout_ms", self.connect_timeout_ms)?;
        positive("read_timeout_ms", self.read_timeout_ms)?;
        positive("max_backoff_ms", self.max_backoff_ms)?;
        if self.max_message_bytes < 1024 {
            return Err(config_error("max_message_bytes", "must be at least 1024"));
        }
        let senders = SenderFilter::new(&self.allowed_senders)
            .map_err(|m| config_error("allowed_senders", m))?;
        let tls_config = client_config(self.ca_file.as_deref())
            .map_err(|e| config_error("ca_file", error_chain(&e)))?;
        positive("max_fetch_attempts", u64::from(self.max_fetch_attempts))?;
        let trusted_authserv_id = match self.trusted_authserv_id.as_deref().map(str::trim) {
            None => None,
            Some(id) if !id.is_empty() && !id.contains(|c: char| c.is_whitespace() || c == ';') => {
                Some(id.to_ascii_lowercase())
            }
            Some(_) => {
                return Err(config_error(
                    "trusted_authserv_id",
                    "must be one authserv-id (e.g. the MTA's host name), without spaces or `;`",
                ));
            }
        };
        let max = usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX);
        // LIST counts a mail as stored (CRLF lines); on the wire every line starting with `.`
        // gains one more (RFC 1939 §3), so a mail of `.` lines is 4/3 of its size. The reply
        // limit is the wire form of the largest mail allowed, and a little slack. (One long
        // line must not make a mail unreadable either: lines are bounded by the whole reply.)
        let reply_limit = wire_limit(max);
        let limits = Limits {
            multi_line: reply_limit,
            data_line: reply_limit,
            ..Limits::default()
        };
        let endpoint = Endpoint {
            host: host.clone(),
            port,
            tls: self.tls,
            tls_config,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            timeouts: Timeouts {
                io: Duration::from_millis(self.read_timeout_ms),
            },
            limits,
        };
        Ok(Settings {
            endpoint,
            username: self.username.clone(),
            password,
            auth: self.auth.map(|a| match a {
                AuthChoice::User => AuthMethod::User,
                AuthChoice::Apop => AuthMethod::Apop,
                AuthChoice::Plain => AuthMethod::Plain,
            }),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_messages_per_session: self.max_messages_per_session,
            keep: self.keep,
            state_dir: self.state_dir.clone(),
            senders,
            on_disallowed: self.on_disallowed,
            trusted_authserv_id,
            max_fetch_attempts: self.max_fetch_attempts,
            on_quarantine: self.on_quarantine,
            max_message_bytes: self.max_message_bytes,
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            mail: MailOptions {
                label_headers: self.label_headers.clone(),
            },
            mailbox: format!("{}@{host}:{port}", self.username),
        })
    }
}

/// The largest multi-line reply (as sent, dot-stuffed) for a mail of at most `max` bytes: a
/// mail made only of `.` lines is 4/3 of its size on the wire; 64 KiB of slack for servers
/// that count sizes a little differently.
pub fn wire_limit(max: usize) -> usize {
    max.saturating_add(max.div_ceil(3)).saturating_add(64 << 10)
}

fn positive(key: &str, value: u64) -> Result<(), PluginError> {
    if value == 0 {
        Err(config_error(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// `host:port`, `[v6]:port`, or a bare host with the port of the TLS mode.
fn split_server(server: &str, tls: TlsMode) -> Result<(String, u16), String> {
    let default_port = if tls == TlsMode::Implicit { 995 } else { 110 };
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed `[` in the address")?;
        (host, after.strip_prefix(':'))
    } else {
        match server.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return Err("write IPv6 addresses as `[addr]:port`".into()),
            None => (server, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("invalid port {p:?}"))?,
    };
    Ok((host.to_owned(), port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Which senders' mail becomes alerts.
#[derive(Debug, Clone, Default)]
pub struct SenderFilter {
    addresses: Vec<String>,
    domains: Vec<String>,
}

impl SenderFilter {
    fn new(entries: &[String]) -> Result<Self, String> {
        let mut filter = Self::default();
        for entry in entries {
            let e = entry.trim().to_ascii_lowercase();
            match e.split_once('@') {
                Some(("", domain)) if !domain.is_empty() && !domain.contains('@') => {
                    filter.domains.push(domain.to_owned())
                }
                Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
                {
                    filter.addresses.push(e.clone());
                }
                None if !e.is_empty() => filter.domains.push(e),
                _ => return Err(format!("{entry:?} is neither an address nor a domain")),
            }
        }
        Ok(filter)
    }

    /// True if and only if mail from `address` may become an alert (always, with no list).
    pub fn allows(&self, address: Option<&str>) -> bool {
        if self.addresses.is_empty() && self.domains.is_empty() {
            return true;
        }
        let Some(address) = address.map(str::to_ascii_lowercase) else {
            return false;
        };
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        self.addresses.contains(&address) || self.domains.iter().any(|d| d == domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Settings, String> {
        let config: Pop3Config = toml::from_str(toml_text).map_err(|e| e.message().to_owned())?;
        config.validate().map_err(|e| e.to_string())
    }

    const BASE: &str =
        "server = \"127.0.0.1:11110\"\nusername = \"alerts\"\npassword = \"alertpass\"\n";

    #[test]
    fn defaults() {
        let s = parse(BASE).expect("valid");
        assert_eq!(s.endpoint.tls, TlsMode::Implicit);
        assert_eq!(s.poll_interval, Duration::from_secs(1));
        assert_eq!(
            (s.keep, s.on_disallowed, s.auth),
            (false, OnDisallowed::Keep, None)
        );
        assert_eq!(s.mailbox, "alerts@127.0.0.1:11110");
        let s = parse("server = \"mail.example.com\"\nusername = \"a\"\npassword = \"p\"\n")
            .expect("valid");
        assert_eq!(
            (s.endpoint.host.as_str(), s.endpoint.port),
            ("mail.example.com", 995)
        );
        let s =
            parse("server = \"[::1]\"\ntls = \"starttls\"\nusername = \"a\"\npassword = \"p\"\n")
                .expect("valid");
        assert_eq!((s.endpoint.host.as_str(), s.endpoint.port), ("::1", 110));
    }

    #[test]
    fn tls_none_only_on_loopback() {
        assert!(parse(&format!("{BASE}tls = \"none\"\n")).is_ok());
        let e = parse("server = \"mail.example.com:110\"\ntls = \"none\"\nusername = \"a\"\npassword = \"p\"\n").unwrap_err();
        assert_eq!(
            e,
            "`tls`: `none` is only allowed when `server` is a loopback address"
        );
        assert!(
            parse(
                "server = \"10.0.0.1:110\"\ntls = \"none\"\nusername = \"a\"\npassword = \"p\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn exactly_one_password_source() {
        let two = format!("{BASE}password_env = \"X\"\n");
        assert!(
            parse(&two)
                .unwrap_err()
                .starts_with("`password`: set exactly one")
        );
        let none = "server = \"127.0.0.1\"\nusername = \"a\"\n";
        assert!(parse(none).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret\n").expect("write");
        let text = format!(
            "server = \"127.0.0.1\"\nusername = \"a\"\npassword_file = {:?}\n",
            file.display().to_string()
        );
        assert_eq!(parse(&text).expect("valid").password.expose(), "s3cret");
        let missing = "server = \"127.0.0.1\"\nusername = \"a\"\npassword_env = \"ALERTBRIDGE_POP3_TEST_UNSET_VAR\"\n";
        assert!(
            parse(missing)
                .unwrap_err()
                .starts_with("`password_env`: environment variable")
        );
    }

    #[test]
    fn the_password_never_shows() {
        const PLANTED: &str = "Pl4nted-S3cret-7731";
        let s = parse(&format!(
            "server = \"127.0.0.1\"\nusername = \"a\"\npassword = \"{PLANTED}\"\n"
        ))
        .expect("valid");
        assert_eq!(s.password.expose(), PLANTED);
        assert!(
            !format!("{s:?}").contains(PLANTED),
            "Debug shows the password"
        );
        // A number where a string belongs: the error names the key, not the value.
        let e =
            parse("server = \"127.0.0.1\"\nusername = \"a\"\npassword = 77312468\n").unwrap_err();
        assert!(!e.contains("77312468"), "{e}");
        // A line break in the secret (from a file's second line it is cut; inline it is refused).
        let e = parse(&format!(
            "server = \"127.0.0.1\"\nusername = \"a\"\npassword = \"{PLANTED}\\r\\nDELE 1\"\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("`password`: must not") && !e.contains(PLANTED),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(
            parse(&format!("{BASE}pol_interval_ms = 5\n"))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse(&format!("{BASE}auth = \"cram-md5\"\n")).is_err());
        assert!(
            parse(&format!("{BASE}poll_interval_ms = 0\n"))
                .unwrap_err()
                .starts_with("`poll_interval_ms`")
        );
        assert!(
            parse("server = \"h:0\"\nusername = \"a\"\npassword = \"p\"\n")
                .unwrap_err()
                .starts_with("`server`: invalid port")
        );
        assert!(
            parse(&format!("{BASE}ca_file = \"/nonexistent/ca.pem\"\n"))
                .unwrap_err()
                .starts_with("`ca_file`: CA file")
        );
        assert!(parse(&format!("{BASE}allowed_senders = [\"a@@b\"]\n")).is_err());
    }

    #[test]
    fn sender_filter() {
        let f = SenderFilter::new(&[
            "Ops@Example.com".into(),
            "monitoring.example".into(),
            "@corp.test".into(),
        ])
        .expect("valid");
        assert!(f.allows(Some("ops@example.com")) && f.allows(Some("OPS@EXAMPLE.COM")));
        assert!(!f.allows(Some("dev@example.com")));
        assert!(f.allows(Some("nagios@monitoring.example")) && f.allows(Some("x@corp.test")));
        assert!(!f.allows(Some("x@evil.corp.test.example")) && !f.allows(None));
        assert!(SenderFilter::default().allows(None));
    }
}
