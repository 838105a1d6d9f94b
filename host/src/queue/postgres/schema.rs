//! The PostgreSQL queue's schema: versioned migrations applied at start (each in its own
//! transaction, under an advisory lock so that hosts starting together apply it once), and the
//! schema state `alertbridge check` reports.
//!
//! ```text
//! ab_schema   version → name, applied_at: one row per migration applied
//! ab_alerts   id → source, accepted_ms, finished, owner (node), lease_until, doc (JSON StoredAlert)
//! ab_dedup    (source, dedup_key) → alert_id, accepted_ms: one alert per key within the window
//! ab_alert_ids  the sequence alert ids come from, shared by every host
//! ```

use std::fmt;

use tokio_postgres::Client;

use super::PgError;

/// The migrations, in order; a migration is never changed once released, only added to.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "alerts, dedup keys and leases",
        "
CREATE SEQUENCE ab_alert_ids;
CREATE TABLE ab_alerts (
    id          bigint PRIMARY KEY,
    source      text NOT NULL,
    accepted_ms bigint NOT NULL,
    finished    boolean NOT NULL DEFAULT false,
    owner       text NOT NULL,
    lease_until timestamptz NOT NULL,
    doc         text NOT NULL
);
CREATE INDEX ab_alerts_lease ON ab_alerts (lease_until) WHERE NOT finished;
CREATE INDEX ab_alerts_owner ON ab_alerts (owner) WHERE NOT finished;
CREATE INDEX ab_alerts_done ON ab_alerts (id) WHERE finished;
CREATE TABLE ab_dedup (
    source      text NOT NULL,
    dedup_key   text NOT NULL,
    alert_id    bigint NOT NULL,
    accepted_ms bigint NOT NULL,
    PRIMARY KEY (source, dedup_key)
);
CREATE INDEX ab_dedup_age ON ab_dedup (accepted_ms);
",
    ),
    (
        2,
        "incidents",
        "
CREATE SEQUENCE ab_incident_ids;
CREATE TABLE ab_incidents (
    id          bigint PRIMARY KEY,
    version     bigint NOT NULL,
    resolved    boolean NOT NULL,
    dedup_key   text,
    first_alert bigint NOT NULL,
    opened_ms   bigint NOT NULL,
    doc         text NOT NULL
);
CREATE UNIQUE INDEX ab_incidents_open_key ON ab_incidents (dedup_key) WHERE NOT resolved;
CREATE INDEX ab_incidents_open ON ab_incidents (id) WHERE NOT resolved;
CREATE INDEX ab_incidents_first_alert ON ab_incidents (first_alert);
CREATE TABLE ab_early_resolves (
    dedup_key text PRIMARY KEY,
    doc       text NOT NULL
);
",
    ),
    (
        3,
        "silences",
        "
CREATE SEQUENCE ab_silence_ids;
CREATE TABLE ab_silences (
    id         bigint PRIMARY KEY,
    doc        text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
",
    ),
];

/// The advisory lock key migrations run under ("alertbri" in ASCII).
const LOCK_KEY: i64 = 0x616c_6572_7462_7269;

/// The schema version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Where a database's schema stands relative to this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemaState {
    /// The newest migration applied (0: none, an empty database).
    pub current: i32,
    /// The newest migration this build knows.
    pub latest: i32,
}

impl SchemaState {
    /// True if the database was migrated by a newer build: this one refuses to use it.
    pub fn is_newer(&self) -> bool {
        self.current > self.latest
    }
}

impl fmt::Display for SchemaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.current.cmp(&self.latest) {
            std::cmp::Ordering::Equal => write!(f, "current (version {})", self.current),
            std::cmp::Ordering::Less if self.current == 0 => write!(
                f,
                "empty: the start would create it (version {})",
                self.latest
            ),
            std::cmp::Ordering::Less => write!(
                f,
                "would migrate from version {} to {} at the start",
                self.current, self.latest
            ),
            std::cmp::Ordering::Greater => write!(
                f,
                "version {} is newer than this alertbridge knows ({}): upgrade alertbridge",
                self.current, self.latest
            ),
        }
    }
}

/// The schema state, read only.
pub async fn state(client: &Client) -> Result<SchemaState, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('ab_schema') IS NOT NULL", &[])
        .await
        .map_err(PgError::query("read the schema version"))?
        .get(0);
    let current = if exists {
        client
            .query_one("SELECT coalesce(max(version), 0) FROM ab_schema", &[])
            .await
            .map_err(PgError::query("read the schema version"))?
            .get(0)
    } else {
        0
    };
    Ok(SchemaState {
        current,
        latest: latest(),
    })
}

/// Applies every migration not yet applied; returns the state after. Refuses a database a
/// newer build migrated.
pub async fn migrate(client: &mut Client) -> Result<SchemaState, PgError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ab_schema (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .or_else(|e| {
            // Two hosts creating it at once: one of them sees the other's row in the catalog.
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(PgError::query("create the schema version table"))?;
    for (version, name, sql) in MIGRATIONS {
        let txn = client
            .transaction()
            .await
            .map_err(PgError::query("begin a migration"))?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(PgError::query("lock the schema"))?;
        let current: i32 = txn
            .query_one("SELECT coalesce(max(version), 0) FROM ab_schema", &[])
            .await
            .map_err(PgError::query("read the schema version"))?
            .get(0);
        if current > latest() {
            return Err(PgError::NewerSchema {
                found: current,
                known: latest(),
            });
        }
        if current >= *version {
            continue;
        }
        txn.batch_execute(sql)
            .await
            .map_err(PgError::query("apply a migration"))?;
        txn.execute(
            "INSERT INTO ab_schema (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(PgError::query("record a migration"))?;
        txn.commit()
            .await
            .map_err(PgError::query("commit a migration"))?;
        tracing::info!(version, name, "Queue schema migrated.");
    }
    let s = state(client).await?;
    if s.is_newer() {
        return Err(PgError::NewerSchema {
            found: s.current,
            known: s.latest,
        });
    }
    Ok(s)
}
