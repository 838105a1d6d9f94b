//! One group commit of the PostgreSQL queue's writer: dedup keys, new alerts and saves in one
//! transaction, in as few round trips to the server as the work allows.
//!
//! - The statements are prepared once per connection ([`Stmts`]): a statement given as text
//!   costs a round trip of its own to be parsed before it runs.
//! - Alert ids come from a pool fetched from the shared sequence ahead of need ([`IdPool`]),
//!   not with a query per commit. Ids stay unique across hosts; an id fetched and never used
//!   (a crash) is skipped, as a sequence value is after any rollback.
//! - Statements that do not wait on each other's results are pipelined: `BEGIN`, the dedup
//!   claim and the saves go out together; the alert insert and `COMMIT` go out together. A
//!   batch without dedup keys (new alerts, saves or both) is one round trip: all of it,
//!   `BEGIN` to `COMMIT`, goes out together. A failed statement fails the batch (the writer
//!   then drops the connection, so the server rolls the transaction back), even where the
//!   `COMMIT` sent after it answered.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tokio_postgres::{Client, Statement};

use super::{
    Core, PgError, lease_ms,
    writer::{NewAlert, Pending},
};
use crate::queue::Taken;

/// Ids fetched from the sequence at a time, at least.
const ID_BATCH: usize = 256;

/// The writer's statements, prepared on its connection.
pub(super) struct Stmts {
    ids: Statement,
    claim: Statement,
    read_keys: Statement,
    insert: Statement,
    save: Statement,
}

impl Stmts {
    pub(super) async fn prepare(client: &Client) -> Result<Self, PgError> {
        let p = |sql| client.prepare(sql);
        let (ids, claim, read_keys, insert, save) = futures::try_join!(
            p("SELECT nextval('ab_alert_ids') FROM generate_series(1, $1::int8)"),
            p("INSERT INTO ab_dedup (source, dedup_key, alert_id, accepted_ms)
               SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
               ON CONFLICT (source, dedup_key) DO UPDATE
                 SET alert_id = EXCLUDED.alert_id, accepted_ms = EXCLUDED.accepted_ms
                 WHERE ab_dedup.accepted_ms <= EXCLUDED.accepted_ms - $5
               RETURNING alert_id"),
            p("SELECT d.source, d.dedup_key, d.alert_id FROM ab_dedup d
               JOIN unnest($1::text[], $2::text[]) AS u(source, dedup_key)
                 ON d.source = u.source AND d.dedup_key = u.dedup_key"),
            p("INSERT INTO ab_alerts (id, source, accepted_ms, owner, lease_until, doc)
               SELECT u.id, u.source, u.acc, $5, now() + $6::float8 * interval '1 millisecond', u.doc
               FROM unnest($1::int8[], $2::text[], $3::int8[], $4::text[]) AS u(id, source, acc, doc)"),
            p("UPDATE ab_alerts a SET doc = u.doc, finished = u.fin
               FROM unnest($1::int8[], $2::text[], $3::bool[]) AS u(id, doc, fin)
               WHERE a.id = u.id AND a.owner = $4
               RETURNING a.id"),
        )
        .map_err(PgError::query("prepare the queue's statements"))?;
        Ok(Self {
            ids,
            claim,
            read_keys,
            insert,
            save,
        })
    }
}

/// Alert ids fetched from the shared sequence and not used yet, ascending.
#[derive(Default)]
pub(super) struct IdPool(VecDeque<i64>);

impl IdPool {
    /// `n` ids, fetching more from the sequence if the pool holds fewer.
    async fn take(&mut self, client: &Client, st: &Stmts, n: usize) -> Result<Vec<i64>, PgError> {
        if self.0.len() < n {
            let want = n.max(ID_BATCH) as i64;
            let rows = client
                .query(&st.ids, &[&want])
                .await
                .map_err(PgError::query("number new alerts"))?;
            self.0.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        Ok(self.0.drain(..n.min(self.0.len())).collect())
    }
}

/// What a committed transaction did.
pub(super) struct Applied {
    /// Per new alert, in order.
    pub taken: Vec<Taken>,
    /// Saved alerts this node no longer owns: not written.
    pub fenced: Vec<i64>,
}

/// One transaction: dedup keys, new alerts and saves. `stored` gets the ids of the alerts it
/// inserts before they are sent (if it fails, some of them may have committed).
pub(super) async fn apply(
    client: &Client,
    st: &Stmts,
    pool: &mut IdPool,
    core: &Core,
    new: &[NewAlert],
    saves: &BTreeMap<i64, Pending>,
    stored: &mut Vec<i64>,
) -> Result<Applied, PgError> {
    let node = &core.settings.node;
    let ids = pool.take(client, st, new.len()).await?;
    // Before the rows can be seen: adoption must not take what this process hands on itself.
    if let Some(&lowest) = ids.iter().min() {
        core.first_own
            .fetch_min(lowest, std::sync::atomic::Ordering::AcqRel);
    }
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
    // Sorted, so that hosts committing overlapping keys lock them in the same order.
    let mut keyed: Vec<(&str, &str, usize)> = first.iter().map(|(&(s, k), &i)| (s, k, i)).collect();
    keyed.sort_unstable();
    let k_sources: Vec<&str> = keyed.iter().map(|k| k.0).collect();
    let k_keys: Vec<&str> = keyed.iter().map(|k| k.1).collect();
    let k_ids: Vec<i64> = keyed.iter().map(|k| ids[k.2]).collect();
    let k_accepted: Vec<i64> = keyed.iter().map(|k| new[k.2].alert.accepted_ms).collect();
    let s_ids: Vec<i64> = saves.keys().copied().collect();
    let s_docs: Vec<&str> = saves.values().map(|p| p.json.as_str()).collect();
    let s_fin: Vec<bool> = saves.values().map(|p| p.finished).collect();

    let save = async {
        if s_ids.is_empty() {
            return Ok(Vec::new());
        }
        client
            .query(&st.save, &[&s_ids, &s_docs, &s_fin, node])
            .await
    };

    if keyed.is_empty() {
        // No dedup key to claim: every alert is new, and the whole transaction goes in one
        // round trip (BEGIN, saves, insert, COMMIT, pipelined in this order).
        let ins = Inserts::plan(new, &ids, &dup_of, &HashMap::new());
        stored.clone_from(&ins.ids);
        let (begun, written, inserted, committed) = futures::join!(
            client.batch_execute("BEGIN"),
            save,
            ins.run(client, st, core),
            client.batch_execute("COMMIT")
        );
        begun.map_err(PgError::query("begin a transaction"))?;
        let written = written.map_err(PgError::query("record outcomes"))?;
        inserted.map_err(PgError::query("store new alerts"))?;
        committed.map_err(PgError::query("commit"))?;
        return Ok(Applied {
            taken: ins.taken,
            fenced: fenced(s_ids, &written),
        });
    }

    // Round 1, pipelined (sent in this order on the one connection): BEGIN, claim, saves.
    let begin = client.batch_execute("BEGIN");
    let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&k_sources, &k_keys, &k_ids, &k_accepted, &window];
    let claim = client.query(&st.claim, &claim_params);
    let (begun, won, written) = futures::join!(begin, claim, save);
    begun.map_err(PgError::query("begin a transaction"))?;
    let won = won.map_err(PgError::query("record dedup keys"))?;
    let written = written.map_err(PgError::query("record outcomes"))?;

    // Alerts whose key was seen within the window (by any host): the first alert's id.
    let mut seen: HashMap<usize, i64> = HashMap::new();
    let won: HashSet<i64> = won.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&(&str, &str, usize)> =
        keyed.iter().filter(|k| !won.contains(&ids[k.2])).collect();
    if !lost.is_empty() {
        let sources: Vec<&str> = lost.iter().map(|k| k.0).collect();
        let keys: Vec<&str> = lost.iter().map(|k| k.1).collect();
        let rows = client
            .query(&st.read_keys, &[&sources, &keys])
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
    let ins = Inserts::plan(new, &ids, &dup_of, &seen);
    stored.clone_from(&ins.ids);

    // Round 2, pipelined: the new alerts and COMMIT. (After a failed insert the server
    // answers the COMMIT with a rollback, not an error: the insert's error decides.)
    let (inserted, committed) =
        futures::join!(ins.run(client, st, core), client.batch_execute("COMMIT"));
    inserted.map_err(PgError::query("store new alerts"))?;
    committed.map_err(PgError::query("commit"))?;
    Ok(Applied {
        taken: ins.taken,
        fenced: fenced(s_ids, &written),
    })
}

/// Saved alerts the `UPDATE` did not write (`written` holds the ids it returned): fenced.
fn fenced(saved: Vec<i64>, written: &[tokio_postgres::Row]) -> Vec<i64> {
    let written: HashSet<i64> = written.iter().map(|r| r.get(0)).collect();
    saved
        .into_iter()
        .filter(|id| !written.contains(id))
        .collect()
}

/// The new alerts of a batch that are stored (not duplicates), as the insert's arrays, and
/// what each enqueue is answered.
struct Inserts<'a> {
    taken: Vec<Taken>,
    ids: Vec<i64>,
    sources: Vec<&'a str>,
    accepted: Vec<i64>,
    docs: Vec<&'a str>,
}

impl<'a> Inserts<'a> {
    /// `dup_of`: the earlier alert of the batch with the same key; `seen`: the alert id a key
    /// seen within the window (by any host) belongs to.
    fn plan(
        new: &'a [NewAlert],
        ids: &[i64],
        dup_of: &[Option<usize>],
        seen: &HashMap<usize, i64>,
    ) -> Self {
        let mut ins = Self {
            taken: Vec::with_capacity(new.len()),
            ids: Vec::with_capacity(new.len()),
            sources: Vec::with_capacity(new.len()),
            accepted: Vec::with_capacity(new.len()),
            docs: Vec::with_capacity(new.len()),
        };
        for (i, n) in new.iter().enumerate() {
            let first_id = dup_of[i]
                .map(|j| seen.get(&j).copied().unwrap_or(ids[j]))
                .or_else(|| seen.get(&i).copied());
            match first_id {
                Some(id) => ins.taken.push(Taken {
                    id: id as u64,
                    duplicate: true,
                }),
                None => {
                    ins.taken.push(Taken {
                        id: ids[i] as u64,
                        duplicate: false,
                    });
                    ins.ids.push(ids[i]);
                    ins.sources.push(n.alert.source.as_str());
                    ins.accepted.push(n.alert.accepted_ms);
                    ins.docs.push(n.json.as_str());
                }
            }
        }
        ins
    }

    /// The insert (nothing if every alert was a duplicate).
    async fn run(
        &self,
        client: &Client,
        st: &Stmts,
        core: &Core,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        client
            .execute(
                &st.insert,
                &[
                    &self.ids,
                    &self.sources,
                    &self.accepted,
                    &self.docs,
                    &core.settings.node,
                    &lease_ms(&core.settings),
                ],
            )
            .await
    }
}
