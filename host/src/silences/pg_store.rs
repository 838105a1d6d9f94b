//! Silences in PostgreSQL ([`PgSilences`]): with `[queue] backend = "postgres"` every host
//! keeps its silences in the database the queue shares, so a silence made on one host silences
//! alerts on all of them (each re-reads the table every [`super::REFRESH_EVERY`]).
//!
//! ```text
//! ab_silences     id → doc (JSON Silence), updated_at      (queue schema migration 3)
//! ab_silence_ids  the sequence silence ids come from, shared by every host (never reused)
//! ```
//!
//! The client runs on a small runtime of its own, so that [`SilenceStore::load`] (synchronous)
//! can wait for it from any thread. Every call is bounded by [`CALL_TIMEOUT`]; the database
//! away means a [`SilenceError::Storage`] naming why (the admin API answers 503 with it), and
//! nothing in force is dropped: the host keeps the silences it last read.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::kit::Secret;
use futures::future::BoxFuture;
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::Client;

use super::{Silence, SilenceError, SilenceStore};
use crate::queue::postgres::{PgError, connect, schema};

/// The longest a call may wait for the database, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Silences shared by every host through one PostgreSQL database.
pub struct PgSilences {
    inner: Arc<Inner>,
    handle: Handle,
    /// Shut down without waiting when dropped (a runtime dropped the usual way inside another
    /// runtime panics).
    runtime: Mutex<Option<Runtime>>,
}

struct Inner {
    url: Secret,
    /// The connection, opened (and the schema migrated) on demand, again after it was lost.
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Drop for PgSilences {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            rt.shutdown_background();
        }
    }
}

impl Inner {
    async fn client(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let mut c = connect(&self.url).await?;
        // The queue migrates too; whichever comes first creates the table.
        schema::migrate(&mut c).await?;
        let c = Arc::new(c);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    async fn load(&self) -> Result<(Vec<Silence>, Vec<SilenceError>), PgError> {
        let rows = self
            .client()
            .await?
            .query("SELECT id, doc FROM ab_silences ORDER BY id", &[])
            .await
            .map_err(PgError::query("read the silences"))?;
        let (mut out, mut damaged) = (Vec::new(), Vec::new());
        for row in rows {
            let id: i64 = row.get(0);
            let doc: &str = row.get(1);
            match serde_json::from_str::<Silence>(doc) {
                Ok(mut s) => {
                    s.id = id as u64;
                    out.push(s);
                }
                Err(source) => damaged.push(SilenceError::Corrupt {
                    id: id as u64,
                    source,
                }),
            }
        }
        Ok((out, damaged))
    }

    async fn create(&self, mut draft: Silence) -> Result<Silence, SilenceError> {
        let client = self.client().await.map_err(SilenceError::storage)?;
        let id: i64 = client
            .query_one("SELECT nextval('ab_silence_ids')", &[])
            .await
            .map_err(|e| SilenceError::storage(PgError::query("number a silence")(e)))?
            .get(0);
        draft.id = u64::try_from(id).map_err(SilenceError::storage)?;
        let doc = encode(&draft)?;
        client
            .execute(
                "INSERT INTO ab_silences (id, doc) VALUES ($1, $2)",
                &[&id, &doc],
            )
            .await
            .map_err(|e| SilenceError::storage(PgError::query("store a silence")(e)))?;
        Ok(draft)
    }

    async fn save(&self, id: i64, doc: String) -> Result<(), SilenceError> {
        let client = self.client().await.map_err(SilenceError::storage)?;
        // An upsert: a silence another host pruned meanwhile is stored again as it now stands.
        client
            .execute(
                "INSERT INTO ab_silences (id, doc) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = now()",
                &[&id, &doc],
            )
            .await
            .map_err(|e| SilenceError::storage(PgError::query("store a silence")(e)))?;
        Ok(())
    }

    async fn remove(&self, ids: Vec<i64>) -> Result<(), SilenceError> {
        let client = self.client().await.map_err(SilenceError::storage)?;
        client
            .execute("DELETE FROM ab_silences WHERE id = ANY($1)", &[&ids])
            .await
            .map_err(|e| SilenceError::storage(PgError::query("forget silences")(e)))?;
        Ok(())
    }
}

fn encode(s: &Silence) -> Result<String, SilenceError> {
    serde_json::to_string(s).map_err(|source| SilenceError::Corrupt { id: s.id, source })
}

fn id_of(id: u64) -> Result<i64, SilenceError> {
    i64::try_from(id).map_err(|_| SilenceError::Unknown(id))
}

impl PgSilences {
    /// A store on the database at `url`. Connects on first use: a database away answers each
    /// call with an error, and the next call tries again.
    pub fn open(url: Secret) -> Result<Self, SilenceError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("silences-postgres")
            .enable_all()
            .build()
            .map_err(SilenceError::storage)?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            inner: Arc::new(Inner {
                url,
                client: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// Runs `f` on the store's runtime within [`CALL_TIMEOUT`]; a future any runtime may await.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(Arc<Inner>) -> BoxFuture<'static, Result<T, SilenceError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, SilenceError>> {
        let inner = Arc::clone(&self.inner);
        let task = self.handle.spawn(async move {
            tokio::time::timeout(CALL_TIMEOUT, f(inner))
                .await
                .map_err(|_| SilenceError::storage(PgError::Timeout(CALL_TIMEOUT)))?
        });
        Box::pin(async move { task.await.map_err(SilenceError::storage)? })
    }
}

impl SilenceStore for PgSilences {
    /// Waits for the database (at most [`CALL_TIMEOUT`]): call it off the host's async
    /// threads (the registry's refresh does).
    fn load(&self) -> Result<(Vec<Silence>, Vec<SilenceError>), SilenceError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        self.handle.spawn(async move {
            let out = match tokio::time::timeout(CALL_TIMEOUT, inner.load()).await {
                Ok(r) => r,
                Err(_) => Err(PgError::Timeout(CALL_TIMEOUT)),
            };
            let _ = tx.send(out.map_err(SilenceError::storage));
        });
        rx.recv()
            .map_err(|e| SilenceError::storage(std::io::Error::other(e)))?
    }

    fn create(&self, draft: Silence) -> BoxFuture<'static, Result<Silence, SilenceError>> {
        self.call(move |inner| Box::pin(async move { inner.create(draft).await }))
    }

    fn save(&self, silence: &Silence) -> BoxFuture<'static, Result<(), SilenceError>> {
        let row = id_of(silence.id).and_then(|id| Ok((id, encode(silence)?)));
        self.call(move |inner| {
            Box::pin(async move {
                let (id, doc) = row?;
                inner.save(id, doc).await
            })
        })
    }

    fn remove(&self, ids: Vec<u64>) -> BoxFuture<'static, Result<(), SilenceError>> {
        let ids: Result<Vec<i64>, _> = ids.into_iter().map(id_of).collect();
        self.call(move |inner| Box::pin(async move { inner.remove(ids?).await }))
    }

    fn shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
#[path = "pg_tests.rs"]
mod tests;
