//! The PostgreSQL queue's writer task: every pending enqueue and save in one transaction (group
//! commit), answered after the commit; pruning; and what happens when the database fails.
//!
//! A save of outcomes after a send (`reply` none, [`crate::queue::Queue::save_outcome`]) gets no
//! transaction of its own: it waits for the next one that must happen anyway (an enqueue, a
//! `sending` mark), and at the latest for [`HOLD_OUTCOMES`]. Nobody waits for it; it is kept
//! through a fault like any save, and every later command commits with or after it (it is
//! merged, newest per alert, into the next transaction's saves). An outcome of an alert another
//! host took over is not written (the fence), and only logged: the dispatcher learns it at its
//! next save of that alert.
//!
//! A failed transaction answers its enqueues "queue unavailable, try later" — nothing in it was
//! acknowledged — keeps its saves, drops the connection and marks the queue down. The writer
//! then reconnects with backoff (migrating if needed); once back, the kept saves are written
//! first, and any alert of the failed batch that did commit (the connection broke after the
//! COMMIT was sent) is handed on like any other.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use super::{
    Core, PgError,
    apply::{IdPool, Stmts, apply},
    connect_as_node, decode_rows,
};
use crate::{
    model::{StoredAlert, now_ms},
    queue::{Enqueued, Origin, QueueError, Taken, shared::HOLD_OUTCOMES},
};

/// Commands at most per transaction; more wait for the next one.
const MAX_BATCH: usize = 4096;
/// How long one transaction may take before the connection is given up as broken.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often old history and dedup keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// First and longest wait between reconnect attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Work for the writer. Documents arrive encoded (on the callers' threads).
pub(super) enum Cmd {
    Enqueue {
        alert: Box<StoredAlert>,
        json: String,
        reply: oneshot::Sender<Result<Taken, QueueError>>,
    },
    /// With no `reply`, an outcome: it may wait for the next transaction.
    Save {
        id: i64,
        finished: bool,
        json: String,
        reply: Option<oneshot::Sender<Result<(), QueueError>>>,
    },
}

impl Cmd {
    /// An outcome that may wait for the next transaction.
    fn may_wait(&self) -> bool {
        matches!(self, Self::Save { reply: None, .. })
    }
}

/// A save waiting to be written: the newest document of an alert.
pub(super) struct Pending {
    pub finished: bool,
    pub json: String,
    replies: Vec<oneshot::Sender<Result<(), QueueError>>>,
}

pub(super) struct NewAlert {
    pub alert: Box<StoredAlert>,
    pub json: String,
    reply: oneshot::Sender<Result<Taken, QueueError>>,
}

pub(super) struct Writer {
    core: Arc<Core>,
    client: Option<Client>,
    /// The writer's statements on `client`, prepared at its first commit.
    stmts: Option<Stmts>,
    /// Alert ids fetched ahead from the shared sequence.
    ids: IdPool,
    /// Saves not yet written (held outcomes, or the database failed); newest per alert.
    unsaved: BTreeMap<i64, Pending>,
    /// When the held outcomes in `unsaved` must be committed at the latest.
    hold_until: Option<Instant>,
    /// Ids of new alerts in a transaction that failed: some may have committed.
    uncertain: Vec<i64>,
    backoff: Backoff,
}

impl Writer {
    pub(super) fn new(core: Arc<Core>, client: Option<Client>) -> Self {
        Self {
            core,
            client,
            stmts: None,
            ids: IdPool::default(),
            unsaved: BTreeMap::new(),
            hold_until: None,
            uncertain: Vec::new(),
            backoff: Backoff::new(RECONNECT_FIRST, RECONNECT_MAX),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut last_prune = Instant::now();
        loop {
            let first = match self.core.fault.retry_at() {
                Some(at) => tokio::select! {
                    cmd = rx.recv() => cmd,
                    () = tokio::time::sleep_until(at.into()) => {
                        self.reconnect().await;
                        continue;
                    }
                },
                None => {
                    let prune_at = last_prune + PRUNE_EVERY;
                    let wake = self.hold_until.map_or(prune_at, |h| h.min(prune_at));
                    tokio::select! {
                        cmd = rx.recv() => cmd,
                        () = tokio::time::sleep_until(wake.into()) => {
                            if self.hold_until.is_some_and(|h| h <= Instant::now()) {
                                self.commit(Vec::new()).await;
                            } else {
                                last_prune = Instant::now();
                                self.prune().await;
                            }
                            continue;
                        }
                    }
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            // Outcomes alone wait for the next transaction (or the hold time).
            if batch.iter().all(Cmd::may_wait) && self.core.fault.retry_at().is_none() {
                self.hold(batch);
                continue;
            }
            self.commit(batch).await;
        }
        if !self.unsaved.is_empty() && self.core.fault.retry_at().is_none() {
            self.commit(Vec::new()).await;
        }
        if !self.unsaved.is_empty() {
            tracing::error!(
                alerts = self.unsaved.len(),
                "Queue closed with outcomes it could not record; those alerts are redone by the host that takes them up."
            );
        }
        self.release().await;
    }

    /// On a clean stop: this node's leases end now, so another host takes up what it leaves
    /// unfinished without waiting for them to run out; and its node name is free at once.
    async fn release(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let released = client
            .execute(
                "UPDATE ab_alerts SET lease_until = now() WHERE owner = $1 AND NOT finished",
                &[&self.core.settings.node],
            )
            .await;
        match released {
            Ok(n) if n > 0 => {
                tracing::info!(
                    alerts = n,
                    "Leases released: another host takes up the unfinished alerts."
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Could not release this host's leases; they run out by themselves.")
            }
        }
        // The node name too, now rather than when the server notices the connection closed.
        let _ = client
            .batch_execute("SELECT pg_advisory_unlock_all()")
            .await;
    }

    /// Keeps outcomes for the next transaction, due within the hold time.
    fn hold(&mut self, outcomes: Vec<Cmd>) {
        let mut new = Vec::new();
        merge(outcomes, &mut self.unsaved, &mut new);
        debug_assert!(new.is_empty(), "only saves are held");
        self.hold_until
            .get_or_insert_with(|| Instant::now() + HOLD_OUTCOMES);
    }

    /// Applies a batch (with the kept saves) in one transaction and answers every command.
    async fn commit(&mut self, batch: Vec<Cmd>) {
        let mut new = Vec::new();
        let mut saves = std::mem::take(&mut self.unsaved);
        self.hold_until = None;
        merge(batch, &mut saves, &mut new);
        if let Some(e) = self.core.fault.unavailable() {
            self.refuse(new, saves, &e);
            return;
        }
        // Ids of the new alerts the transaction inserts, known if it fails.
        let mut stored = Vec::new();
        let result = match self.client.as_ref() {
            None => Err(PgError::Timeout(Duration::ZERO)),
            Some(client) => {
                let (stmts, ids, core) = (&mut self.stmts, &mut self.ids, &self.core);
                let once = async {
                    if stmts.is_none() {
                        *stmts = Some(Stmts::prepare(client).await?);
                    }
                    let Some(st) = stmts.as_ref() else {
                        return Err(PgError::Timeout(Duration::ZERO));
                    };
                    apply(client, st, ids, core, &new, &saves, &mut stored).await
                };
                tokio::time::timeout(COMMIT_TIMEOUT, once)
                    .await
                    .unwrap_or(Err(PgError::Timeout(COMMIT_TIMEOUT)))
            }
        };
        match result {
            Ok(applied) => {
                for (id, p) in saves {
                    let fenced = applied.fenced.contains(&id);
                    if fenced {
                        tracing::debug!(
                            alert = id,
                            "Save not written: another host delivers this alert now."
                        );
                    }
                    for r in p.replies {
                        let _ = r.send(if fenced {
                            Err(QueueError::NotOwner { id: id as u64 })
                        } else {
                            Ok(())
                        });
                    }
                }
                for (n, taken) in new.into_iter().zip(applied.taken) {
                    let mut alert = *n.alert;
                    alert.id = taken.id;
                    (self.core.on_commit)(Enqueued {
                        alert,
                        duplicate: taken.duplicate,
                        origin: Origin::Accepted,
                    });
                    let _ = n.reply.send(Ok(taken));
                }
            }
            Err(e) => {
                let reason = crate::error_chain(&e);
                tracing::error!(error = %reason, commands = new.len() + saves.len(), "Queue transaction failed; nothing in it was acknowledged. The queue is down until it reconnects.");
                self.client = None;
                self.stmts = None;
                let wait = self.backoff.next();
                self.core.fault.set(reason.clone(), Instant::now() + wait);
                self.uncertain.append(&mut stored);
                let refusal = QueueError::Unavailable {
                    reason,
                    retry_after_ms: wait.as_millis().max(1000) as u64,
                };
                self.refuse(new, saves, &refusal);
            }
        }
    }

    /// Answers enqueues with `e`; saves are answered too and kept for the reconnect.
    fn refuse(&mut self, new: Vec<NewAlert>, saves: BTreeMap<i64, Pending>, e: &QueueError) {
        let again = || match e {
            QueueError::Unavailable {
                reason,
                retry_after_ms,
            } => QueueError::Unavailable {
                reason: reason.clone(),
                retry_after_ms: *retry_after_ms,
            },
            _ => QueueError::Closed,
        };
        for n in new {
            let _ = n.reply.send(Err(again()));
        }
        for (id, mut p) in saves {
            for r in p.replies.drain(..) {
                let _ = r.send(Err(again()));
            }
            self.unsaved.insert(id, p);
        }
    }

    /// One attempt to reconnect (and migrate) after a fault. The attempt as a whole — connect,
    /// migrate, take the node name, look up the alerts of a failed transaction — is bounded by
    /// [`COMMIT_TIMEOUT`]: a database that takes the connection and then does not answer (a
    /// lock, a server still coming up) ends the attempt, which says why and is tried again
    /// with backoff. (Unbounded, the writer waited there as long as the database did, tried
    /// nothing more and logged nothing, while the queue answered the old fault's reason.)
    async fn reconnect(&mut self) {
        // Alerts of a failed transaction that did commit: nobody was told they were taken,
        // but they are queued (and this node's), so they are delivered.
        let uncertain = self.uncertain.clone();
        let settings = &self.core.settings;
        // To cut the session's query if the attempt ends in it: the server then ends the
        // session (and frees the node name) instead of finishing the wait for nobody.
        let mut cancel = None;
        let attempt = async {
            let client = connect_as_node(settings).await?;
            cancel = Some(client.cancel_token());
            let committed = if uncertain.is_empty() {
                Vec::new()
            } else {
                let rows = client
                    .query(
                        "SELECT id, doc FROM ab_alerts WHERE id = ANY($1) AND owner = $2 AND NOT finished ORDER BY id",
                        &[&uncertain, &settings.node],
                    )
                    .await
                    .map_err(PgError::query("look for the alerts of the failed transaction"))?;
                decode_rows(&rows)
            };
            Ok::<_, PgError>((client, committed))
        };
        let attempt = tokio::time::timeout(COMMIT_TIMEOUT, attempt).await;
        if attempt.is_err()
            && let Some(token) = cancel
        {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(COMMIT_TIMEOUT, token.cancel_query(NoTls)).await;
            });
        }
        let (client, committed) = match attempt.unwrap_or(Err(PgError::Timeout(COMMIT_TIMEOUT))) {
            Ok(done) => done,
            Err(e) => {
                let wait = self.backoff.next();
                let reason = crate::error_chain(&e);
                tracing::warn!(error = %reason, retry_in_ms = wait.as_millis() as u64, "Queue still unavailable.");
                self.core.fault.set(reason, Instant::now() + wait);
                return;
            }
        };
        self.uncertain.clear();
        self.client = Some(client);
        self.stmts = None;
        self.backoff.reset();
        self.core.fault.clear();
        tracing::info!(
            kept_outcomes = self.unsaved.len(),
            committed_unacknowledged = committed.len(),
            "Queue reconnected; taking alerts again."
        );
        for alert in committed {
            (self.core.on_commit)(Enqueued {
                alert,
                duplicate: false,
                origin: Origin::Accepted,
            });
        }
        // A start with the database down resumed nothing: this node's own unfinished alerts
        // are taken up now (once; the lease task does it on its next tick if this fails).
        if let Some(client) = self.client.as_ref() {
            match tokio::time::timeout(COMMIT_TIMEOUT, self.core.adopt(client)).await {
                Ok(Ok(Some(alerts))) => {
                    if !alerts.is_empty() {
                        tracing::info!(
                            count = alerts.len(),
                            "Taking up this host's unfinished alerts now the database is back."
                        );
                    }
                    self.core.hand_on(alerts);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::error_chain(&e), "Could not take up this host's unfinished alerts yet.")
                }
                Err(_) => {
                    tracing::warn!(
                        "Taking up this host's unfinished alerts took too long; the lease task tries again."
                    )
                }
            }
        }
        if !self.unsaved.is_empty() {
            self.commit(Vec::new()).await;
        }
    }

    /// Drops finished alerts beyond the history size and dedup keys past the window or beyond
    /// the key bound. Every host may run it: the statements are idempotent.
    async fn prune(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let o = &self.core.options;
        let cutoff = now_ms() - o.dedup_window.as_millis() as i64;
        let history = o.history_max_alerts as i64;
        let max_keys = o.dedup_max_keys as i64;
        let pruned = async {
            client
                .execute("DELETE FROM ab_dedup WHERE accepted_ms < $1", &[&cutoff])
                .await?;
            client
                .execute(
                    "DELETE FROM ab_dedup WHERE (source, dedup_key) IN (
                        SELECT source, dedup_key FROM ab_dedup ORDER BY accepted_ms DESC OFFSET $1)",
                    &[&max_keys],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM ab_alerts WHERE id IN (
                        SELECT id FROM ab_alerts WHERE finished ORDER BY id
                        LIMIT greatest((SELECT count(*) FROM ab_alerts) - $1, 0))",
                    &[&history],
                )
                .await?;
            let keys: i64 = client
                .query_one("SELECT count(*) FROM ab_dedup", &[])
                .await?
                .get(0);
            Ok::<_, tokio_postgres::Error>(keys)
        };
        match tokio::time::timeout(COMMIT_TIMEOUT, pruned).await {
            Ok(Ok(keys)) => self.core.metrics.set_dedup_keys(keys as u64),
            Ok(Err(e)) => tracing::warn!(error = %e, "Queue pruning failed; tried again later."),
            Err(_) => tracing::warn!("Queue pruning took too long; tried again later."),
        }
    }
}

/// Sorts a batch into new alerts and saves, a save merged into the alert's pending one (the
/// newest document stands; every reply waits for the transaction that writes it).
fn merge(batch: Vec<Cmd>, saves: &mut BTreeMap<i64, Pending>, new: &mut Vec<NewAlert>) {
    for cmd in batch {
        match cmd {
            Cmd::Enqueue { alert, json, reply } => new.push(NewAlert { alert, json, reply }),
            Cmd::Save {
                id,
                finished,
                json,
                reply,
            } => {
                let p = saves.entry(id).or_insert_with(|| Pending {
                    finished,
                    json: String::new(),
                    replies: Vec::new(),
                });
                p.finished = finished;
                p.json = json;
                p.replies.extend(reply);
            }
        }
    }
}
