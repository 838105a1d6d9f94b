//! Where incidents are kept: the [`IncidentStore`] trait (so a shared backend can replace the
//! embedded one), the embedded redb file and an in-memory store for tests.
//!
//! ```text
//! data_dir/incidents.redb   incidents       u64 id -> JSON Incident
//!                           early_resolves  dedup key -> JSON EarlyResolve
//! ```
//!
//! The file is separate from the queue's: a step is committed here first, then its page is
//! enqueued with a dedup key (`incident/<id>/page/<seq>`), then marked handed; a crash in
//! between hands the page again on start and the queue's dedup takes it once.

use std::{
    borrow::Borrow,
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use redb::{Database, ReadableTable, TableDefinition};

use super::{
    BoxFuture, Incident, IncidentError, IncidentId,
    early::{Change, EarlyResolve},
};

const INCIDENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("incidents");
const EARLY: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("early_resolves");
/// The file's name in the data folder.
pub const FILE: &str = "incidents.redb";

/// An incident as read from the store, with the version its next save must expect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub incident: Incident,
    pub version: i64,
}

/// Which incidents [`IncidentStore::query`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// That one (none if unknown).
    One(IncidentId),
    /// The unresolved one with this dedup key (at most one).
    OpenByKey(String),
    /// Every unresolved one.
    Open,
    /// Every one.
    All,
    /// A page, newest first: the newest `limit` in `state` with an id below `before` (all if
    /// `None`).
    Page {
        state: PageState,
        before: Option<IncidentId>,
        limit: usize,
    },
    /// The ones alert `alert_id` opened (first alert) at or after `since_ms`.
    FirstAlert { alert_id: u64, since_ms: i64 },
}

/// Which incidents a [`Query::Page`] lists, as `?state=` names them (`open` is unresolved,
/// acknowledged or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageState {
    #[default]
    All,
    Open,
    Resolved,
}

impl PageState {
    /// Whether `inc` is in this state.
    pub fn matches(self, inc: &Incident) -> bool {
        match self {
            Self::All => true,
            Self::Open => !inc.is_resolved(),
            Self::Resolved => inc.is_resolved(),
        }
    }
}

impl Query {
    /// Whether `inc` is one this query reads.
    pub fn matches(&self, inc: &Incident) -> bool {
        match self {
            Self::One(id) => inc.id == *id,
            Self::OpenByKey(k) => !inc.is_resolved() && inc.dedup_key.as_deref() == Some(k),
            Self::Open => !inc.is_resolved(),
            Self::All => true,
            Self::Page { state, before, .. } => {
                state.matches(inc) && before.is_none_or(|b| inc.id < b)
            }
            Self::FirstAlert { alert_id, since_ms } => {
                inc.opened_ms >= *since_ms && inc.alert_ids.first() == Some(alert_id)
            }
        }
    }

    /// What this query reads from `by_id` (every incident, oldest first): a page newest first
    /// and at most its `limit`, any other query in the order given.
    pub fn pick<T: Borrow<Incident>>(&self, by_id: impl DoubleEndedIterator<Item = T>) -> Vec<T> {
        match self {
            Self::Page { limit, .. } => by_id
                .rev()
                .filter(|i| self.matches(i.borrow()))
                .take(*limit)
                .collect(),
            _ => by_id.filter(|i| self.matches(i.borrow())).collect(),
        }
    }
}

/// Durable storage of incidents.
///
/// An embedded store is this host's alone: the engine loads it once ([`IncidentStore::load`])
/// and keeps it in memory. A [`IncidentStore::shared`] store (PostgreSQL) is changed by other
/// hosts too: the engine reads it through [`IncidentStore::query`] before each change and
/// writes with compare-and-swap ([`IncidentStore::create`], [`IncidentStore::save_if`]); the
/// defaults serve the embedded stores, where nothing else writes.
pub trait IncidentStore: Send + Sync + 'static {
    /// Every stored incident, by id.
    fn load(&self) -> Result<Vec<Incident>, IncidentError>;

    /// Other hosts change this store too.
    fn shared(&self) -> bool {
        false
    }

    /// The id for a new incident; `local` is the engine's own next id (an embedded store's).
    fn next_id(&self, local: u64) -> BoxFuture<'static, Result<u64, IncidentError>> {
        Box::pin(async move { Ok(local) })
    }

    /// The incidents `query` names, each with its version (the default: read from
    /// [`IncidentStore::load`]).
    fn query(&self, query: Query) -> BoxFuture<'static, Result<Vec<Versioned>, IncidentError>> {
        let all = self.load();
        Box::pin(async move {
            Ok(query
                .pick(all?.into_iter())
                .into_iter()
                .map(|incident| Versioned {
                    incident,
                    version: 0,
                })
                .collect())
        })
    }

    /// Stores a new incident; answers its version. [`IncidentError::KeyTaken`] if another
    /// unresolved incident has its dedup key (another host opened it meanwhile).
    fn create(&self, incident: &Incident) -> BoxFuture<'static, Result<i64, IncidentError>> {
        let save = self.save(incident);
        Box::pin(async move { save.await.map(|()| 1) })
    }

    /// Stores the incident if its stored version is still `expected`; answers the new
    /// version. [`IncidentError::Conflict`] if it changed meanwhile (another host).
    fn save_if(
        &self,
        incident: &Incident,
        expected: i64,
    ) -> BoxFuture<'static, Result<i64, IncidentError>> {
        let save = self.save(incident);
        Box::pin(async move { save.await.map(|()| expected + 1) })
    }

    /// [`IncidentStore::load_early`] as of now (a shared store: what every host remembered).
    fn fetch_early(&self) -> BoxFuture<'static, Result<Vec<EarlyResolve>, IncidentError>> {
        let early = self.load_early();
        Box::pin(async move { early })
    }

    /// Stores the incident's current state. Resolves after commit.
    fn save(&self, incident: &Incident) -> BoxFuture<'static, Result<(), IncidentError>>;

    /// The remembered resolves that found no incident (see [`EarlyResolve`]). The default is
    /// for a store that does not keep them (the engine then remembers them until it stops).
    fn load_early(&self) -> Result<Vec<EarlyResolve>, IncidentError> {
        Ok(Vec::new())
    }

    /// Stores and deletes remembered resolves in one commit. Resolves after commit.
    fn save_early(&self, change: &Change) -> BoxFuture<'static, Result<(), IncidentError>> {
        let _ = change;
        Box::pin(async { Ok(()) })
    }
}

/// Incidents in memory; clones share them (a "restart" in tests builds a new engine on a
/// clone).
#[derive(Clone, Default)]
pub struct MemoryIncidents {
    map: Arc<Mutex<BTreeMap<u64, Incident>>>,
    early: Arc<Mutex<BTreeMap<String, EarlyResolve>>>,
}

impl IncidentStore for MemoryIncidents {
    fn load(&self) -> Result<Vec<Incident>, IncidentError> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(map.values().cloned().collect())
    }

    fn save(&self, incident: &Incident) -> BoxFuture<'static, Result<(), IncidentError>> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(incident.id.0, incident.clone());
        Box::pin(async { Ok(()) })
    }

    fn load_early(&self) -> Result<Vec<EarlyResolve>, IncidentError> {
        let early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(early.values().cloned().collect())
    }

    fn save_early(&self, change: &Change) -> BoxFuture<'static, Result<(), IncidentError>> {
        let mut early = self.early.lock().unwrap_or_else(PoisonError::into_inner);
        for k in &change.delete {
            early.remove(k);
        }
        if let Some(r) = &change.put {
            early.insert(r.key.clone(), r.clone());
        }
        Box::pin(async { Ok(()) })
    }
}

/// Incidents in `data_dir/incidents.redb`; each save is one durable write transaction.
pub struct RedbIncidents {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbIncidents {
    /// Opens (or creates) the file in `dir`.
    pub fn open(dir: &Path) -> Result<Self, IncidentError> {
        let path = dir.join(FILE);
        let db = Database::create(&path).map_err(IncidentError::storage)?;
        crate::private::restrict(&path, crate::private::FILE_MODE)
            .map_err(IncidentError::storage)?;
        let tx = db.begin_write().map_err(IncidentError::storage)?;
        tx.open_table(INCIDENTS).map_err(IncidentError::storage)?;
        tx.open_table(EARLY).map_err(IncidentError::storage)?;
        tx.commit().map_err(IncidentError::storage)?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl IncidentStore for RedbIncidents {
    fn load(&self) -> Result<Vec<Incident>, IncidentError> {
        let tx = self.db.begin_read().map_err(IncidentError::storage)?;
        let table = tx.open_table(INCIDENTS).map_err(IncidentError::storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(IncidentError::storage)? {
            let (k, v) = row.map_err(IncidentError::storage)?;
            let inc =
                serde_json::from_slice(v.value()).map_err(|source| IncidentError::Corrupt {
                    id: k.value(),
                    source,
                })?;
            out.push(inc);
        }
        Ok(out)
    }

    fn save(&self, incident: &Incident) -> BoxFuture<'static, Result<(), IncidentError>> {
        let db = Arc::clone(&self.db);
        let id = incident.id.0;
        let bytes = serde_json::to_vec(incident);
        Box::pin(async move {
            let bytes = bytes.map_err(|source| IncidentError::Corrupt { id, source })?;
            tokio::task::spawn_blocking(move || {
                let tx = db.begin_write().map_err(IncidentError::storage)?;
                {
                    let mut t = tx.open_table(INCIDENTS).map_err(IncidentError::storage)?;
                    t.insert(id, bytes.as_slice())
                        .map_err(IncidentError::storage)?;
                }
                tx.commit().map_err(IncidentError::storage)
            })
            .await
            .map_err(IncidentError::storage)?
        })
    }

    fn load_early(&self) -> Result<Vec<EarlyResolve>, IncidentError> {
        let tx = self.db.begin_read().map_err(IncidentError::storage)?;
        let table = tx.open_table(EARLY).map_err(IncidentError::storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(IncidentError::storage)? {
            let (k, v) = row.map_err(IncidentError::storage)?;
            let r = serde_json::from_slice(v.value()).map_err(|source| {
                IncidentError::CorruptEarly {
                    key: k.value().to_owned(),
                    source,
                }
            })?;
            out.push(r);
        }
        Ok(out)
    }

    fn save_early(&self, change: &Change) -> BoxFuture<'static, Result<(), IncidentError>> {
        let db = Arc::clone(&self.db);
        let delete = change.delete.clone();
        let put = change
            .put
            .as_ref()
            .map(|r| serde_json::to_vec(r).map(|b| (r.key.clone(), b)));
        Box::pin(async move {
            let put = put
                .transpose()
                .map_err(|source| IncidentError::CorruptEarly {
                    key: String::new(),
                    source,
                })?;
            tokio::task::spawn_blocking(move || {
                let tx = db.begin_write().map_err(IncidentError::storage)?;
                {
                    let mut t = tx.open_table(EARLY).map_err(IncidentError::storage)?;
                    for k in &delete {
                        t.remove(k.as_str()).map_err(IncidentError::storage)?;
                    }
                    if let Some((k, b)) = &put {
                        t.insert(k.as_str(), b.as_slice())
                            .map_err(IncidentError::storage)?;
                    }
                }
                tx.commit().map_err(IncidentError::storage)
            })
            .await
            .map_err(IncidentError::storage)?
        })
    }
}
