//! `queue export|import` on PostgreSQL: every alert row out (ids ascending), or an export into
//! an empty database in one transaction, ids kept, the id sequence moved past them and the
//! dedup keys of alerts within the window rebuilt. Imported unfinished alerts carry expired
//! leases, so the first host to start takes them up.

use super::{PgError, PgSettings, connect, decode, schema};
use crate::{
    model::{StoredAlert, now_ms},
    queue::transfer::TransferError,
};

/// Alerts per insert statement.
const CHUNK: usize = 500;

/// Every alert in the database, ids ascending; changes nothing (an empty database has none).
pub async fn export(settings: &PgSettings) -> Result<Vec<StoredAlert>, TransferError> {
    let client = connect(&settings.url).await.map_err(into_queue)?;
    if schema::state(&client).await.map_err(into_queue)?.current == 0 {
        return Ok(Vec::new());
    }
    let rows = client
        .query("SELECT id, doc FROM ab_alerts ORDER BY id", &[])
        .await
        .map_err(PgError::query("read the alerts"))
        .map_err(into_queue)?;
    rows.iter()
        .map(|r| decode(r.get(0), r.get(1)).map_err(TransferError::from))
        .collect()
}

/// Writes `alerts` into the (empty) database, migrating it first; returns the dedup keys
/// written.
pub async fn import(
    settings: &PgSettings,
    alerts: &[StoredAlert],
    window_ms: i64,
) -> Result<usize, TransferError> {
    let mut client = connect(&settings.url).await.map_err(into_queue)?;
    schema::migrate(&mut client).await.map_err(into_queue)?;
    let q = |what| move |e| into_queue(PgError::query(what)(e));
    let txn = client.transaction().await.map_err(q("begin"))?;
    txn.batch_execute("LOCK TABLE ab_alerts, ab_dedup IN EXCLUSIVE MODE")
        .await
        .map_err(q("lock the tables"))?;
    let held: i64 = txn
        .query_one("SELECT count(*) FROM ab_alerts", &[])
        .await
        .map_err(q("count the alerts"))?
        .get(0);
    if held > 0 {
        // Rolled back here, not when dropped: the lock ends before this returns.
        txn.rollback().await.map_err(q("roll back"))?;
        return Err(TransferError::NotEmpty(held as u64));
    }
    let cutoff = now_ms() - window_ms;
    let mut seen = std::collections::HashSet::new();
    let mut keys = 0;
    for chunk in alerts.chunks(CHUNK) {
        let ids: Vec<i64> = chunk.iter().map(|a| a.id as i64).collect();
        let sources: Vec<&str> = chunk.iter().map(|a| a.source.as_str()).collect();
        let accepted: Vec<i64> = chunk.iter().map(|a| a.accepted_ms).collect();
        let finished: Vec<bool> = chunk.iter().map(StoredAlert::is_finished).collect();
        let docs = chunk
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TransferError::Queue(crate::queue::QueueError::storage(e)))?;
        txn.execute(
            "INSERT INTO ab_alerts (id, source, accepted_ms, finished, owner, lease_until, doc)
             SELECT u.id, u.source, u.acc, u.fin, $5, now(), u.doc
             FROM unnest($1::int8[], $2::text[], $3::int8[], $4::bool[], $6::text[])
               AS u(id, source, acc, fin, doc)",
            &[&ids, &sources, &accepted, &finished, &settings.node, &docs],
        )
        .await
        .map_err(q("store the alerts"))?;
        let mut k_sources = Vec::new();
        let mut k_keys = Vec::new();
        let mut k_ids = Vec::new();
        let mut k_acc = Vec::new();
        for a in chunk {
            if let Some(key) = a.alert.dedup_key.as_deref()
                && a.accepted_ms >= cutoff
                && seen.insert((a.source.as_str(), key))
            {
                k_sources.push(a.source.as_str());
                k_keys.push(key);
                k_ids.push(a.id as i64);
                k_acc.push(a.accepted_ms);
            }
        }
        if !k_ids.is_empty() {
            keys += txn
                .execute(
                    "INSERT INTO ab_dedup (source, dedup_key, alert_id, accepted_ms)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])",
                    &[&k_sources, &k_keys, &k_ids, &k_acc],
                )
                .await
                .map_err(q("store the dedup keys"))? as usize;
        }
    }
    if let Some(last) = alerts.last() {
        txn.execute("SELECT setval('ab_alert_ids', $1)", &[&(last.id as i64)])
            .await
            .map_err(q("move the id sequence"))?;
    }
    txn.commit().await.map_err(q("commit"))?;
    Ok(keys)
}

fn into_queue(e: PgError) -> TransferError {
    TransferError::Queue(e.into())
}
