//! The admin server's settings (`admin_*` keys of `[host]`): who may use it and how much of
//! the process it may hold.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use alertbridge_plugin_api::kit::{Secret, resolve_secret};

/// The shortest admin token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// How the admin server guards itself. The token and the host names can change on reload;
/// the limits take effect at the next start.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminSettings {
    /// Required for every state-changing request and for alert contents when set; required
    /// when `admin_listen` is not a loopback address.
    pub token: Option<Secret>,
    /// Names the `Host` header may carry besides IP literals and `localhost` (lower case, no
    /// port).
    pub hosts: Vec<String>,
    /// Connections served at once (further ones wait in the kernel's backlog); lowered at
    /// start to [`fd_budget`] of the process's open-file limit.
    pub max_connections: usize,
    /// Time a client has to send a request's head, then again its body; also how long a kept
    /// alive connection may wait for its next request.
    pub read_timeout: Duration,
    /// A connection on which no byte moves either way for this long (and no request is being
    /// handled) is closed: e.g. a client that stopped reading its answer.
    pub idle_timeout: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            token: None,
            hosts: Vec::new(),
            max_connections: 64,
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The `admin_*` keys of `[host]` as written (paths already relative to the config file).
#[derive(Default)]
pub struct AdminKeys {
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub max_connections: Option<usize>,
    pub read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
}

impl AdminSettings {
    /// Checks the keys: the token is read (from its file or variable) and long enough, and one
    /// is set when `admin_listen` is not a loopback address. Each problem comes with the key it
    /// is about; none shows the token.
    pub fn from_keys(k: AdminKeys) -> (Self, Vec<(&'static str, String)>) {
        let d = Self::default();
        let mut problems = Vec::new();
        let token = if k.token_file.is_some() || k.token_env.is_some() {
            match resolve_secret(
                "admin_token",
                None,
                k.token_file.as_deref(),
                k.token_env.as_deref(),
            ) {
                Ok(t) if t.expose().chars().count() < MIN_TOKEN_CHARS => {
                    let key = if k.token_file.is_some() {
                        "admin_token_file"
                    } else {
                        "admin_token_env"
                    };
                    problems.push((
                        key,
                        format!("the token is shorter than {MIN_TOKEN_CHARS} characters"),
                    ));
                    None
                }
                Ok(t) => Some(t),
                Err(e) => {
                    let key = if k.token_file.is_some() {
                        "admin_token_file"
                    } else {
                        "admin_token_env"
                    };
                    let msg = e
                        .message
                        .split_once("`: ")
                        .map_or(e.message.as_str(), |(_, m)| m);
                    problems.push((key, msg.to_owned()));
                    None
                }
            }
        } else {
            None
        };
        if let Some(addr) = k.listen.filter(|a| !is_loopback(a))
            && token.is_none()
        {
            problems.push((
                "admin_listen",
                format!("{addr} is not a loopback address: set admin_token_file or admin_token_env, or the admin API is open to everyone who can reach it"),
            ));
        }
        let hosts = match k.hosts {
            None => d.hosts,
            Some(list) => list
                .iter()
                .filter_map(|h| {
                    host_name(h)
                        .map_err(|e| problems.push(("admin_hosts", e)))
                        .ok()
                })
                .collect(),
        };
        let positive = |problems: &mut Vec<_>, key: &'static str, v: Option<u64>| match v {
            Some(0) => {
                problems.push((key, "must be greater than 0".to_owned()));
                None
            }
            v => v,
        };
        let max_connections = positive(
            &mut problems,
            "admin_max_connections",
            k.max_connections.map(|n| n as u64),
        )
        .map_or(d.max_connections, |n| n as usize);
        let read_timeout = positive(&mut problems, "admin_read_timeout_ms", k.read_timeout_ms)
            .map_or(d.read_timeout, Duration::from_millis);
        let idle_timeout = positive(&mut problems, "admin_idle_timeout_ms", k.idle_timeout_ms)
            .map_or(d.idle_timeout, Duration::from_millis);
        let s = Self {
            token,
            hosts,
            max_connections,
            read_timeout,
            idle_timeout,
        };
        (s, problems)
    }
}

impl AdminSettings {
    /// The limits that take effect only at start are the same.
    pub fn same_limits(&self, other: &Self) -> bool {
        (self.max_connections, self.read_timeout, self.idle_timeout)
            == (
                other.max_connections,
                other.read_timeout,
                other.idle_timeout,
            )
    }
}

/// True if `addr` only takes connections from this machine.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Checks one `admin_hosts` entry: a DNS name (letters, digits, `-`, `.`), no port, no
/// wildcard. Returns it in lower case.
pub fn host_name(name: &str) -> Result<String, String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if lower.is_empty() || lower.len() > 253 || !lower.split('.').all(label_ok) {
        return Err(format!(
            "`{}` is not a host name (letters, digits, `-` and `.`; no port, no wildcard)",
            name.escape_debug()
        ));
    }
    Ok(lower)
}

/// The most connections the admin server may hold given the process's soft limit on open
/// files: an eighth of it, so that sources, sinks and the queue always have descriptors.
pub fn fd_budget(nofile_soft: u64) -> usize {
    usize::try_from(nofile_soft / 8)
        .unwrap_or(usize::MAX)
        .max(4)
}

/// The process's soft limit on open files, from `/proc/self/limits` (1024 if unreadable).
pub fn nofile_soft_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_nofile(&text))
        .unwrap_or(1024)
}

fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked_and_lowered() {
        assert_eq!(
            host_name("Alerts.Example.NET").unwrap(),
            "alerts.example.net"
        );
        assert_eq!(host_name("localhost.").unwrap(), "localhost");
        for bad in ["", "a:80", "*.example", "a..b", "-a.b", "a b", "é.example"] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_checked_without_showing_the_token() {
        let dir = std::env::temp_dir().join(format!("ab-admin-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, "PLANTED-9\n").unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "PLANTED-long-enough-token\n").unwrap();
        let public: SocketAddr = "0.0.0.0:9180".parse().unwrap();

        let (s, problems) = AdminSettings::from_keys(AdminKeys {
            listen: Some(public),
            ..AdminKeys::default()
        });
        assert!(s.token.is_none());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "admin_listen");

        let (_, problems) = AdminSettings::from_keys(AdminKeys {
            listen: Some(public),
            token_file: Some(short),
            hosts: Some(vec!["ok.example".into(), "bad:1".into()]),
            max_connections: Some(0),
            ..AdminKeys::default()
        });
        let keys: Vec<_> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            [
                "admin_token_file",
                "admin_listen",
                "admin_hosts",
                "admin_max_connections"
            ]
        );
        assert!(problems.iter().all(|(_, m)| !m.contains("PLANTED")));

        let (_, problems) = AdminSettings::from_keys(AdminKeys {
            token_env: Some("ALERTBRIDGE_ADMIN_KEYS_TEST_UNSET".into()),
            ..AdminKeys::default()
        });
        assert_eq!(problems[0].0, "admin_token_env");
        assert!(problems[0].1.contains("not set"), "{}", problems[0].1);

        let (s, problems) = AdminSettings::from_keys(AdminKeys {
            listen: Some(public),
            token_file: Some(good),
            hosts: Some(vec!["Alerts.Example.NET".into()]),
            read_timeout_ms: Some(2000),
            ..AdminKeys::default()
        });
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            s.token.as_ref().map(Secret::expose),
            Some("PLANTED-long-enough-token")
        );
        assert_eq!(s.hosts, ["alerts.example.net"]);
        assert_eq!(s.read_timeout, Duration::from_secs(2));
        assert!(!format!("{s:?}").contains("PLANTED"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_fd_budget_is_an_eighth_of_the_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max open files            256                  4096                 files     \n";
        assert_eq!(parse_nofile(text), Some(256));
        assert_eq!(fd_budget(256), 32);
        assert_eq!(fd_budget(10), 4);
        assert!(nofile_soft_limit() > 0);
    }
}
