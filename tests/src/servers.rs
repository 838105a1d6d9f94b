//! Live servers a few end-to-end tests need (Dovecot, Prometheus Alertmanager, PostgreSQL,
//! Chromium): whether one is there, and what a test does when it is not.
//!
//! Without the server a test *skips*: it returns at once after writing one line to the
//! terminal saying what to start, so a newcomer's `cargo test --workspace` passes on a machine
//! with none of them. `scripts/test` starts every server and sets
//! `ALERTBRIDGE_REQUIRE_SERVERS=1`, under which a missing server *fails* the test instead: CI can
//! never pass by skipping.
//!
//! Detection reads what the tests themselves use (the `ALERTBRIDGE_TEST_*` variables that
//! `scripts/dovecot.sh env` / `scripts/alertmanager.sh env` / `scripts/postgres.sh env` print,
//! the installed programs), and
//! a server counts as there only if its port answers: a variable left over from a stopped
//! server is a skip, not a test that hangs or fails on a refused connection.

use std::{
    io::Write as _,
    net::{TcpStream, ToSocketAddrs as _},
    path::{Path, PathBuf},
    time::Duration,
};

/// Set (to anything but `0` or empty) by `scripts/test`: a missing server fails the test.
pub const REQUIRE_VAR: &str = "ALERTBRIDGE_REQUIRE_SERVERS";

/// How to start the test Dovecot.
pub const DOVECOT_HINT: &str = "run scripts/test, or `scripts/dovecot.sh start DIR` and eval \
     \"$(scripts/dovecot.sh env DIR)\"";

/// Where the test PostgreSQL is: `postgres://alertbridge:alertbridge@127.0.0.1:15432/alertbridge`
/// as `scripts/postgres.sh env` prints it (its role may create databases).
pub const POSTGRES_VAR: &str = "ALERTBRIDGE_TEST_POSTGRES_URL";

/// How to start the test PostgreSQL.
pub const POSTGRES_HINT: &str = "run scripts/test, or `scripts/postgres.sh start DIR` and eval \
     \"$(scripts/postgres.sh env DIR)\"";

/// Whether `value` (of [`REQUIRE_VAR`]) asks for every server.
pub fn requires(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

/// Whether this run asks for every server ([`REQUIRE_VAR`]).
pub fn required() -> bool {
    requires(std::env::var(REQUIRE_VAR).ok().as_deref())
}

/// The line a skipped test prints: `skipped <test>: no <server> (<why>) — <hint>`.
pub fn skip_line(test: &str, server: &str, why: &str, hint: &str) -> String {
    format!("skipped {test}: no {server} ({why}) — {hint}")
}

/// A server the test needs is not there: under [`REQUIRE_VAR`] this panics (the test fails
/// with the reason); otherwise it writes one line to the terminal and the caller returns.
///
/// The line goes straight to the process's stderr, past the test harness's capture, so
/// `cargo test` shows it even though the test passes.
pub fn absent(server: &str, why: &str, hint: &str) {
    let test = std::thread::current()
        .name()
        .map_or_else(|| "a test".to_owned(), str::to_owned);
    assert!(
        !required(),
        "{server} is required ({REQUIRE_VAR} is set) but {why}: {hint}"
    );
    // One write of the whole line, so lines of tests running side by side do not interleave.
    let line = format!("{}\n", skip_line(&test, server, why, hint));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether something accepts a TCP connection at `addr` (`host:port`) within two seconds.
pub fn answers(addr: &str) -> bool {
    let Ok(addrs) = addr.to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// `host:port` of an `http://host:port[/...]` URL (or the text itself when it has no scheme).
pub fn host_port(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// The value of the variable `name` from `lookup`, or why there is none.
pub fn var(lookup: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String, String> {
    match lookup(name) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("{name} is not set")),
    }
}

/// The first of `candidates` that is a file, or why none is.
pub fn program(candidates: &[&str]) -> Result<PathBuf, String> {
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_owned)
        .ok_or_else(|| format!("none of {} exists", candidates.join(", ")))
}

/// A program found on `PATH` under one of `names`, or why none is.
pub fn on_path(names: &[&str]) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|n| std::env::split_paths(&path).map(move |d| d.join(n)))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{} is not on PATH", names.join(" / ")))
}

/// Chromium and its WebDriver (`chromium`, `chromium-driver`): their paths, if both are
/// installed; else [`absent`] was called and the test should return.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let found =
        program(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]).and_then(|driver| {
            program(&["/usr/bin/chromium", "/usr/lib/chromium/chromium"]).map(|b| (driver, b))
        });
    found
        .map_err(|why| {
            absent(
                "Chromium",
                &why,
                "run scripts/test, or install the Debian packages chromium and chromium-driver",
            )
        })
        .ok()
}

/// `prometheus-alertmanager` on `PATH` (the tests that start their own instance); else
/// [`absent`] was called and the test should return.
pub fn alertmanager_program() -> Option<PathBuf> {
    on_path(&["prometheus-alertmanager", "alertmanager"])
        .map_err(|why| {
            absent(
                "Alertmanager",
                &why,
                "run scripts/test, or install the Debian package prometheus-alertmanager",
            )
        })
        .ok()
}

/// `host:port` of a `postgres://[user[:password]@]host[:port][/db][?params]` URL (port 5432
/// when it names none), or `None` if it is not such a URL.
pub fn postgres_addr(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if hostport.is_empty() {
        return None;
    }
    // `[::1]:5432`, `[::1]`, `host:5432`, `host`.
    let has_port = match hostport.rsplit_once(':') {
        Some((h, p)) => {
            (!h.contains(':') || h.ends_with(']')) && p.chars().all(|c| c.is_ascii_digit())
        }
        None => false,
    };
    Some(if has_port {
        hostport.to_owned()
    } else {
        format!("{hostport}:5432")
    })
}

/// [`postgres`] over the variables `lookup` gives: the URL, or why there is none.
pub fn detect_postgres(lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let url = var(lookup, POSTGRES_VAR)?;
    let addr = postgres_addr(&url)
        .ok_or_else(|| format!("{POSTGRES_VAR}={url} is not a postgres:// URL"))?;
    if !answers(&addr) {
        return Err(format!("nothing answers at {addr} ({POSTGRES_VAR})"));
    }
    Ok(url)
}

/// The test PostgreSQL's URL ([`POSTGRES_VAR`]) if it is set and the server answers; else
/// [`absent`] was called and the test should return. Use as
/// `let Some(url) = servers::postgres() else { return };`.
pub fn postgres() -> Option<String> {
    detect_postgres(&|name| std::env::var(name).ok())
        .map_err(|why| absent("PostgreSQL", &why, POSTGRES_HINT))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_set_nonzero_value_requires_servers() {
        assert!(!requires(None));
        assert!(!requires(Some("")));
        assert!(!requires(Some("0")));
        assert!(requires(Some("1")));
        assert!(requires(Some("yes")));
    }

    #[test]
    fn a_dead_port_does_not_answer_and_a_listening_one_does() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = l.local_addr().unwrap().to_string();
        assert!(answers(&live));
        drop(l);
        assert!(!answers(&live), "{live} was closed");
        assert!(!answers("not an address"));
    }

    #[test]
    fn the_skip_line_is_one_line_naming_what_to_start() {
        let line = skip_line(
            "pop3_host::x",
            "Dovecot",
            "ALERTBRIDGE_TEST_POP3_ADDR is not set",
            DOVECOT_HINT,
        );
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.starts_with("skipped pop3_host::x: no Dovecot"),
            "{line}"
        );
        assert!(
            line.contains("scripts/test") && line.contains("scripts/dovecot.sh start DIR"),
            "{line}"
        );
    }

    #[test]
    fn host_port_strips_scheme_and_path() {
        assert_eq!(host_port("http://127.0.0.1:19093"), "127.0.0.1:19093");
        assert_eq!(
            host_port("http://127.0.0.1:19093/api/v2"),
            "127.0.0.1:19093"
        );
        assert_eq!(host_port("127.0.0.1:11110"), "127.0.0.1:11110");
    }

    #[test]
    fn postgres_addr_finds_host_and_port_past_credentials_and_database() {
        let cases = [
            (
                "postgres://alertbridge:alertbridge@127.0.0.1:15432/alertbridge",
                Some("127.0.0.1:15432"),
            ),
            (
                "postgresql://u@db.example:6543/x?sslmode=disable",
                Some("db.example:6543"),
            ),
            ("postgres://u:p@w@127.0.0.1:1/db", Some("127.0.0.1:1")),
            ("postgres://127.0.0.1/db", Some("127.0.0.1:5432")),
            ("postgres://db.example", Some("db.example:5432")),
            ("postgres://[::1]:15432/db", Some("[::1]:15432")),
            ("postgres://[::1]/db", Some("[::1]:5432")),
            ("postgres:///db", None),
            ("http://127.0.0.1:15432", None),
            ("127.0.0.1:15432", None),
        ];
        for (url, want) in cases {
            assert_eq!(postgres_addr(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn postgres_is_absent_when_unset_not_a_url_or_not_answering() {
        let env = |url: &'static str| move |n: &str| (n == POSTGRES_VAR).then(|| url.to_owned());
        assert_eq!(
            detect_postgres(&|_| None),
            Err(format!("{POSTGRES_VAR} is not set"))
        );
        let why = detect_postgres(&env("mysql://x")).unwrap_err();
        assert!(why.contains("not a postgres:// URL"), "{why}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let dead = format!("postgres://u:p@127.0.0.1:{port}/db");
        let why =
            detect_postgres(&|n: &str| (n == POSTGRES_VAR).then(|| dead.clone())).unwrap_err();
        assert!(why.contains("nothing answers"), "{why}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = format!("postgres://u:p@{}/db", l.local_addr().unwrap());
        assert_eq!(
            detect_postgres(&|n: &str| (n == POSTGRES_VAR).then(|| live.clone())),
            Ok(live.clone())
        );
    }

    #[test]
    fn a_variable_that_is_unset_or_blank_is_missing() {
        let env = |n: &str| match n {
            "SET" => Some("x".to_owned()),
            "BLANK" => Some(" ".to_owned()),
            _ => None,
        };
        assert_eq!(var(&env, "SET"), Ok("x".to_owned()));
        assert_eq!(var(&env, "BLANK"), Err("BLANK is not set".to_owned()));
        assert_eq!(var(&env, "UNSET"), Err("UNSET is not set".to_owned()));
    }
}
