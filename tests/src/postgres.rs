//! PostgreSQL as the tests of the `postgres` queue backend use it: a database of each test's
//! own in the test server (`scripts/postgres.sh`, found by [`servers::postgres`]), created
//! fresh and dropped at the end, and a server of a test's own for the tests that stop, kill
//! and restart the database under load (so they never disturb the tests sharing the other).
//!
//! SQL goes through `psql`, the client installed with the server: the tests check what the
//! database holds without a client library of their own.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{harness::free_port, servers};

/// `scripts/postgres.sh` of this checkout.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .join("scripts/postgres.sh")
}

/// `psql`: on `PATH` (Debian's wrapper), else in the newest `/usr/lib/postgresql/*/bin`.
fn psql() -> PathBuf {
    servers::on_path(&["psql"]).unwrap_or_else(|_| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin/psql"))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        found.pop().unwrap_or_else(|| PathBuf::from("psql"))
    })
}

/// Runs `sql` on the database at `url`: its rows, one a line, fields split by `|`; or what
/// `psql` said when it failed.
pub fn sql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(psql())
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!(
            "psql failed on `{sql}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `url` with its database replaced by `name` (query parameters kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = rest
        .split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)));
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{name}?{q}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

/// A database of one test's own in the server at `server_url`, dropped (its sessions cut)
/// when the value is; kept, with its name printed, if the test panicked.
pub struct Database {
    /// Its URL, for `[queue] url`.
    pub url: String,
    pub name: String,
    server_url: String,
}

impl Database {
    /// Creates an empty database named after `tag`, this process and a counter.
    pub fn create(server_url: &str, tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
            .to_ascii_lowercase();
        let name = format!(
            "ab_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sql(server_url, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create the test database: {e}"));
        Self {
            url: with_database(server_url, &name),
            name,
            server_url: server_url.to_owned(),
        }
    }

    /// Runs `query` in this database; panics when it fails.
    pub fn sql(&self, query: &str) -> String {
        sql(&self.url, query).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test database {} kept for a look: {}", self.name, self.url);
            return;
        }
        let _ = sql(
            &self.server_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A PostgreSQL of one test's own (`scripts/postgres.sh` in a folder of the test, on a free
/// port), stopped when the value is dropped.
pub struct Server {
    /// The URL of its `alertbridge` database.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl Server {
    /// Initializes and starts a server in `dir`. `fsync` off spares a busy machine's disk (a
    /// killed server still keeps every commit: see `scripts/postgres.sh`).
    pub fn start(dir: &Path, fsync: bool) -> Self {
        let mut server = Self {
            url: String::new(),
            dir: dir.to_owned(),
            port: free_port(),
        };
        std::fs::create_dir_all(dir).expect("create the server's folder");
        let fsync = if fsync { "on" } else { "off" };
        let run = |cmd: &str| {
            let out = server
                .command(cmd)
                .env("ALERTBRIDGE_TEST_POSTGRES_FSYNC", fsync)
                .output();
            out.map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                )
            })
        };
        match run("start") {
            Ok((true, _)) => {}
            Ok((false, _)) | Err(_) => panic!("{}", server.failed("start")),
        }
        let env = match run("env") {
            Ok((true, text)) => text,
            _ => panic!("{}", server.failed("env")),
        };
        let url = env
            .lines()
            .find_map(|l| l.strip_prefix("export ALERTBRIDGE_TEST_POSTGRES_URL="))
            .expect("scripts/postgres.sh env prints the URL")
            .to_owned();
        server.url = url;
        server
    }

    fn command(&self, cmd: &str) -> Command {
        let mut c = Command::new(script());
        c.arg(cmd)
            .arg(&self.dir)
            .env("ALERTBRIDGE_TEST_POSTGRES_PORT", self.port.to_string())
            .stdin(Stdio::null());
        c
    }

    fn failed(&self, cmd: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join("log/postgres.log")).unwrap_or_default();
        format!("scripts/postgres.sh {cmd} failed; its log:\n{log}")
    }

    fn ctl(&self, cmd: &str) {
        let out = self.command(cmd).output().expect("run scripts/postgres.sh");
        assert!(
            out.status.success(),
            "{}\n{}",
            self.failed(cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `host:port` it listens on.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The postmaster's process id while it runs (its first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Fast shutdown: sessions are cut, commits kept; waits until the port is closed.
    pub fn stop(&self) {
        self.ctl("stop");
    }

    /// Starts it again on the same data and port.
    pub fn start_again(&self) {
        self.ctl("start");
    }

    /// SIGKILL to the server and its backends: a crash (the next start replays the WAL).
    pub fn kill(&self) {
        self.ctl("kill");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.command("stop").output();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_swaps_only_the_database() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:15432/alertbridge", "ab_x_1"),
            "postgres://u:p@127.0.0.1:15432/ab_x_1"
        );
        assert_eq!(
            with_database("postgresql://u@h:1/db?sslmode=disable", "t"),
            "postgresql://u@h:1/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t"), "postgres://h/t");
    }
}
