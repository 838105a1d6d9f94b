//! Incidents in the PostgreSQL database the queue shares between hosts (`[queue] backend =
//! "postgres"`): [`PgIncidents`], a [`IncidentStore`] that says it is shared.
//!
//! ```text
//! ab_incidents        id → version, resolved, dedup_key, first_alert, opened_ms, doc (JSON Incident)
//!                     unique (dedup_key) where not resolved: one open incident per key
//! ab_incident_ids     the sequence incident ids come from, shared by every host
//! ab_early_resolves   dedup key → doc (JSON EarlyResolve)
//! ```
//!
//! Every save is a compare-and-swap on `version`: a host that read an incident before another
//! host changed it gets [`IncidentError::Conflict`] and reads it again. An incident opened
//! already resolved by a remembered resolve consumes that resolve in the same statement that
//! stores it: of two hosts opening an incident with one remembered resolve at the same moment,
//! one opens it resolved and the other gets [`IncidentError::KeyTaken`] (it opens again, as if
//! the resolve had never been remembered, as a single host does). The connection is made
//! on first use and again after it broke; a call while the database is away fails with
//! [`IncidentError::Storage`] naming the cause (the engine's caller sees it; the timer retries).

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::kit::Secret;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Row, error::SqlState};

use super::{
    BoxFuture, Incident, IncidentError, IncidentId,
    early::{Change, EarlyResolve},
    store::{IncidentStore, PageState, Query, Versioned},
};
use crate::queue::postgres::{PgError, connect, schema};

/// How long one call may wait for the database (connecting included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const COLUMNS: &str = "id, version, doc";

/// Incidents in the shared PostgreSQL database; clones share the connection.
#[derive(Clone)]
pub struct PgIncidents {
    inner: Arc<Inner>,
}

struct Inner {
    url: Secret,
    client: Mutex<Option<Arc<Client>>>,
}

impl PgIncidents {
    /// Connects and applies the schema's migrations (the queue's; this store's tables are
    /// among them).
    pub async fn open(url: &Secret) -> Result<Self, IncidentError> {
        let mut client = connect(url).await.map_err(IncidentError::storage)?;
        schema::migrate(&mut client)
            .await
            .map_err(IncidentError::storage)?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: Secret::new(url.expose()),
                client: Mutex::new(Some(Arc::new(client))),
            }),
        })
    }

    /// Runs `f` on a connected client within [`CALL_TIMEOUT`]; a broken or timed-out
    /// connection is dropped and made again by the next call.
    async fn call<T, F, Fut>(
        inner: Arc<Inner>,
        what: &'static str,
        f: F,
    ) -> Result<T, IncidentError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, IncidentError>>,
    {
        let run = async {
            let client = {
                let mut slot = inner.client.lock().await;
                match slot.as_ref().filter(|c| !c.is_closed()) {
                    Some(c) => Arc::clone(c),
                    None => {
                        *slot = None;
                        let c =
                            Arc::new(connect(&inner.url).await.map_err(IncidentError::storage)?);
                        tracing::debug!("Incident store connected to PostgreSQL.");
                        *slot = Some(Arc::clone(&c));
                        c
                    }
                }
            };
            f(client).await
        };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(r) => r,
            Err(_) => {
                *inner.client.lock().await = None;
                tracing::warn!(what, "PostgreSQL did not answer in time; reconnecting");
                Err(IncidentError::storage(PgError::Timeout(CALL_TIMEOUT)))
            }
        }
    }

    /// Runs `fut` to its end on a runtime of its own, on a thread of its own (the trait's
    /// synchronous reads, callable from anywhere).
    fn blocking<T: Send + 'static>(
        &self,
        fut: impl FnOnce(Self) -> BoxFuture<'static, Result<T, IncidentError>> + Send + 'static,
    ) -> Result<T, IncidentError> {
        let fresh = Self {
            inner: Arc::new(Inner {
                url: Secret::new(self.inner.url.expose()),
                client: Mutex::new(None),
            }),
        };
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(IncidentError::storage)?;
                rt.block_on(fut(fresh))
            })
            .join()
            .unwrap_or_else(|_| {
                Err(IncidentError::storage(std::io::Error::other(
                    "the incident store's reader thread panicked",
                )))
            })
        })
    }
}

fn query_err(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> IncidentError {
    move |e| IncidentError::storage(PgError::query(what)(e))
}

fn id_of(id: IncidentId) -> Result<i64, IncidentError> {
    i64::try_from(id.0).map_err(IncidentError::storage)
}

fn versioned(row: &Row) -> Result<Versioned, IncidentError> {
    let id: i64 = row.get(0);
    let doc: String = row.get(2);
    let incident = serde_json::from_str(&doc).map_err(|source| IncidentError::Corrupt {
        id: u64::try_from(id).unwrap_or_default(),
        source,
    })?;
    Ok(Versioned {
        incident,
        version: row.get(1),
    })
}

/// The incident's JSON and the columns kept beside it.
struct Columns {
    id: i64,
    resolved: bool,
    dedup_key: Option<String>,
    first_alert: i64,
    opened_ms: i64,
    doc: String,
}

fn columns(inc: &Incident) -> Result<Columns, IncidentError> {
    Ok(Columns {
        id: id_of(inc.id)?,
        resolved: inc.is_resolved(),
        dedup_key: inc.dedup_key.clone(),
        first_alert: inc
            .alert_ids
            .first()
            .map_or(Ok(0), |a| i64::try_from(*a))
            .map_err(IncidentError::storage)?,
        opened_ms: inc.opened_ms,
        doc: serde_json::to_string(inc).map_err(|source| IncidentError::Corrupt {
            id: inc.id.0,
            source,
        })?,
    })
}

/// For an incident opened already resolved (only a remembered resolve of its dedup key does
/// that): when that resolve arrived, to find it.
fn resolved_early(inc: &Incident) -> Option<i64> {
    match (&inc.resolved, &inc.dedup_key) {
        (Some(mark), Some(_)) if inc.is_resolved() => Some(mark.at_ms),
        _ => None,
    }
}

async fn select(client: &Client, query: &Query) -> Result<Vec<Versioned>, IncidentError> {
    let what = "read incidents";
    let rows = match query {
        Query::One(id) => {
            let sql = format!("SELECT {COLUMNS} FROM ab_incidents WHERE id = $1");
            client.query(&sql, &[&id_of(*id)?]).await
        }
        Query::OpenByKey(key) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM ab_incidents WHERE NOT resolved AND dedup_key = $1"
            );
            client.query(&sql, &[key]).await
        }
        Query::Open => {
            let sql = format!("SELECT {COLUMNS} FROM ab_incidents WHERE NOT resolved ORDER BY id");
            client.query(&sql, &[]).await
        }
        Query::All => {
            let sql = format!("SELECT {COLUMNS} FROM ab_incidents ORDER BY id");
            client.query(&sql, &[]).await
        }
        // An index read backwards from `before`: `limit` rows, whatever the table holds. The
        // open ones: the partial index `ab_incidents_open` (id, where not resolved); the others:
        // the primary key's (the resolved ones skip the few open).
        Query::Page {
            state,
            before,
            limit,
        } => {
            let only = match state {
                PageState::All => "",
                PageState::Open => "NOT resolved AND ",
                PageState::Resolved => "resolved AND ",
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM ab_incidents WHERE {only}id < $1 ORDER BY id DESC LIMIT $2"
            );
            let below = before.map_or(i64::MAX, |b| i64::try_from(b.0).unwrap_or(i64::MAX));
            let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
            client.query(&sql, &[&below, &limit]).await
        }
        Query::FirstAlert { alert_id, since_ms } => {
            let sql = format!(
                "SELECT {COLUMNS} FROM ab_incidents WHERE first_alert = $1 AND opened_ms >= $2 ORDER BY id"
            );
            let alert = i64::try_from(*alert_id).map_err(IncidentError::storage)?;
            client.query(&sql, &[&alert, since_ms]).await
        }
    }
    .map_err(query_err(what))?;
    rows.iter().map(versioned).collect()
}

impl IncidentStore for PgIncidents {
    fn load(&self) -> Result<Vec<Incident>, IncidentError> {
        let all = self.blocking(|s| s.query(Query::All))?;
        Ok(all.into_iter().map(|v| v.incident).collect())
    }

    fn save(&self, incident: &Incident) -> BoxFuture<'static, Result<(), IncidentError>> {
        let inner = Arc::clone(&self.inner);
        let cols = columns(incident);
        Box::pin(async move {
            let c = cols?;
            Self::call(inner, "save an incident", |client| async move {
                client
                    .execute(
                        "INSERT INTO ab_incidents (id, version, resolved, dedup_key, first_alert, opened_ms, doc)
                         VALUES ($1, 1, $2, $3, $4, $5, $6)
                         ON CONFLICT (id) DO UPDATE SET version = ab_incidents.version + 1,
                           resolved = $2, dedup_key = $3, doc = $6",
                        &[&c.id, &c.resolved, &c.dedup_key, &c.first_alert, &c.opened_ms, &c.doc],
                    )
                    .await
                    .map_err(query_err("save an incident"))?;
                Ok(())
            })
            .await
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn next_id(&self, _local: u64) -> BoxFuture<'static, Result<u64, IncidentError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(Self::call(
            inner,
            "take an incident id",
            |client| async move {
                let id: i64 = client
                    .query_one("SELECT nextval('ab_incident_ids')", &[])
                    .await
                    .map_err(query_err("take an incident id"))?
                    .get(0);
                u64::try_from(id).map_err(IncidentError::storage)
            },
        ))
    }

    fn query(&self, query: Query) -> BoxFuture<'static, Result<Vec<Versioned>, IncidentError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(Self::call(inner, "read incidents", |client| async move {
            select(&client, &query).await
        }))
    }

    fn create(&self, incident: &Incident) -> BoxFuture<'static, Result<i64, IncidentError>> {
        let inner = Arc::clone(&self.inner);
        let cols = columns(incident);
        let early = resolved_early(incident);
        Box::pin(async move {
            let c = cols?;
            Self::call(inner, "open an incident", |client| async move {
                let r = match early {
                    None => {
                        client
                            .execute(
                                "INSERT INTO ab_incidents (id, version, resolved, dedup_key, first_alert, opened_ms, doc)
                                 VALUES ($1, 1, $2, $3, $4, $5, $6)",
                                &[&c.id, &c.resolved, &c.dedup_key, &c.first_alert, &c.opened_ms, &c.doc],
                            )
                            .await
                    }
                    // Stored only if the remembered resolve is still there, and consumed with
                    // it: one statement, so two hosts cannot both use it.
                    Some(at_ms) => {
                        client
                            .execute(
                                "WITH spent AS (
                                    DELETE FROM ab_early_resolves
                                    WHERE dedup_key = $3 AND (doc::jsonb ->> 'at_ms')::int8 = $7
                                    RETURNING 1)
                                 INSERT INTO ab_incidents (id, version, resolved, dedup_key, first_alert, opened_ms, doc)
                                 SELECT $1, 1, $2, $3, $4, $5, $6 FROM spent",
                                &[&c.id, &c.resolved, &c.dedup_key, &c.first_alert, &c.opened_ms, &c.doc, &at_ms],
                            )
                            .await
                    }
                };
                match r {
                    Ok(0) => Err(IncidentError::KeyTaken(c.dedup_key.unwrap_or_default())),
                    Ok(_) => Ok(1),
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        Err(IncidentError::KeyTaken(c.dedup_key.unwrap_or_default()))
                    }
                    Err(e) => Err(query_err("open an incident")(e)),
                }
            })
            .await
        })
    }

    fn save_if(
        &self,
        incident: &Incident,
        expected: i64,
    ) -> BoxFuture<'static, Result<i64, IncidentError>> {
        let inner = Arc::clone(&self.inner);
        let cols = columns(incident);
        let id = incident.id;
        Box::pin(async move {
            let c = cols?;
            Self::call(inner, "save an incident", |client| async move {
                let r = client
                    .query_opt(
                        "UPDATE ab_incidents SET version = version + 1, resolved = $3,
                           dedup_key = $4, doc = $5
                         WHERE id = $1 AND version = $2 RETURNING version",
                        &[&c.id, &expected, &c.resolved, &c.dedup_key, &c.doc],
                    )
                    .await;
                match r {
                    Ok(Some(row)) => Ok(row.get(0)),
                    Ok(None) => Err(IncidentError::Conflict(id)),
                    Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        Err(IncidentError::KeyTaken(c.dedup_key.unwrap_or_default()))
                    }
                    Err(e) => Err(query_err("save an incident")(e)),
                }
            })
            .await
        })
    }

    fn load_early(&self) -> Result<Vec<EarlyResolve>, IncidentError> {
        self.blocking(|s| s.fetch_early())
    }

    fn fetch_early(&self) -> BoxFuture<'static, Result<Vec<EarlyResolve>, IncidentError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(Self::call(
            inner,
            "read remembered resolves",
            |client| async move {
                let rows = client
                    .query("SELECT dedup_key, doc FROM ab_early_resolves", &[])
                    .await
                    .map_err(query_err("read remembered resolves"))?;
                rows.iter()
                    .map(|r| {
                        let doc: String = r.get(1);
                        serde_json::from_str(&doc).map_err(|source| IncidentError::CorruptEarly {
                            key: r.get(0),
                            source,
                        })
                    })
                    .collect()
            },
        ))
    }

    fn save_early(&self, change: &Change) -> BoxFuture<'static, Result<(), IncidentError>> {
        let inner = Arc::clone(&self.inner);
        let delete = change.delete.clone();
        let put = change.put.as_ref().map(|r| {
            serde_json::to_string(r)
                .map(|doc| (r.key.clone(), doc))
                .map_err(|source| IncidentError::CorruptEarly {
                    key: r.key.clone(),
                    source,
                })
        });
        Box::pin(async move {
            let put = put.transpose()?;
            Self::call(inner, "remember a resolve", |client| async move {
                if !delete.is_empty() {
                    client
                        .execute(
                            "DELETE FROM ab_early_resolves WHERE dedup_key = ANY($1)",
                            &[&delete],
                        )
                        .await
                        .map_err(query_err("forget remembered resolves"))?;
                }
                if let Some((key, doc)) = put {
                    client
                        .execute(
                            "INSERT INTO ab_early_resolves (dedup_key, doc) VALUES ($1, $2)
                             ON CONFLICT (dedup_key) DO UPDATE SET doc = $2",
                            &[&key, &doc],
                        )
                        .await
                        .map_err(query_err("remember a resolve"))?;
                }
                Ok(())
            })
            .await
        })
    }
}
