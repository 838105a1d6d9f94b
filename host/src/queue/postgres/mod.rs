//! The shared queue on PostgreSQL: several hosts, one state. Each host accepts alerts and
//! commits them before their receipt; delivery work is claimed with leases.
//!
//! - Enqueues and saves go to one writer task ([`writer`]) that puts every pending command in
//!   one transaction (group commit) and answers after the commit; each committed enqueue is
//!   handed to [`OnCommit`] as with the embedded queue.
//! - Dedup holds across hosts: `ab_dedup` has one row per (source, dedup key); a key is taken
//!   again only when its row is older than the window, and expired rows are pruned.
//! - Every alert row names its owner (the node that delivers it) and a lease expiry. The lease
//!   task ([`lease`]) renews this node's leases and takes over, with `FOR UPDATE SKIP LOCKED`,
//!   the unfinished alerts whose lease ran out (a host that died), handing them to this host's
//!   dispatch through the same [`OnCommit`]. A save is fenced: it only writes an alert this
//!   node still owns, so a host that lost its lease cannot record (nor begin) a send.
//! - The database down: enqueues answer [`QueueError::Unavailable`] ("try later"; nothing
//!   acknowledged is lost), saves are kept and written after the reconnect, and the writer
//!   reconnects with backoff; health and the `alertbridge_queue_up` metric say so.
//! - An outcome after a send ([`Queue::save_outcome`]) rides in the writer's next transaction
//!   instead of paying for one, and resolves once the writer has it.
//!
//! The client is async (tokio-postgres); it runs on a small runtime of its own, so the trait's
//! synchronous reads can wait for it from any thread, inside or outside the host's runtime.

mod apply;
mod lease;
#[cfg(test)]
mod outcome_tests;
#[cfg(test)]
mod reconnect_tests;
pub(crate) mod schema;
#[cfg(test)]
pub(crate) mod tests;
pub mod transfer;
mod writer;

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock, atomic::Ordering},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{Alert, kit::Secret};
use tokio::{
    runtime::{Handle, Runtime},
    sync::mpsc,
};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

pub use self::schema::SchemaState;
use self::writer::{Cmd, Writer};
use super::{
    BoxFuture, Enqueued, OnCommit, Origin, Queue, QueueError, QueueOptions, Taken,
    shared::{FaultState, ask, save_with},
};
use crate::{
    metrics::Metrics,
    model::{StoredAlert, now_ms},
};

/// How long a read waits for the database before it answers "unavailable".
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a start waits for its node name to be free (a killed predecessor's session).
const NODE_WAIT: Duration = Duration::from_secs(3);
/// How long a connection attempt may take unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the shared queue is and who this host is among those sharing it (`[queue]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PgSettings {
    /// `postgres://user[:password]@host[:port]/db` or `host=... user=...`; a secret: it may
    /// carry a password, so it is never logged.
    pub url: Secret,
    /// This host's name among those sharing the database; unique per host.
    pub node: String,
    /// How long a claim on delivery work lasts without renewal.
    pub lease: Duration,
}

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the queue url is not a PostgreSQL connection string")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot {what}")]
    Query {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the database's queue schema is version {found}, newer than this alertbridge knows ({known}): upgrade alertbridge"
    )]
    NewerSchema { found: i32, known: i32 },
    /// The migration could not run (a connection lost on the way): tried again.
    #[error("cannot migrate the queue schema")]
    Migrate(#[source] Box<refinery::Error>),
    /// The database's migrations are not this build's (one edited, or one this build lacks).
    #[error(
        "cannot migrate the queue schema: the database's migrations differ from this alertbridge's"
    )]
    Diverged(#[source] Box<refinery::Error>),
    #[error(
        "another running alertbridge already uses [queue] node = \"{0}\" on this database: give each host its own node name"
    )]
    NodeInUse(String),
}

impl PgError {
    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Query { what, source }
    }
}

impl From<PgError> for QueueError {
    fn from(e: PgError) -> Self {
        QueueError::Unavailable {
            reason: crate::error_chain(&e),
            retry_after_ms: 1000,
        }
    }
}

/// Opens one connection (its I/O driven by a task on the current runtime).
pub(crate) async fn connect(url: &Secret) -> Result<Client, PgError> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(PgError::Url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("alertbridge");
    }
    config.keepalives_idle(Duration::from_secs(30));
    let (client, connection) = config.connect(NoTls).await.map_err(PgError::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended.");
        }
    });
    Ok(client)
}

/// Connects, migrates and takes this node's name for the connection's life: a session
/// advisory lock, so a second host configured with the same `node` (which would deliver the
/// first one's alerts too) is refused; the lock goes with the connection (a killed host's at
/// once).
pub(crate) async fn connect_as_node(settings: &PgSettings) -> Result<Client, PgError> {
    use sha2::Digest as _;
    let mut client = connect(&settings.url).await?;
    schema::migrate(&mut client).await?;
    let digest = sha2::Sha256::new()
        .chain_update("alertbridge queue node\0")
        .chain_update(&settings.node)
        .finalize();
    let mut key = [0; 8];
    key.copy_from_slice(&digest[..8]);
    let taken: bool = client
        .query_one(
            "SELECT pg_try_advisory_lock($1)",
            &[&i64::from_be_bytes(key)],
        )
        .await
        .map_err(PgError::query("take the node name"))?
        .get(0);
    if !taken {
        return Err(PgError::NodeInUse(settings.node.clone()));
    }
    Ok(client)
}

/// Connects and reads the schema state, for `alertbridge check`; changes nothing.
pub async fn schema_state(url: &Secret) -> Result<SchemaState, PgError> {
    let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect(url))
        .await
        .map_err(|_| PgError::Timeout(CONNECT_TIMEOUT * 2))??;
    schema::state(&client).await
}

/// What the queue handle, its writer and its lease task share.
pub(super) struct Core {
    settings: PgSettings,
    options: QueueOptions,
    metrics: Arc<Metrics>,
    on_commit: OnCommit,
    /// Down (with why, and the next reconnect) until the writer reconnects.
    fault: FaultState,
    /// The connection reads use, opened on demand.
    reader: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// Whether this node's own unfinished alerts (from before a restart) were taken up; held
    /// while they are, so they are handed on once.
    adopted: tokio::sync::Mutex<bool>,
    /// The lowest id this process numbered a new alert with (`i64::MAX` before the first):
    /// rows of this node from below it are from before this start and taken up by adoption;
    /// rows from it on were handed on when committed and are never handed on again.
    first_own: std::sync::atomic::AtomicI64,
    stop: CancellationToken,
}

impl Core {
    /// The read connection, reconnected if it was lost.
    async fn reader(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.reader.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(connect(&self.settings.url).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Takes up this node's own unfinished alerts and those whose lease ran out, once per
    /// process; `None` if they were taken up already. Each says whether it was this node's
    /// ([`Origin::Resumed`]) or another's ([`Origin::TakenOver`], counted here); oldest first.
    async fn adopt(&self, client: &Client) -> Result<Option<Vec<(StoredAlert, Origin)>>, PgError> {
        let mut adopted = self.adopted.lock().await;
        if *adopted {
            return Ok(None);
        }
        let rows = client
            .query(
                "WITH up AS (
                    SELECT id, owner FROM ab_alerts
                    WHERE NOT finished
                      AND ((owner = $1 AND id < $3) OR (owner <> $1 AND lease_until < now()))
                    FOR UPDATE)
                 UPDATE ab_alerts a SET owner = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                 FROM up WHERE a.id = up.id
                 RETURNING a.id, a.doc, up.owner",
                &[
                    &self.settings.node,
                    &lease_ms(&self.settings),
                    &self.first_own.load(Ordering::Acquire),
                ],
            )
            .await
            .map_err(PgError::query("take up this node's unfinished alerts"))?;
        let mut alerts = self.with_origin(&rows);
        alerts.sort_by_key(|a| a.0.id);
        *adopted = true;
        Ok(Some(alerts))
    }

    /// Decodes `(id, doc, previous owner)` rows of alerts this node took up: its own are
    /// resumed, the others' taken over (and counted).
    fn with_origin(&self, rows: &[tokio_postgres::Row]) -> Vec<(StoredAlert, Origin)> {
        let origins: std::collections::HashMap<i64, Origin> = rows
            .iter()
            .map(|r| {
                let owner: &str = r.get(2);
                let origin = if owner == self.settings.node {
                    Origin::Resumed
                } else {
                    Origin::TakenOver
                };
                (r.get::<_, i64>(0), origin)
            })
            .collect();
        let alerts: Vec<(StoredAlert, Origin)> = decode_rows(rows)
            .into_iter()
            .map(|a| {
                let origin = origins
                    .get(&(a.id as i64))
                    .copied()
                    .unwrap_or(Origin::TakenOver);
                (a, origin)
            })
            .collect();
        let taken = alerts.iter().filter(|a| a.1 == Origin::TakenOver).count();
        if taken > 0 {
            self.metrics.alerts_taken_over(taken as u64);
        }
        alerts
    }

    /// Hands alerts taken up to this host's dispatch.
    fn hand_on(&self, alerts: Vec<(StoredAlert, Origin)>) {
        for (alert, origin) in alerts {
            (self.on_commit)(Enqueued {
                alert,
                duplicate: false,
                origin,
            });
        }
    }
}

fn lease_ms(s: &PgSettings) -> f64 {
    s.lease.as_millis() as f64
}

/// Decodes `(id, doc)` rows; a row that does not decode is logged and skipped.
fn decode_rows(rows: &[tokio_postgres::Row]) -> Vec<StoredAlert> {
    rows.iter()
        .filter_map(|r| {
            let id: i64 = r.get(0);
            let doc: &str = r.get(1);
            decode(id, doc)
                .map_err(|e| tracing::error!(alert = id, error = %crate::error_chain(&e), "Queue record does not decode; skipped."))
                .ok()
        })
        .collect()
}

fn decode(id: i64, doc: &str) -> Result<StoredAlert, QueueError> {
    let mut alert: StoredAlert =
        serde_json::from_str(doc).map_err(|source| QueueError::Corrupt {
            id: id as u64,
            source,
        })?;
    alert.id = id as u64;
    Ok(alert)
}

/// The queue's runtime, shut down without waiting when dropped (a runtime dropped the usual
/// way inside another runtime panics).
struct OwnRuntime(Option<Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The queue shared by several hosts through one PostgreSQL database.
pub struct PgQueue {
    core: Arc<Core>,
    tx: RwLock<Option<mpsc::UnboundedSender<Cmd>>>,
    runtime: Mutex<Option<OwnRuntime>>,
    handle: Handle,
    /// Answers once the writer has drained and ended.
    writer_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    /// Answers once the lease task has ended.
    lease_done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        self.close();
    }
}

impl PgQueue {
    /// Connects, applies the schema migrations and starts the writer and the lease task. A
    /// database that cannot be reached at start is not fatal: the queue starts down (sources
    /// are told "try later") and connects, migrates and takes up its work once it can. Errors
    /// only for what retrying cannot fix (a bad URL, a newer schema, a node name in use).
    pub fn open(
        settings: PgSettings,
        options: &QueueOptions,
        metrics: Arc<Metrics>,
        on_commit: OnCommit,
    ) -> Result<Self, QueueError> {
        let runtime = OwnRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("queue-postgres")
                .enable_all()
                .build()
                .map_err(QueueError::storage)?,
        ));
        let handle = runtime
            .0
            .as_ref()
            .map(|rt| rt.handle().clone())
            .ok_or(QueueError::Closed)?;
        let core = Arc::new(Core {
            settings,
            options: options.clone(),
            fault: FaultState::new(Arc::clone(&metrics)),
            metrics,
            on_commit,
            reader: tokio::sync::Mutex::new(None),
            adopted: tokio::sync::Mutex::new(false),
            first_own: std::sync::atomic::AtomicI64::new(i64::MAX),
            stop: CancellationToken::new(),
        });
        let first = block_on(&handle, {
            let core = Arc::clone(&core);
            async move {
                // A host killed a moment ago may still hold the name until the server notices
                // its connection closed: wait a little for it.
                let deadline = Instant::now() + NODE_WAIT;
                loop {
                    match connect_as_node(&core.settings).await {
                        Err(PgError::NodeInUse(_)) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        other => break other,
                    }
                }
            }
        });
        let client = match first {
            Ok(Ok(c)) => Some(c),
            Ok(Err(
                e @ (PgError::Url(_)
                | PgError::NewerSchema { .. }
                | PgError::Diverged(_)
                | PgError::NodeInUse(_)),
            )) => {
                return Err(e.into());
            }
            Ok(Err(e)) => {
                let reason = crate::error_chain(&e);
                tracing::error!(error = %reason, "PostgreSQL queue unreachable at start; sources are told to try later until it is back.");
                core.fault
                    .set(reason, Instant::now() + Duration::from_millis(500));
                None
            }
            Err(e) => return Err(e),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let writer = Writer::new(Arc::clone(&core), client);
        handle.spawn(async move {
            writer.run(rx).await;
            let _ = done_tx.send(());
        });
        let (lease_tx, lease_rx) = std::sync::mpsc::channel();
        handle.spawn({
            let core = Arc::clone(&core);
            async move {
                lease::run(core).await;
                let _ = lease_tx.send(());
            }
        });
        Ok(Self {
            core,
            tx: RwLock::new(Some(tx)),
            runtime: Mutex::new(Some(runtime)),
            handle,
            writer_done: Mutex::new(Some(done_rx)),
            lease_done: Mutex::new(Some(lease_rx)),
        })
    }

    /// This host's node name.
    pub fn node(&self) -> &str {
        &self.core.settings.node
    }

    fn send(&self, cmd: Cmd) -> Result<(), QueueError> {
        self.tx
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(cmd)
            .map_err(|_| QueueError::Closed)
    }

    /// A save; an `outcome` is answered once the writer has it, any other after its commit.
    /// A save while down still goes to the writer, which keeps it for the reconnect.
    fn save_as(
        &self,
        alert: &StoredAlert,
        outcome: bool,
    ) -> BoxFuture<'static, Result<(), QueueError>> {
        save_with(outcome, |reply| {
            let json = serde_json::to_string(alert).map_err(QueueError::storage)?;
            self.send(Cmd::Save {
                id: alert.id as i64,
                finished: alert.is_finished(),
                json,
                reply,
            })
        })
    }

    /// Runs a read on the queue's runtime and waits for it (from any thread).
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Client>) -> BoxFuture<'static, Result<T, QueueError>> + Send + 'static,
    ) -> Result<T, QueueError> {
        if let Some(e) = self.core.fault.unavailable() {
            return Err(e);
        }
        let core = Arc::clone(&self.core);
        block_on(&self.handle, async move {
            let client = core.reader().await?;
            f(client).await
        })?
    }
}

/// Runs `fut` on the queue's runtime and waits for it, at most [`READ_TIMEOUT`]. Callable from
/// any thread that is not one of the queue runtime's own.
fn block_on<T: Send + 'static>(
    handle: &Handle,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, QueueError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(tokio::time::timeout(READ_TIMEOUT, fut).await);
    });
    match rx.recv() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(PgError::Timeout(READ_TIMEOUT).into()),
        Err(_) => Err(QueueError::Closed),
    }
}

impl Queue for PgQueue {
    fn enqueue(&self, source: &str, alert: Alert) -> BoxFuture<'static, Result<Taken, QueueError>> {
        let stored = StoredAlert::new(0, source, alert, now_ms());
        ask(|reply| {
            if let Some(e) = self.core.fault.unavailable() {
                return Err(e);
            }
            let json = serde_json::to_string(&stored).map_err(QueueError::storage)?;
            self.send(Cmd::Enqueue {
                alert: Box::new(stored),
                json,
                reply,
            })
        })
    }

    fn save(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save_as(alert, false)
    }

    /// Resolves once the writer has it; it rides in the writer's next transaction (see
    /// [`writer`]). An outcome of an alert another host took over is not written, and the
    /// dispatcher hears [`QueueError::NotOwner`] at its next save of that alert.
    fn save_outcome(&self, alert: &StoredAlert) -> BoxFuture<'static, Result<(), QueueError>> {
        self.save_as(alert, true)
    }

    /// This node's unfinished alerts (from before a restart) and those of hosts whose lease ran
    /// out, which it takes over; oldest first. Empty while the database is down: the lease
    /// task takes them up once it is back.
    fn unfinished(&self) -> Result<Vec<StoredAlert>, QueueError> {
        if self.core.fault.unavailable().is_some() {
            return Ok(Vec::new());
        }
        let core = Arc::clone(&self.core);
        self.read(move |client| {
            Box::pin(async move {
                let alerts = core.adopt(&client).await?.unwrap_or_default();
                Ok(alerts.into_iter().map(|a| a.0).collect())
            })
        })
    }

    fn recent(&self, limit: usize) -> Result<Vec<StoredAlert>, QueueError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |client| {
            Box::pin(async move {
                let rows = client
                    .query(
                        "SELECT id, doc FROM ab_alerts ORDER BY id DESC LIMIT $1",
                        &[&limit],
                    )
                    .await
                    .map_err(PgError::query("read the newest alerts"))?;
                Ok(decode_rows(&rows))
            })
        })
    }

    fn get(&self, id: u64) -> Result<Option<StoredAlert>, QueueError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        self.read(move |client| {
            Box::pin(async move {
                let row = client
                    .query_opt("SELECT id, doc FROM ab_alerts WHERE id = $1", &[&id])
                    .await
                    .map_err(PgError::query("read an alert"))?;
                row.map(|r| decode(r.get(0), r.get(1))).transpose()
            })
        })
    }

    /// Stops the lease task, lets the writer finish what it was given and end this node's
    /// leases (another host takes its unfinished work up at once) and closes the connections.
    fn close(&self) {
        // The lease task ends first: a renewal after the writer's release would extend the
        // leases it just ended.
        self.core.stop.cancel();
        let lease_done = self
            .lease_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = lease_done {
            let _ = done.recv_timeout(READ_TIMEOUT);
        }
        drop(
            self.tx
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let done = self
            .writer_done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(done) = done {
            let _ = done.recv_timeout(READ_TIMEOUT);
        }
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(runtime);
    }
}
