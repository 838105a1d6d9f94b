//! The lease task: renews this node's claim on the alerts it delivers and takes over those of
//! hosts whose lease ran out (a host that died or lost the database), handing them to this
//! host's dispatch through the queue's [`OnCommit`](crate::queue::OnCommit).
//!
//! Every alert row carries `owner` and `lease_until` (the database's clock, so hosts' clocks
//! need not agree). A tick every quarter of the lease renews this node's unfinished rows and
//! claims expired ones in batches with `FOR UPDATE SKIP LOCKED`, so two survivors never take
//! the same alert: a dead host's work is taken over at most a lease and a quarter after its
//! last renewal.

use std::{sync::Arc, time::Duration};

use tokio_postgres::Client;

use super::{Core, PgError, connect, lease_ms};

/// Alerts claimed per statement.
const CLAIM_BATCH: i64 = 256;
/// The shortest tick (for very short test leases).
const MIN_TICK: Duration = Duration::from_millis(50);

/// Runs until the queue closes.
pub(super) async fn run(core: Arc<Core>) {
    let tick = (core.settings.lease / 4).max(MIN_TICK);
    let mut client: Option<Client> = None;
    loop {
        tokio::select! {
            () = core.stop.cancelled() => break,
            () = tokio::time::sleep(tick) => {}
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            // Bounded: a server that takes the connection and never answers (one coming up
            // under load) must not hold up renewals and take-overs for good.
            let wait = core.settings.lease.max(Duration::from_secs(1));
            let connected = tokio::time::timeout(wait, connect(&core.settings.url))
                .await
                .unwrap_or(Err(PgError::Timeout(wait)));
            client = match connected {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(error = %crate::error_chain(&e), "Lease task cannot reach PostgreSQL; retrying.");
                    continue;
                }
            };
        }
        let Some(c) = client.as_ref() else { continue };
        let round = tokio::time::timeout(
            core.settings.lease.max(Duration::from_secs(1)),
            once(&core, c),
        )
        .await;
        match round {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error_chain(&e), "Lease renewal or takeover failed; retrying.");
                client = None;
            }
            Err(_) => {
                tracing::warn!("Lease renewal or takeover took longer than the lease; retrying.");
                client = None;
            }
        }
    }
}

/// One tick: take up this node's own work if not yet (after a start with the database down),
/// renew, then claim what expired.
async fn once(core: &Core, client: &Client) -> Result<(), PgError> {
    // Only once the schema exists (the writer migrates when it connects).
    if core.fault.unavailable().is_some() {
        return Ok(());
    }
    if let Some(alerts) = core.adopt(client).await? {
        if !alerts.is_empty() {
            tracing::info!(
                count = alerts.len(),
                "Taking up this host's unfinished alerts now the database is back."
            );
        }
        core.hand_on(alerts);
    }
    client
        .execute(
            // Only rows past half their lease: each is rewritten every half lease, not every
            // tick, and still has at least a quarter of it left when renewed. Rows the writer
            // holds are skipped (renewed next tick), so renewal never waits on a save nor
            // deadlocks with one.
            "UPDATE ab_alerts SET lease_until = now() + $2::float8 * interval '1 millisecond'
             WHERE id IN (
                SELECT id FROM ab_alerts
                WHERE owner = $1 AND NOT finished
                  AND lease_until < now() + $2::float8 / 2 * interval '1 millisecond'
                FOR UPDATE SKIP LOCKED)",
            &[&core.settings.node, &lease_ms(&core.settings)],
        )
        .await
        .map_err(PgError::query("renew leases"))?;
    loop {
        let rows = client
            .query(
                "WITH expired AS (
                    SELECT id, owner FROM ab_alerts
                    WHERE NOT finished AND lease_until < now() AND owner <> $1
                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE ab_alerts a SET owner = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                 FROM expired e WHERE a.id = e.id
                 RETURNING a.id, a.doc, e.owner",
                &[&core.settings.node, &lease_ms(&core.settings), &CLAIM_BATCH],
            )
            .await
            .map_err(PgError::query("take over expired leases"))?;
        if rows.is_empty() {
            break;
        }
        let mut from: Vec<&str> = rows.iter().map(|r| r.get::<_, &str>(2)).collect();
        from.sort_unstable();
        from.dedup();
        let mut alerts = core.with_origin(&rows);
        alerts.sort_by_key(|a| a.0.id);
        tracing::warn!(count = alerts.len(), from = ?from, "Took over the unfinished alerts of hosts whose lease ran out.");
        core.hand_on(alerts);
        if (rows.len() as i64) < CLAIM_BATCH {
            break;
        }
    }
    Ok(())
}
