//! The PostgreSQL queue's writer task: every pending enqueue and save in one transaction (group
//! commit), answered after the commit; pruning; and what happens when the database fails.
//!
//! A failed transaction answers its enqueues "queue unavailable, try later" — nothing in it was
//! acknowledged — keeps its saves, drops the connection and marks the queue down. The writer
//! then reconnects with backoff (migrating if needed); once back, the kept saves are written
//! first, and any alert of the failed batch that did commit (the connection broke after the
//! COMMIT was sent) is handed on like any other.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls};

use super::{Core, PgError, connect_as_node, decode_rows, lease_ms};
use crate::{
    model::{StoredAlert, now_ms},
    queue::{Enqueued, Origin, QueueError, Taken},
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
    Save {
        id: i64,
        finished: bool,
        json: String,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
}

/// A save waiting to be written: the newest document of an alert.
struct Pending {
    finished: bool,
    json: String,
    replies: Vec<oneshot::Sender<Result<(), QueueError>>>,
}

struct NewAlert {
    alert: Box<StoredAlert>,
    json: String,
    reply: oneshot::Sender<Result<Taken, QueueError>>,
}

pub(super) struct Writer {
    core: Arc<Core>,
    client: Option<Client>,
    /// Saves not yet written (the database failed); newest per alert.
    unsaved: BTreeMap<i64, Pending>,
    /// Ids of new alerts in a transaction that failed: some may have committed.
    uncertain: Vec<i64>,
    backoff: Backoff,
}

impl Writer {
    pub(super) fn new(core: Arc<Core>, client: Option<Client>) -> Self {
        Self {
            core,
            client,
            unsaved: BTreeMap::new(),
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
                None => tokio::select! {
                    cmd = rx.recv() => cmd,
                    () = tokio::time::sleep_until((last_prune + PRUNE_EVERY).into()) => {
                        last_prune = Instant::now();
                        self.prune().await;
                        continue;
                    }
                },
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
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

    /// Applies a batch (with the kept saves) in one transaction and answers every command.
    async fn commit(&mut self, batch: Vec<Cmd>) {
        let mut new = Vec::new();
        let mut saves = std::mem::take(&mut self.unsaved);
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
                    p.replies.push(reply);
                }
            }
        }
        if let Some(e) = self.core.fault.unavailable() {
            self.refuse(new, saves, &e);
            return;
        }
        // Ids of the new alerts the transaction inserts, known if it fails.
        let mut stored = Vec::new();
        let result = match self.client.as_mut() {
            None => Err(PgError::Timeout(Duration::ZERO)),
            Some(client) => {
                match tokio::time::timeout(
                    COMMIT_TIMEOUT,
                    apply(client, &self.core, &new, &saves, &mut stored),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(PgError::Timeout(COMMIT_TIMEOUT)),
                }
            }
        };
        match result {
            Ok(applied) => {
                for (id, p) in saves {
                    let fenced = applied.fenced.contains(&id);
                    if fenced {
                        tracing::debug!(
                            alert = id,
                            "Save refused: another host delivers this alert now."
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

/// What a committed transaction did.
struct Applied {
    /// Per new alert, in order.
    taken: Vec<Taken>,
    /// Saved alerts this node no longer owns: not written.
    fenced: Vec<i64>,
}

/// One transaction: dedup keys, new alerts and saves.
async fn apply(
    client: &mut Client,
    core: &Core,
    new: &[NewAlert],
    saves: &BTreeMap<i64, Pending>,
    stored: &mut Vec<i64>,
) -> Result<Applied, PgError> {
    let node = &core.settings.node;
    let ids: Vec<i64> = if new.is_empty() {
        Vec::new()
    } else {
        client
            .query(
                "SELECT nextval('ab_alert_ids') FROM generate_series(1, $1::int8)",
                &[&(new.len() as i64)],
            )
            .await
            .map_err(PgError::query("number new alerts"))?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    // Before the rows can be seen: adoption must not take what this process hands on itself.
    if let Some(&lowest) = ids.iter().min() {
        core.first_own
            .fetch_min(lowest, std::sync::atomic::Ordering::AcqRel);
    }
    let txn = client
        .transaction()
        .await
        .map_err(PgError::query("begin a transaction"))?;
    // Dedup: the first of each key in the batch claims it; the others are its duplicates.
    let window = core.options.dedup_window.as_millis() as i64;
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    let mut dup_of: Vec<Option<usize>> = vec![None; new.len()];
    for (i, n) in new.iter().enumerate() {
        // A zero window: every alert is new (as with the embedded queue).
        if window == 0 {
            break;
        }
        if let Some(key) = n.alert.alert.dedup_key.as_deref() {
            match first.get(&(n.alert.source.as_str(), key)) {
                Some(&j) => dup_of[i] = Some(j),
                None => {
                    first.insert((n.alert.source.as_str(), key), i);
                }
            }
        }
    }
    // Alerts whose key was seen within the window (by any host): the first alert's id.
    let mut seen: HashMap<usize, i64> = HashMap::new();
    if !first.is_empty() {
        // Sorted, so that hosts committing overlapping keys lock them in the same order.
        let mut keyed: Vec<(&str, &str, usize)> =
            first.iter().map(|(&(s, k), &i)| (s, k, i)).collect();
        keyed.sort_unstable();
        let sources: Vec<&str> = keyed.iter().map(|k| k.0).collect();
        let keys: Vec<&str> = keyed.iter().map(|k| k.1).collect();
        let alert_ids: Vec<i64> = keyed.iter().map(|k| ids[k.2]).collect();
        let accepted: Vec<i64> = keyed.iter().map(|k| new[k.2].alert.accepted_ms).collect();
        let won = txn
            .query(
                "INSERT INTO ab_dedup (source, dedup_key, alert_id, accepted_ms)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                 ON CONFLICT (source, dedup_key) DO UPDATE
                   SET alert_id = EXCLUDED.alert_id, accepted_ms = EXCLUDED.accepted_ms
                   WHERE ab_dedup.accepted_ms <= EXCLUDED.accepted_ms - $5
                 RETURNING alert_id",
                &[&sources, &keys, &alert_ids, &accepted, &window],
            )
            .await
            .map_err(PgError::query("record dedup keys"))?;
        let won: std::collections::HashSet<i64> = won.iter().map(|r| r.get(0)).collect();
        let lost: Vec<&(&str, &str, usize)> =
            keyed.iter().filter(|k| !won.contains(&ids[k.2])).collect();
        if !lost.is_empty() {
            let sources: Vec<&str> = lost.iter().map(|k| k.0).collect();
            let keys: Vec<&str> = lost.iter().map(|k| k.1).collect();
            let rows = txn
                .query(
                    "SELECT d.source, d.dedup_key, d.alert_id FROM ab_dedup d
                     JOIN unnest($1::text[], $2::text[]) AS u(source, dedup_key)
                       ON d.source = u.source AND d.dedup_key = u.dedup_key",
                    &[&sources, &keys],
                )
                .await
                .map_err(PgError::query("read dedup keys"))?;
            let found: HashMap<(&str, &str), i64> = rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            for k in lost {
                // The row was pruned between the two statements: a conflict on a row that
                // vanished at once was an expired key; the alert is new, and its key goes
                // unrecorded (the window had passed anyway).
                if let Some(&id) = found.get(&(k.0, k.1)) {
                    seen.insert(k.2, id);
                }
            }
        }
    }
    let mut taken = Vec::with_capacity(new.len());
    let (mut ins_ids, mut ins_sources, mut ins_acc, mut ins_docs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, n) in new.iter().enumerate() {
        let first_id = dup_of[i]
            .map(|j| seen.get(&j).copied().unwrap_or(ids[j]))
            .or_else(|| seen.get(&i).copied());
        match first_id {
            Some(id) => taken.push(Taken {
                id: id as u64,
                duplicate: true,
            }),
            None => {
                taken.push(Taken {
                    id: ids[i] as u64,
                    duplicate: false,
                });
                ins_ids.push(ids[i]);
                ins_sources.push(n.alert.source.as_str());
                ins_acc.push(n.alert.accepted_ms);
                ins_docs.push(n.json.as_str());
            }
        }
    }
    if !ins_ids.is_empty() {
        stored.clone_from(&ins_ids);
        txn.execute(
            "INSERT INTO ab_alerts (id, source, accepted_ms, owner, lease_until, doc)
             SELECT u.id, u.source, u.acc, $5, now() + $6::float8 * interval '1 millisecond', u.doc
             FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[]) AS u(id, source, acc, doc)",
            &[&ins_ids, &ins_sources, &ins_acc, &ins_docs, node, &lease_ms(&core.settings)],
        )
        .await
        .map_err(PgError::query("store new alerts"))?;
    }
    let mut fenced = Vec::new();
    if !saves.is_empty() {
        let ids: Vec<i64> = saves.keys().copied().collect();
        let docs: Vec<&str> = saves.values().map(|p| p.json.as_str()).collect();
        let fin: Vec<bool> = saves.values().map(|p| p.finished).collect();
        let rows = txn
            .query(
                "UPDATE ab_alerts a SET doc = u.doc, finished = u.fin
                 FROM unnest($1::int8[], $2::text[], $3::bool[]) AS u(id, doc, fin)
                 WHERE a.id = u.id AND a.owner = $4
                 RETURNING a.id",
                &[&ids, &docs, &fin, node],
            )
            .await
            .map_err(PgError::query("record outcomes"))?;
        let written: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        fenced = ids.into_iter().filter(|id| !written.contains(id)).collect();
    }
    txn.commit().await.map_err(PgError::query("commit"))?;
    Ok(Applied { taken, fenced })
}
