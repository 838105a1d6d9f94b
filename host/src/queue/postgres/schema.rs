//! The PostgreSQL queue's schema: versioned migrations applied at start by refinery (each in
//! its own transaction, checksums checked, under an advisory lock so that hosts starting
//! together apply them once), and the schema state `alertbridge check` reports.
//!
//! ```text
//! ab_schema_history   refinery's: version → name, applied_on, checksum
//! ab_alerts   id → source, accepted_ms, finished, owner (node), lease_until, doc (JSON StoredAlert)
//! ab_dedup    (source, dedup_key) → alert_id, accepted_ms: one alert per key within the window
//! ab_alert_ids  the sequence alert ids come from, shared by every host
//! ```

use std::fmt;

use tokio_postgres::Client;

use super::PgError;

/// The migrations, in order, as `(version, name, SQL)` (a name is one word: refinery's
/// `V{version}__{name}`); a migration is never changed once released, only added to
/// (refinery refuses a database whose applied migration's checksum differs).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "alerts_dedup_keys_and_leases",
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
    (
        4,
        "alerts_room_for_hot_updates",
        "
-- Room in each page for an alert's next versions: a save that changes no indexed column (a
-- `sending` mark, an outcome that does not finish the alert) is then a HOT update, written
-- beside the old row with no new index entry. Pages written from now on; none is rewritten.
ALTER TABLE ab_alerts SET (fillfactor = 50);
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

/// The table refinery records applied migrations in.
const HISTORY: &str = "ab_schema_history";

/// The schema state, read only.
pub async fn state(client: &Client) -> Result<SchemaState, PgError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('ab_schema_history') IS NOT NULL", &[])
        .await
        .map_err(PgError::query("read the schema version"))?
        .get(0);
    let current = if exists {
        client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM ab_schema_history",
                &[],
            )
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
/// newer build migrated, or one whose applied migrations differ from this build's.
pub async fn migrate(client: &mut Client) -> Result<SchemaState, PgError> {
    // A session lock around the whole run: hosts starting together migrate one after another
    // (the second finds nothing to do).
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(PgError::query("lock the schema"))?;
    let ran = run(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(PgError::query("unlock the schema"));
    let state = ran?;
    unlocked?;
    Ok(state)
}

async fn run(client: &mut Client) -> Result<SchemaState, PgError> {
    let before = state(client).await?;
    if before.is_newer() {
        return Err(PgError::NewerSchema {
            found: before.current,
            known: before.latest,
        });
    }
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, name, sql)| {
            refinery::Migration::unapplied(&format!("V{version}__{name}"), sql)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PgError::Migrate(Box::new(e)))?;
    let mut runner = refinery::Runner::new(&migrations);
    runner.set_migration_table_name(HISTORY);
    let report = runner.run_async(client).await.map_err(|e| {
        use refinery::error::Kind;
        match e.kind() {
            Kind::DivergentVersion(..) | Kind::MissingVersion(_) => PgError::Diverged(Box::new(e)),
            _ => PgError::Migrate(Box::new(e)),
        }
    })?;
    for m in report.applied_migrations() {
        tracing::info!(
            version = m.version(),
            name = m.name(),
            "Queue schema migrated."
        );
    }
    state(client).await
}
