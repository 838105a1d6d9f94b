//! `[queue]`: where the durable queue lives — embedded (redb, in `data_dir`, the default; or the
//! segment log, `backend = "log"`) or shared by several hosts in PostgreSQL — and this host's
//! name and lease among those sharing it.

use std::{path::Path, path::PathBuf, sync::Arc, time::Duration};

use alertbridge_plugin_api::kit::{Secret, resolve_secret};
use serde::Deserialize;
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use super::{error::Collector, raw::deserialize, settings::HostSettings};
use crate::{
    metrics::Metrics,
    queue::{LogQueue, OnCommit, PgQueue, PgSettings, Queue, QueueError, QueueOptions, RedbQueue},
};

/// The default lease: how long a host's claim on delivery work lasts without renewal.
pub const DEFAULT_LEASE_MS: u64 = 10_000;
const MIN_LEASE_MS: u64 = 100;
const MAX_LEASE_MS: u64 = 3_600_000;
/// The longest node name (a DNS label's length).
const MAX_NODE_CHARS: usize = 63;

/// Which queue backend, with its settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum QueueBackend {
    /// The embedded queue file in `data_dir` (one host).
    #[default]
    Redb,
    /// The embedded segment log in `data_dir/queue-log` (one host; see `queue::LogQueue`).
    Log,
    /// One PostgreSQL database shared by every host.
    Postgres(PgSettings),
}

impl QueueBackend {
    /// The queue options `[host]` sets (dedup window and bound, history size).
    pub fn options(h: &HostSettings) -> QueueOptions {
        QueueOptions {
            dedup_window: h.dedup_window,
            dedup_max_keys: h.dedup_max_keys,
            history_max_alerts: h.history_max_alerts,
            accept_empty_queue: h.accept_empty_queue,
            ..QueueOptions::default()
        }
    }

    /// Opens this backend's queue with the options of `[host]`.
    pub fn open(
        &self,
        h: &HostSettings,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Arc<dyn Queue>, QueueError> {
        let options = Self::options(h);
        Ok(match self {
            Self::Redb => Arc::new(RedbQueue::open_with(
                &h.data_dir,
                &options,
                metrics,
                on_commit,
            )?),
            Self::Log => Arc::new(LogQueue::open_with(
                &h.data_dir,
                &options,
                metrics,
                on_commit,
            )?),
            Self::Postgres(pg) => {
                // The data folder still holds this host's other state (incidents): made as the
                // embedded queue would make it, private.
                private_dir(&h.data_dir)?;
                Arc::new(PgQueue::open(pg.clone(), &options, metrics, on_commit)?)
            }
        })
    }

    /// For `alertbridge check`: with PostgreSQL, connects (changing nothing) and says where
    /// the schema stands — `Ok` with the line to show, `Err` with the one-line reason the
    /// database cannot be used (unreachable, refused, newer schema). `None` for redb.
    pub fn schema_report(&self) -> Option<Result<String, String>> {
        let Self::Postgres(pg) = self else {
            return None;
        };
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return Some(Err(format!("[queue] cannot start a runtime: {e}"))),
        };
        let state = runtime.block_on(crate::queue::postgres::schema_state(&pg.url));
        Some(match state {
            Ok(s) if s.is_newer() => Err(format!("[queue] PostgreSQL schema: {s}")),
            Ok(s) => Ok(format!(
                "queue: postgres (node {}, lease {} ms), schema {s}",
                pg.node,
                pg.lease.as_millis()
            )),
            Err(e) => Err(format!(
                "[queue] PostgreSQL unreachable: {}",
                crate::error_chain(&e)
            )),
        })
    }

    /// The backend's name as written in `[queue] backend`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Log => "log",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// Creates `dir` if missing and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), QueueError> {
    use std::os::unix::fs::PermissionsExt as _;
    let file = |source| QueueError::File {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(file)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(file)
}

/// `[queue]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub backend: Option<Spanned<String>>,
    pub url: Option<Secret>,
    pub url_file: Option<PathBuf>,
    pub url_env: Option<String>,
    pub node: Option<Spanned<String>>,
    pub lease_ms: Option<Spanned<u64>>,
}

/// Reads and checks `[queue]`; relative `url_file` paths are anchored at `base`.
pub(super) fn queue_backend(c: &mut Collector<'_>, root: &Table, base: &Path) -> QueueBackend {
    let Some(item) = root.get("queue") else {
        return QueueBackend::Redb;
    };
    let Some(raw) = deserialize::<RawQueue>(c, item, "[queue]") else {
        return QueueBackend::Redb;
    };
    let span_of = |key: &str| item.get(key).and_then(Item::span).or_else(|| item.span());
    let embedded = match &raw.backend {
        None => Some(QueueBackend::Redb),
        Some(b) => match b.get_ref().as_str() {
            "redb" => Some(QueueBackend::Redb),
            "log" => Some(QueueBackend::Log),
            "postgres" => None,
            other => {
                c.at(
                    Some(b.span()),
                    format!("[queue] backend: `{other}` is not `redb`, `log` or `postgres`"),
                );
                return QueueBackend::Redb;
            }
        },
    };
    if let Some(embedded) = embedded {
        for key in ["url", "url_file", "url_env", "node", "lease_ms"] {
            if item.get(key).is_some() {
                c.at(
                    span_of(key),
                    format!("[queue] {key}: only for backend = \"postgres\""),
                );
            }
        }
        return embedded;
    }
    let url = match resolve_secret(
        "url",
        raw.url.as_ref(),
        raw.url_file.map(|f| base.join(f)).as_deref(),
        raw.url_env.as_deref(),
    ) {
        Ok(url) => url,
        Err(e) => {
            let key = e.key.clone().unwrap_or_else(|| "url".into());
            let msg = e
                .message
                .split_once("`: ")
                .map_or(e.message.as_str(), |(_, m)| m);
            let at = ["url", "url_file", "url_env"]
                .into_iter()
                .find(|k| item.get(k).is_some())
                .map_or_else(|| item.span(), span_of);
            c.at(at, format!("[queue] {key}: {msg}"));
            Secret::new("")
        }
    };
    if !url.is_empty() && url.expose().parse::<tokio_postgres::Config>().is_err() {
        // The parser's message may quote part of the URL (a password): not shown.
        let key = ["url", "url_file", "url_env"]
            .into_iter()
            .find(|k| item.get(k).is_some())
            .unwrap_or("url");
        c.at(
            span_of(key),
            format!("[queue] {key}: not a PostgreSQL connection string (postgres://user@host:port/database or \"host=... dbname=...\"; the value is not shown)"),
        );
    }
    let node = match raw.node {
        Some(n) => {
            if let Err(why) = check_node(n.get_ref()) {
                c.at(Some(n.span()), format!("[queue] node: {why}"));
            }
            n.into_inner()
        }
        None => default_node(),
    };
    let lease_ms = match raw.lease_ms {
        Some(l) if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(l.get_ref()) => {
            c.at(
                Some(l.span()),
                format!("[queue] lease_ms: must be between {MIN_LEASE_MS} and {MAX_LEASE_MS}"),
            );
            DEFAULT_LEASE_MS
        }
        Some(l) => l.into_inner(),
        None => DEFAULT_LEASE_MS,
    };
    QueueBackend::Postgres(PgSettings {
        url,
        node,
        lease: Duration::from_millis(lease_ms),
    })
}

/// A node name: 1 to 63 letters, digits, `.`, `-` or `_`.
fn check_node(node: &str) -> Result<(), String> {
    if node.is_empty() || node.chars().count() > MAX_NODE_CHARS {
        return Err(format!("must be 1 to {MAX_NODE_CHARS} characters"));
    }
    if !node
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
    {
        return Err("only letters, digits, `.`, `-` and `_`".into());
    }
    Ok(())
}

/// This machine's host name, the default node name.
fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| check_node(h).is_ok())
        .unwrap_or_else(|| "alertbridge".into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[host]\ndata_dir = \"/tmp/x\"\n";

    fn parse(queue: &str) -> Result<QueueBackend, Vec<String>> {
        Config::parse(Path::new("/etc/ab/t.toml"), &format!("{BASE}{queue}"))
            .map(|c| c.queue)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn redb_is_the_default_and_takes_no_postgres_keys() {
        assert_eq!(parse(""), Ok(QueueBackend::Redb));
        assert_eq!(
            parse("[queue]\nbackend = \"redb\"\n"),
            Ok(QueueBackend::Redb)
        );
        assert_eq!(
            parse("[queue]\nurl = \"postgres://a@b/c\"\n"),
            Err(vec![
                "/etc/ab/t.toml:4:7: [queue] url: only for backend = \"postgres\"".to_owned()
            ])
        );
        assert_eq!(
            parse("[queue]\nbackend = \"mysql\"\n"),
            Err(vec![
                "/etc/ab/t.toml:4:11: [queue] backend: `mysql` is not `redb`, `log` or `postgres`"
                    .to_owned()
            ])
        );
        assert_eq!(parse("[queue]\nbackend = \"log\"\n"), Ok(QueueBackend::Log));
        assert!(
            parse("[queue]\nbackend = \"log\"\nnode = \"a\"\n")
                .is_err_and(|e| e[0].contains("only for backend = \"postgres\""))
        );
    }

    #[test]
    fn postgres_takes_exactly_one_url_and_never_shows_it() {
        let Ok(QueueBackend::Postgres(s)) = parse(
            "[queue]\nbackend = \"postgres\"\nurl = \"postgres://ab:s3cret@db:5432/ab\"\nnode = \"ab1\"\nlease_ms = 500\n",
        ) else {
            panic!("parses")
        };
        assert_eq!(s.url.expose(), "postgres://ab:s3cret@db:5432/ab");
        assert_eq!(
            (s.node.as_str(), s.lease),
            ("ab1", Duration::from_millis(500))
        );
        assert!(!format!("{s:?}").contains("s3cret"), "{s:?}");

        let both =
            parse("[queue]\nbackend = \"postgres\"\nurl = \"postgres://a@b/c\"\nurl_env = \"X\"\n")
                .unwrap_err();
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(
            both[0].contains("set exactly one of `url`, `url_file` and `url_env`"),
            "{both:?}"
        );

        let none = parse("[queue]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(none[0].contains("set exactly one of"), "{none:?}");

        let bad =
            parse("[queue]\nbackend = \"postgres\"\nurl = \"postgres://u:pw@h:notaport/d\"\n")
                .unwrap_err();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("[queue] url: not a PostgreSQL connection string"),
            "{bad:?}"
        );
        assert!(!bad[0].contains("pw"), "{bad:?}");
    }

    #[test]
    fn the_url_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg.url"), "postgres://ab@db/ab\nignored\n").unwrap();
        let text = format!("{BASE}[queue]\nbackend = \"postgres\"\nurl_file = \"pg.url\"\n");
        let c = Config::parse(&dir.path().join("t.toml"), &text).unwrap();
        let QueueBackend::Postgres(s) = c.queue else {
            panic!("postgres")
        };
        assert_eq!(s.url.expose(), "postgres://ab@db/ab");
        assert_eq!(s.lease, Duration::from_millis(DEFAULT_LEASE_MS));
        assert!(!s.node.is_empty());

        let missing = parse(
            "[queue]\nbackend = \"postgres\"\nurl_env = \"ALERTBRIDGE_QUEUE_TEST_UNSET_VAR\"\n",
        )
        .unwrap_err();
        assert!(missing[0].contains("[queue] url_env:"), "{missing:?}");
    }

    #[test]
    fn node_and_lease_are_bounded() {
        let e = parse(
            "[queue]\nbackend = \"postgres\"\nurl = \"postgres://a@b/c\"\nnode = \"a b\"\nlease_ms = 5\n",
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "/etc/ab/t.toml:6:8: [queue] node: only letters, digits, `.`, `-` and `_`",
                "/etc/ab/t.toml:7:12: [queue] lease_ms: must be between 100 and 3600000"
            ]
        );
    }

    #[test]
    fn check_reports_the_schema_state_or_why_the_database_cannot_be_used() {
        let pg = |url: &str| {
            QueueBackend::Postgres(PgSettings {
                url: Secret::new(url),
                node: "ab1".into(),
                lease: Duration::from_millis(DEFAULT_LEASE_MS),
            })
        };
        assert_eq!(QueueBackend::Redb.schema_report(), None);
        // Nothing listens on port 9 of loopback: one line, no password.
        let down = pg("postgres://ab:s3cret@127.0.0.1:9/ab?connect_timeout=2")
            .schema_report()
            .unwrap()
            .unwrap_err();
        assert!(
            down.starts_with("[queue] PostgreSQL unreachable: cannot connect to PostgreSQL"),
            "{down}"
        );
        assert!(!down.contains('\n') && !down.contains("s3cret"), "{down}");
        let Some(db) = crate::queue::postgres::tests::TestDb::new() else {
            return;
        };
        let backend = pg(db.url.expose());
        assert_eq!(
            backend.schema_report(),
            Some(Ok(format!(
                "queue: postgres (node ab1, lease 10000 ms), schema empty: the start would create it (version {})",
                crate::queue::postgres::schema::latest()
            )))
        );
        let QueueBackend::Postgres(settings) = &backend else {
            unreachable!()
        };
        drop(
            crate::queue::PgQueue::open(
                settings.clone(),
                &crate::queue::QueueOptions::default(),
                Arc::default(),
                Box::new(drop),
            )
            .unwrap(),
        );
        let current = backend.schema_report().unwrap().unwrap();
        let want = format!(
            "schema current (version {})",
            crate::queue::postgres::schema::latest()
        );
        assert!(current.ends_with(&want), "{current}");
    }
}
