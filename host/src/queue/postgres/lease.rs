//! The lease task: renews this node's claim on the alerts it delivers and takes over those of
//! hosts whose lease ran out (a host that died or lost the database), handing them to this
//! host's dispatch through the queue's [`OnCommit`](crate::queue::OnCommit).
//!
//! Every alert row carries `owner` and `lease_until` (the database's clock, so hosts' clocks
//! need not agree), written as the claim's time plus the lease `L` (`[queue] lease_ms`) by
//! whoever claims it (the writer's insert, a take-up, a renewal). `lease_until` is the bound:
//! by then a dead owner's row is another host's.
//!
//! - A row is **stale** once less than a quarter lease of it is left (its owner has not
//!   renewed it for three quarters of a lease). Other hosts take stale rows over in batches with
//!   `FOR UPDATE SKIP LOCKED`, so two survivors never take the same alert.
//! - A survivor looks every eighth of a lease, and also wakes when the earliest other host's
//!   row goes stale (it asks the database when that is). A dead host's work is thus taken over
//!   three quarters of a lease after its last renewal, at most seven eighths (a missed wake),
//!   within the lease.
//! - The owner renews a row once less than five eighths of a lease of it is left, on a tick
//!   every eighth: a live host's row still has at least a quarter lease (2.5 s at the default
//!   10 s) before it goes stale when renewed. That is the margin a live host keeps against
//!   scheduling delays and a slow database; each row is rewritten about every three eighths of
//!   a lease while it is unfinished.

use std::{sync::Arc, time::Duration};

use tokio_postgres::Client;

use super::{Core, PgError, connect, lease_ms};

/// Alerts claimed per statement.
const CLAIM_BATCH: i64 = 256;
/// The shortest wait between rounds (for very short test leases).
const MIN_TICK: Duration = Duration::from_millis(10);
/// Waking this much after a row goes stale makes sure the database sees it stale.
const WAKE_LATE: Duration = Duration::from_millis(5);

/// The lease task's timing, from the configured lease.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Timing {
    /// A row with less than this left (ms) is stale: other hosts take it over.
    stale_ms: f64,
    /// A row of this node's with less than this left (ms) is renewed.
    renew_ms: f64,
    /// The longest wait between rounds.
    tick: Duration,
}

impl Timing {
    fn of(lease: Duration) -> Self {
        let ms = lease.as_secs_f64() * 1000.0;
        Self {
            stale_ms: ms / 4.0,
            renew_ms: ms * 5.0 / 8.0,
            tick: (lease / 8).max(MIN_TICK),
        }
    }

    /// How long to wait for the next round: a tick, or less if another host's row goes stale
    /// sooner (`next_stale`: how long until it does, as the database saw it).
    fn wait(&self, next_stale: Option<Duration>) -> Duration {
        next_stale.map_or(self.tick, |d| (d + WAKE_LATE).clamp(MIN_TICK, self.tick))
    }
}

/// Runs until the queue closes.
pub(super) async fn run(core: Arc<Core>) {
    let timing = Timing::of(core.settings.lease);
    let mut wait = timing.tick;
    let mut client: Option<Client> = None;
    loop {
        tokio::select! {
            () = core.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = timing.tick;
        if client.as_ref().is_none_or(Client::is_closed) {
            // Bounded: a server that takes the connection and never answers (one coming up
            // under load) must not hold up renewals and take-overs for good.
            let bound = core.settings.lease.max(Duration::from_secs(1));
            let connected = tokio::time::timeout(bound, connect(&core.settings.url))
                .await
                .unwrap_or(Err(PgError::Timeout(bound)));
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
            once(&core, c, &timing),
        )
        .await;
        match round {
            Ok(Ok(next_stale)) => wait = timing.wait(next_stale),
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

/// One round: take up this node's own work if not yet (after a start with the database down),
/// renew, claim what went stale; answers how long until another host's next row goes stale.
async fn once(core: &Core, client: &Client, t: &Timing) -> Result<Option<Duration>, PgError> {
    // Only once the schema exists (the writer migrates when it connects).
    if core.fault.unavailable().is_some() {
        return Ok(None);
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
    let node = &core.settings.node;
    let lease = lease_ms(&core.settings);
    client
        .execute(
            // Rows the writer holds are skipped (renewed next round), so renewal never waits on
            // a save nor deadlocks with one.
            "UPDATE ab_alerts SET lease_until = now() + $2::float8 * interval '1 millisecond'
             WHERE id IN (
                SELECT id FROM ab_alerts
                WHERE owner = $1 AND NOT finished
                  AND lease_until < now() + $3::float8 * interval '1 millisecond'
                FOR UPDATE SKIP LOCKED)",
            &[node, &lease, &t.renew_ms],
        )
        .await
        .map_err(PgError::query("renew leases"))?;
    loop {
        let rows = client
            .query(
                "WITH stale AS (
                    SELECT id, owner FROM ab_alerts
                    WHERE NOT finished AND owner <> $1
                      AND lease_until < now() + $4::float8 * interval '1 millisecond'
                    ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 UPDATE ab_alerts a SET owner = $1, lease_until = now() + $2::float8 * interval '1 millisecond'
                 FROM stale s WHERE a.id = s.id
                 RETURNING a.id, a.doc, s.owner",
                &[node, &lease, &CLAIM_BATCH, &t.stale_ms],
            )
            .await
            .map_err(PgError::query("take over stale leases"))?;
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
    let next: Option<f64> = client
        .query_one(
            "SELECT (extract(epoch FROM min(lease_until) - now()) * 1000)::float8
                    - $2::float8
             FROM ab_alerts WHERE NOT finished AND owner <> $1",
            &[node, &t.stale_ms],
        )
        .await
        .map_err(PgError::query("read when the next lease goes stale"))?
        .get(0);
    Ok(next.map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_before_the_lease_ends_and_renewed_a_quarter_lease_before_stale() {
        let t = Timing::of(Duration::from_secs(10));
        assert_eq!(t.stale_ms, 2500.0);
        assert_eq!(t.tick, Duration::from_millis(1250));
        // Taken over at most stale + a tick after the last renewal: within the lease.
        assert!(10_000.0 - t.stale_ms + t.tick.as_secs_f64() * 1000.0 < 10_000.0);
        // Renewed with at least a quarter lease before it goes stale, though a tick late.
        let margin = t.renew_ms - t.tick.as_secs_f64() * 1000.0 - t.stale_ms;
        assert_eq!(margin, 2500.0);
        // A wake for a row going stale sooner than a tick; never longer than a tick.
        assert_eq!(
            t.wait(Some(Duration::from_millis(300))),
            Duration::from_millis(305)
        );
        assert_eq!(t.wait(Some(Duration::from_secs(60))), t.tick);
        assert_eq!(t.wait(Some(Duration::ZERO)), MIN_TICK);
        assert_eq!(t.wait(None), t.tick);
    }
}
