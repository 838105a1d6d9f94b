//! `alertbridge queue export|import`: a queue as lines of JSON, to move it between backends
//! (redb, the segment log, PostgreSQL) with every alert, its id and its recipients' outcomes.
//! The redb side is here; the log's is [`crate::queue::LogQueue::export`] and `import`.
//!
//! ```text
//! {"alertbridge_queue":1,"from":"redb"}              header: format version, backend
//! {"id":1,"alert":{...the stored alert...}}          one line per alert, ids ascending
//! {"end":2}                                          footer: how many alert lines came before
//! ```
//!
//! The footer makes a cut-off file an error rather than a smaller queue. Import goes into an
//! empty queue only (nothing there is overwritten or renumbered), keeps ids, and rebuilds the
//! dedup keys of alerts still within the dedup window.

use std::{io::Write, path::Path};

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};

use super::{
    QueueError,
    redb_queue::dedup_hash,
    store::{self, ALERTS, DEDUP_LOG, META},
};
use crate::model::{StoredAlert, now_ms};

/// The format version written in the header.
pub const FORMAT_VERSION: u32 = 1;
/// The longest line read (one alert's document).
const MAX_LINE_BYTES: usize = 16 << 20;

/// Why an export could not be read or an import could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {what}")]
    Format { line: usize, what: String },
    #[error(
        "the queue to import into already holds {0} alerts; import goes into an empty queue only"
    )]
    NotEmpty(u64),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("cannot write the export")]
    Write(#[source] std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct Header {
    alertbridge_queue: u32,
    from: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: u64,
    alert: StoredAlert,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    end: u64,
}

/// Writes `alerts` (ids ascending) in the export format.
pub fn write_export(
    from: &str,
    alerts: &[StoredAlert],
    out: &mut impl Write,
) -> Result<(), TransferError> {
    json_line(
        out,
        &Header {
            alertbridge_queue: FORMAT_VERSION,
            from: from.to_owned(),
        },
    )?;
    for a in alerts {
        json_line(out, &LineRef { id: a.id, alert: a })?;
    }
    json_line(
        out,
        &End {
            end: alerts.len() as u64,
        },
    )?;
    out.flush().map_err(TransferError::Write)
}

#[derive(Serialize)]
struct LineRef<'a> {
    id: u64,
    alert: &'a StoredAlert,
}

fn json_line(out: &mut impl Write, v: &impl Serialize) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *out, v)
        .map_err(|e| TransferError::Write(std::io::Error::other(e)))?;
    out.write_all(b"\n").map_err(TransferError::Write)
}

/// Reads an export: header, alert lines with ascending ids, and the footer with their count.
/// Pure: bytes in, alerts out; every problem names its line.
pub fn read_export(bytes: &[u8]) -> Result<Vec<StoredAlert>, TransferError> {
    let err = |line: usize, what: String| TransferError::Format { line, what };
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let (n, first) = lines
        .next()
        .ok_or_else(|| err(1, "empty: not a queue export".into()))?;
    let header: Header = serde_json::from_slice(first).map_err(|_| {
        err(
            n,
            "not a queue export header ({\"alertbridge_queue\":1,...})".into(),
        )
    })?;
    if header.alertbridge_queue != FORMAT_VERSION {
        return Err(err(
            n,
            format!(
                "export format {} is not {FORMAT_VERSION}, the one this alertbridge reads",
                header.alertbridge_queue
            ),
        ));
    }
    let mut alerts: Vec<StoredAlert> = Vec::new();
    for (n, line) in lines.by_ref() {
        if line.len() > MAX_LINE_BYTES {
            return Err(err(n, format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        if let Ok(end) = serde_json::from_slice::<End>(line) {
            if end.end != alerts.len() as u64 {
                return Err(err(
                    n,
                    format!(
                        "the footer counts {} alerts but {} came before it",
                        end.end,
                        alerts.len()
                    ),
                ));
            }
            if let Some((n, _)) = lines.next() {
                return Err(err(n, "text after the footer".into()));
            }
            return Ok(alerts);
        }
        let Line { id, mut alert } =
            serde_json::from_slice(line).map_err(|e| err(n, format!("not an alert line: {e}")))?;
        if id == 0 || id > i64::MAX as u64 {
            return Err(err(n, format!("alert id {id} is out of range")));
        }
        if alerts.last().is_some_and(|last| last.id >= id) {
            return Err(err(n, format!("alert id {id} is not above the one before")));
        }
        alert.id = id;
        alerts.push(alert);
    }
    Err(err(
        bytes.split(|b| *b == b'\n').count(),
        "no footer ({\"end\":N}): the export was cut off".into(),
    ))
}

/// Every alert of the redb queue in `dir`, ids ascending (the bridge stopped).
pub fn export_redb(dir: &Path) -> Result<Vec<StoredAlert>, TransferError> {
    let db = store::open_checked(dir, false, true)?;
    let txn = db.begin_read().map_err(QueueError::storage)?;
    let table = match txn.open_table(ALERTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(QueueError::storage(e).into()),
    };
    let mut out = Vec::new();
    for entry in table.iter().map_err(QueueError::storage)? {
        let (k, v) = entry.map_err(QueueError::storage)?;
        out.push(super::shared::decode(k.value(), v.value())?);
    }
    Ok(out)
}

/// Writes `alerts` into the empty redb queue in `dir` (created if missing), with the dedup
/// keys of those accepted within `window_ms`; returns how many keys.
pub fn import_redb(
    dir: &Path,
    alerts: &[StoredAlert],
    window_ms: i64,
) -> Result<usize, TransferError> {
    let db = store::open_checked(dir, false, true)?;
    let txn = db.begin_write().map_err(QueueError::storage)?;
    let mut keys = 0;
    {
        let mut table = txn.open_table(ALERTS).map_err(QueueError::storage)?;
        let held = table.len().map_err(QueueError::storage)?;
        if held > 0 {
            return Err(TransferError::NotEmpty(held));
        }
        let mut log = txn.open_table(DEDUP_LOG).map_err(QueueError::storage)?;
        let mut meta = txn.open_table(META).map_err(QueueError::storage)?;
        let cutoff = now_ms() - window_ms;
        let mut seen = std::collections::HashSet::new();
        for a in alerts {
            let json = serde_json::to_vec(a).map_err(QueueError::storage)?;
            table
                .insert(a.id, json.as_slice())
                .map_err(QueueError::storage)?;
            if let Some(key) = a.alert.dedup_key.as_deref()
                && a.accepted_ms >= cutoff
            {
                let hash = dedup_hash(&a.source, key);
                // The first alert within the window holds the key.
                if seen.insert(hash) {
                    log.insert(a.id, (hash, a.accepted_ms))
                        .map_err(QueueError::storage)?;
                    keys += 1;
                }
            }
        }
        let next = alerts.last().map_or(1, |a| a.id + 1);
        let current = meta
            .get("next_id")
            .map_err(QueueError::storage)?
            .map_or(1, |v| v.value());
        meta.insert("next_id", next.max(current))
            .map_err(QueueError::storage)?;
    }
    txn.commit().map_err(QueueError::storage)?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::Alert;

    use super::*;

    fn alert(id: u64, subject: &str) -> StoredAlert {
        StoredAlert::new(id, "s", Alert::new(subject), 1000 + id as i64)
    }

    #[test]
    fn an_export_reads_back_and_a_damaged_one_says_which_line() {
        let alerts = vec![alert(1, "a"), alert(5, "b\nwith a newline")];
        let mut out = Vec::new();
        write_export("redb", &alerts, &mut out).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.starts_with("{\"alertbridge_queue\":1,\"from\":\"redb\"}\n"));
        assert!(text.ends_with("{\"end\":2}\n"));
        assert_eq!(read_export(&out).unwrap(), alerts);

        let cut = &out[..out.len() - "{\"end\":2}\n".len()];
        assert_eq!(
            read_export(cut).unwrap_err().to_string(),
            "line 4: no footer ({\"end\":N}): the export was cut off"
        );
        let miscounted = text.replace("{\"end\":2}", "{\"end\":3}");
        assert_eq!(
            read_export(miscounted.as_bytes()).unwrap_err().to_string(),
            "line 4: the footer counts 3 alerts but 2 came before it"
        );
        let lines: Vec<&str> = text.lines().collect();
        let swapped = [lines[0], lines[2], lines[1], lines[3]].join("\n");
        assert_eq!(
            read_export(swapped.as_bytes()).unwrap_err().to_string(),
            "line 3: alert id 1 is not above the one before"
        );
        assert!(
            read_export(b"{\"alertbridge_queue\":2,\"from\":\"x\"}\n{\"end\":0}\n")
                .unwrap_err()
                .to_string()
                .contains("export format 2 is not 1")
        );
        assert!(read_export(b"").is_err());
        assert!(
            read_export(format!("{}\n{{\"id\":0,\"alert\":{{}}}}\n", lines[0]).as_bytes())
                .unwrap_err()
                .to_string()
                .starts_with("line 2: not an alert line")
        );
    }
}
