//! `alertbridge queue check|export|import` on the log queue (run with the bridge stopped):
//! check reads the segments without changing them and says what a start would find; export
//! reads every alert; import writes an export into an empty log.

use std::{collections::HashSet, path::Path};

use super::{
    LogQueue,
    format::{self, MAX_FRAME_BODY, Record},
    scan,
    segments::{self, View},
};
use crate::{
    model::{StoredAlert, now_ms},
    queue::{
        CheckReport, QueueError, redb_queue::dedup_hash, shared::decode, store,
        transfer::TransferError,
    },
};

/// The segment numbers of the log in `data_dir`, oldest first (none if it has no folder).
fn numbers(data_dir: &Path) -> Result<Vec<u64>, QueueError> {
    let dir = segments::log_dir(data_dir);
    if dir.exists() {
        segments::list(&dir, false)
    } else {
        Ok(Vec::new())
    }
}

/// Every alert the log holds, ids ascending, read without changing anything; an alert that does
/// not decode is an error (`None`: the folder holds no log).
fn read_all(data_dir: &Path) -> Result<Option<Vec<StoredAlert>>, QueueError> {
    let numbers = numbers(data_dir)?;
    if numbers.is_empty() {
        return Ok(None);
    }
    let read = scan::read_segments(&segments::log_dir(data_dir), &numbers, false)?;
    if let Some(&id) = read.scan.misfits.first() {
        return Err(QueueError::Damaged {
            path: segments::log_dir(data_dir).display().to_string(),
            detail: format!("alert {id}: {}", segments::MISFIT),
        });
    }
    let mut out = Vec::with_capacity(read.scan.docs.len());
    for (&id, &loc) in &read.scan.docs {
        let bytes = View::read(&read.files, loc).map_err(QueueError::storage)?;
        out.push(decode(id, &bytes)?);
    }
    Ok(Some(out))
}

impl LogQueue {
    /// `alertbridge queue check` on the log in `data_dir`: what a start would find (damage, a
    /// torn last write, alerts that do not decode), changing nothing.
    pub fn check(data_dir: &Path) -> Result<CheckReport, QueueError> {
        let mut r = CheckReport::default();
        let dir = segments::log_dir(data_dir);
        let marker = store::read_marker(data_dir)?;
        let numbers = numbers(data_dir)?;
        if numbers.is_empty() {
            match marker {
                Some(id) => r.problems.push(format!(
                    "{} holds no log segment, but {} says this data folder's queue (id {id:016x}) held data",
                    dir.display(),
                    data_dir.join(store::MARKER).display()
                )),
                None => r.facts.push(format!("{}: no queue yet", dir.display())),
            }
            return Ok(r);
        }
        let read = match scan::read_segments(&dir, &numbers, false) {
            Ok(read) => read,
            Err(e) => {
                r.problems.push(crate::error_chain(&e));
                return Ok(r);
            }
        };
        let bytes: u64 = read.sizes.values().sum();
        r.facts.push(format!(
            "{}: {} segment{}, {bytes} bytes, queue id {:016x}",
            dir.display(),
            read.sizes.len(),
            if read.sizes.len() == 1 { "" } else { "s" },
            read.queue_id
        ));
        if marker.is_some_and(|m| m != read.queue_id) {
            r.problems.push(format!(
                "the log is another queue's: {} names queue id {:016x}",
                data_dir.join(store::MARKER).display(),
                marker.unwrap_or_default()
            ));
        }
        if !read.obsolete.is_empty() {
            r.facts.push(format!(
                "{} segment(s) left over from a compaction (removed at the next start)",
                read.obsolete.len()
            ));
        }
        if let Some(t) = read.scan.torn {
            r.facts.push(format!(
                "{}: a torn last write ({}) of {} bytes at byte {}, never acknowledged; the next start drops it",
                segments::segment_path(&dir, t.seg).display(),
                t.what,
                t.bytes,
                t.at
            ));
        }
        let mut unfinished = 0;
        for (&id, &loc) in &read.scan.docs {
            if read.scan.misfits.contains(&id) {
                r.problems.push(format!(
                    "undecodable record: alert {id}: {} (set aside at the next start)",
                    segments::MISFIT
                ));
                continue;
            }
            match View::read(&read.files, loc)
                .map_err(QueueError::storage)
                .and_then(|b| decode(id, &b))
            {
                Ok(a) => unfinished += usize::from(!a.is_finished()),
                Err(e) => r.problems.push(format!(
                    "undecodable record: alert {id}: {} (set aside at the next start)",
                    crate::error_chain(&e)
                )),
            }
        }
        let aside = segments::set_aside(&dir);
        if !aside.is_empty() {
            let ids: Vec<String> = aside.iter().map(u64::to_string).collect();
            r.facts.push(format!(
                "records set aside at earlier starts (undecodable): {} (ids {}; in {})",
                aside.len(),
                ids.join(", "),
                dir.join(segments::SET_ASIDE).display()
            ));
        }
        r.facts.push(format!(
            "{} alerts ({unfinished} unfinished), next id {}, {} dedup key records",
            read.scan.docs.len(),
            read.scan
                .next_id
                .max(read.scan.docs.keys().next_back().map_or(1, |id| id + 1)),
            read.scan.keys.len()
        ));
        Ok(r)
    }

    /// `alertbridge queue export` on the log in `data_dir`: every alert, ids ascending.
    pub fn export(data_dir: &Path) -> Result<Vec<StoredAlert>, TransferError> {
        match read_all(data_dir)? {
            Some(alerts) => Ok(alerts),
            None => match store::read_marker(data_dir)? {
                Some(id) => Err(QueueError::Vanished {
                    path: segments::log_dir(data_dir).display().to_string(),
                    what: "holds no log segment",
                    marker: data_dir.join(store::MARKER).display().to_string(),
                    id,
                }
                .into()),
                None => Ok(Vec::new()),
            },
        }
    }

    /// `alertbridge queue import` into the log in `data_dir` (created if missing, also where a
    /// redb queue was), which must hold no alerts: ids and outcomes kept, the dedup keys of alerts accepted within
    /// `window_ms` rebuilt. Returns how many keys.
    pub fn import(
        data_dir: &Path,
        alerts: &[StoredAlert],
        window_ms: i64,
    ) -> Result<usize, TransferError> {
        // A missing log is created although the folder's marker names a queue (the redb file
        // an export came from, in the same folder): an import is the operator's word, and it
        // goes into an empty log only.
        let mut loaded = segments::open(data_dir, true, window_ms, usize::MAX)?;
        if !loaded.view.docs.is_empty() {
            return Err(TransferError::NotEmpty(loaded.view.docs.len() as u64));
        }
        let log = &mut loaded.log;
        let cutoff = now_ms() - window_ms;
        let mut seen = HashSet::new();
        let mut buf = Vec::new();
        let mut start = format::open_frame(&mut buf);
        let mut write = |buf: &mut Vec<u8>, start: usize| -> Result<(), QueueError> {
            log.seq += 1;
            format::seal_frame(buf, start, log.seq);
            log.append(buf)?;
            buf.clear();
            Ok(())
        };
        let next = alerts.last().map_or(1, |a| a.id + 1).max(loaded.next_id);
        format::put(&mut buf, &Record::NextId { id: next });
        let mut keys = 0;
        for a in alerts {
            let json = serde_json::to_vec(a).map_err(QueueError::storage)?;
            if buf.len() - start + json.len() + 64 > MAX_FRAME_BODY / 2 {
                write(&mut buf, start)?;
                start = format::open_frame(&mut buf);
            }
            format::put(
                &mut buf,
                &Record::Saved {
                    id: a.id,
                    json: &json,
                    at: 0,
                },
            );
            if let Some(key) = a.alert.dedup_key.as_deref()
                && a.accepted_ms >= cutoff
            {
                let key = dedup_hash(&a.source, key);
                // The first alert within the window holds the key.
                if seen.insert(key) {
                    let accepted_ms = a.accepted_ms;
                    format::put(
                        &mut buf,
                        &Record::Dedup {
                            id: a.id,
                            key,
                            accepted_ms,
                        },
                    );
                    keys += 1;
                }
            }
        }
        write(&mut buf, start)?;
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, sync::Arc};

    use alertbridge_plugin_api::Alert;

    use super::*;
    use crate::queue::{Queue, QueueOptions};

    fn open(dir: &Path) -> LogQueue {
        let options = QueueOptions {
            dedup_window: std::time::Duration::from_secs(3600),
            ..QueueOptions::default()
        };
        LogQueue::open_with(dir, &options, Arc::default(), Box::new(drop)).unwrap()
    }

    fn segment(dir: &Path) -> std::path::PathBuf {
        segments::segment_path(&segments::log_dir(dir), 1)
    }

    #[tokio::test]
    async fn an_export_imports_into_an_empty_log_with_ids_outcomes_and_dedup_keys() {
        let from = tempfile::tempdir().unwrap();
        {
            let q = open(from.path());
            let mut keyed = Alert::new("keyed");
            keyed.dedup_key = Some("k".into());
            let a = q.enqueue("s", keyed).await.unwrap().id;
            q.enqueue("s", Alert::new("open")).await.unwrap();
            let mut done = q.get(a).unwrap().unwrap();
            done.routed = true;
            done.finished_ms = Some(9);
            q.save(&done).await.unwrap();
        }
        let alerts = LogQueue::export(from.path()).unwrap();
        assert_eq!(alerts.len(), 2);
        assert!(alerts[0].is_finished() && !alerts[1].is_finished());

        // Into the folder of another queue (its marker), as after an export from redb there.
        let to = tempfile::tempdir().unwrap();
        store::write_marker(to.path(), 77).unwrap();
        assert_eq!(LogQueue::import(to.path(), &alerts, 3_600_000).unwrap(), 1);
        assert!(matches!(
            LogQueue::import(to.path(), &alerts, 3_600_000),
            Err(TransferError::NotEmpty(2))
        ));
        assert_eq!(LogQueue::export(to.path()).unwrap(), alerts);
        let q = open(to.path());
        assert_eq!(q.unfinished().unwrap(), alerts[1..]);
        let mut again = Alert::new("keyed again");
        again.dedup_key = Some("k".into());
        assert!(q.enqueue("s", again).await.unwrap().duplicate);
        assert_eq!(q.enqueue("s", Alert::new("new")).await.unwrap().id, 3);
    }

    #[tokio::test]
    async fn check_tells_a_torn_write_and_damage_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path());
            for s in ["one", "two", "three"] {
                q.enqueue("s", Alert::new(s)).await.unwrap();
            }
        }
        let r = LogQueue::check(dir.path()).unwrap();
        assert!(r.is_ok(), "{r}");
        assert!(r.to_string().contains("3 alerts (3 unfinished)"), "{r}");

        let path = segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.iter().rposition(|&b| b != 0).unwrap();
        bytes[last - 4..=last].fill(0);
        fs::write(&path, &bytes).unwrap();
        let r = LogQueue::check(dir.path()).unwrap();
        assert!(r.is_ok(), "a torn last write is not damage: {r}");
        assert!(r.to_string().contains("a torn last write"), "{r}");
        assert!(r.to_string().contains("2 alerts"), "{r}");

        bytes[format::HEADER_BYTES + format::FRAME_HEADER + 12] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let r = LogQueue::check(dir.path()).unwrap();
        assert_eq!(r.problems.len(), 1, "{r}");
        assert!(r.problems[0].contains("fails its checksum"), "{r}");
        assert_eq!(fs::read(&path).unwrap(), bytes, "check changes nothing");

        fs::remove_dir_all(segments::log_dir(dir.path())).unwrap();
        let r = LogQueue::check(dir.path()).unwrap();
        assert!(r.problems[0].contains("holds no log segment"), "{r}");
        assert!(LogQueue::export(dir.path()).is_err());
    }
}
