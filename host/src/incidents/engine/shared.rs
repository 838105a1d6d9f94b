//! How the engine reads and writes its store: an embedded store through the engine's own
//! copies; a shared one (other hosts change it) read again before each change and written by
//! compare-and-swap, a change made again when another host changed the incident first.

use super::{CONFLICT_TRIES, Engine, State};
use crate::incidents::{
    Incident, IncidentError, IncidentId,
    early::EarlyResolves,
    store::{Query, Versioned},
};

impl Engine {
    /// The incidents `query` names: a shared store's (this host's last copies if the database
    /// cannot be read: logged), else the engine's.
    pub(super) async fn read(&self, query: Query) -> Vec<Incident> {
        if self.inner.shared {
            match self.inner.store.query(query.clone()).await {
                Ok(found) => return found.into_iter().map(|v| v.incident).collect(),
                Err(e) => tracing::warn!(
                    error = %crate::error_chain(&e),
                    "cannot read the incidents; showing this host's last copies"
                ),
            }
        }
        let st = self.inner.state.lock().await;
        query
            .pick(st.incidents.values())
            .into_iter()
            .cloned()
            .collect()
    }

    /// Runs `f` again while another host changed the incident first (a shared store), so the
    /// change is made on the state as it is now.
    pub(super) async fn retry<T, F, Fut>(
        &self,
        what: &'static str,
        mut f: F,
    ) -> Result<T, IncidentError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, IncidentError>>,
    {
        let mut tries = 1;
        loop {
            match f().await {
                Err(e @ (IncidentError::Conflict(_) | IncidentError::KeyTaken(_)))
                    if tries < CONFLICT_TRIES =>
                {
                    tracing::debug!(what, error = %e, "changed by another host first; made again");
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// The incident as it is now: read again from a shared store, else the engine's.
    pub(super) async fn fresh(
        &self,
        st: &mut State,
        id: IncidentId,
    ) -> Result<Incident, IncidentError> {
        if self.inner.shared {
            let found = self.inner.store.query(Query::One(id)).await?;
            let v = found.into_iter().next().ok_or(IncidentError::Unknown(id))?;
            return Ok(remember(st, v));
        }
        st.incidents
            .get(&id.0)
            .cloned()
            .ok_or(IncidentError::Unknown(id))
    }

    /// [`Engine::fresh`], refused if it is resolved.
    pub(super) async fn fresh_open(
        &self,
        st: &mut State,
        id: IncidentId,
    ) -> Result<Incident, IncidentError> {
        let inc = self.fresh(st, id).await?;
        if inc.is_resolved() {
            return Err(IncidentError::AlreadyResolved(id));
        }
        Ok(inc)
    }

    /// The unresolved incident with dedup key `key`, as it is now.
    pub(super) async fn open_by_key(
        &self,
        st: &mut State,
        key: &str,
    ) -> Result<Option<Incident>, IncidentError> {
        let query = Query::OpenByKey(key.to_owned());
        if self.inner.shared {
            let found = self.inner.store.query(query).await?;
            return Ok(found.into_iter().next().map(|v| remember(st, v)));
        }
        Ok(st.incidents.values().find(|i| query.matches(i)).cloned())
    }

    /// A shared store: the remembered resolves as every host left them.
    pub(super) async fn refresh_early(&self, st: &mut State) -> Result<(), IncidentError> {
        if self.inner.shared {
            st.early = EarlyResolves::new(self.inner.store.fetch_early().await?);
        }
        Ok(())
    }

    /// Stores a new incident ([`IncidentError::KeyTaken`]: another host opened one for its
    /// dedup key meanwhile).
    pub(super) async fn create(&self, st: &mut State, inc: Incident) -> Result<(), IncidentError> {
        let version = if self.inner.shared {
            self.inner.store.create(&inc).await?
        } else {
            self.inner.store.save(&inc).await.map(|()| 0)?
        };
        let id = inc.id.0;
        st.next_id = st.next_id.max(id + 1);
        remember(
            st,
            Versioned {
                incident: inc,
                version,
            },
        );
        Ok(())
    }

    /// Stores a change ([`IncidentError::Conflict`]: another host changed it since it was
    /// read).
    pub(super) async fn commit(&self, st: &mut State, inc: &Incident) -> Result<(), IncidentError> {
        let version = if self.inner.shared {
            let expected = st.versions.get(&inc.id.0).copied().unwrap_or(0);
            self.inner.store.save_if(inc, expected).await?
        } else {
            self.inner.store.save(inc).await.map(|()| 0)?
        };
        remember(
            st,
            Versioned {
                incident: inc.clone(),
                version,
            },
        );
        Ok(())
    }
}

/// Keeps `v` as the engine's copy; answers the incident.
pub(super) fn remember(st: &mut State, v: Versioned) -> Incident {
    st.versions.insert(v.incident.id.0, v.version);
    st.incidents.insert(v.incident.id.0, v.incident.clone());
    v.incident
}
