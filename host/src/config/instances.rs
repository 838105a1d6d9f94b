//! The `[[source]]`s and `[[sink]]`s: each read with its plugin's `config` table kept as TOML
//! text and where each of its keys is; their names checked; each source's share of the queue.

use std::{collections::BTreeMap, ops::Range};

use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use super::{
    error::{Collector, line_col},
    raw::{RawInstance, deserialize, tables},
};

/// A `[[source]]` or `[[sink]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceConfig {
    pub name: String,
    /// The plugin kind, e.g. `pop3`.
    pub plugin: String,
    /// The `config` table, as TOML text for the plugin.
    pub config_toml: String,
    /// Where the instance is declared.
    pub at: (usize, usize),
    /// Where each key of its config table is (dotted path → line, column).
    pub keys: BTreeMap<String, (usize, usize)>,
    /// Sources: its own share of `max_queue_depth`, if set (see `Config::queue_shares`).
    pub max_queued: Option<usize>,
}

/// Reads the `[[source]]`s (`kind` = `source`) or the `[[sink]]`s.
pub(super) fn instances(
    c: &mut Collector<'_>,
    root: &Table,
    kind: &str,
    text: &str,
) -> Vec<InstanceConfig> {
    let Some(tables) = tables(c, root, kind) else {
        return vec![];
    };
    let mut out = Vec::new();
    for table in tables {
        let at = table.span().map_or((0, 0), |s| line_col(text, s.start));
        let Some(raw) =
            deserialize::<RawInstance>(c, &Item::Table(table.clone()), &format!("[[{kind}]]"))
        else {
            continue;
        };
        let (config_toml, keys) = match table.get("config") {
            None => (String::new(), BTreeMap::new()),
            Some(item) => match item.as_table_like() {
                Some(t) => (plugin_toml(item), key_locations(t, text)),
                None => {
                    c.at(
                        item.span(),
                        format!("{kind} `{}`: `config` must be a table", raw.name.get_ref()),
                    );
                    continue;
                }
            },
        };
        if let (Some(m), "sink") = (&raw.max_queued, kind) {
            c.at(
                Some(m.span()),
                format!(
                    "sink `{}`: `max_queued` is a source setting",
                    raw.name.get_ref()
                ),
            );
        }
        out.push(InstanceConfig {
            name: raw.name.into_inner(),
            plugin: raw.plugin.into_inner(),
            config_toml,
            at,
            keys,
            max_queued: raw.max_queued.map(Spanned::into_inner),
        });
    }
    out
}

/// The TOML text a plugin gets for its `config` table.
fn plugin_toml(item: &Item) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    if let Some(t) = item.as_table_like() {
        for (k, v) in t.iter() {
            doc.insert(k, v.clone());
        }
    }
    doc.to_string()
}

/// Where each key of a config table is, by dotted path.
fn key_locations(table: &dyn toml_edit::TableLike, text: &str) -> BTreeMap<String, (usize, usize)> {
    fn walk(
        t: &dyn toml_edit::TableLike,
        prefix: &str,
        text: &str,
        out: &mut BTreeMap<String, (usize, usize)>,
    ) {
        for (k, v) in t.iter() {
            let path = if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            };
            let span: Option<Range<usize>> =
                t.key(k).and_then(|key| key.span()).or_else(|| v.span());
            if let Some(s) = span {
                out.insert(path.clone(), line_col(text, s.start));
            }
            if let Some(inner) = v.as_table_like() {
                walk(inner, &path, text, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(table, "", text, &mut out);
    out
}

/// The checks across the instances: each name is used once among sources and sinks, no
/// source takes a name reserved for the host's own alerts, and the sources' shares add up to
/// no more than `max_queue_depth`.
pub(super) fn check_instances(
    c: &mut Collector<'_>,
    sources: &[InstanceConfig],
    sinks: &[InstanceConfig],
    max_queue_depth: usize,
) {
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for (kind, list) in [("source", sources), ("sink", sinks)] {
        for i in list {
            if let Some(other) = names.insert(i.name.clone(), kind) {
                c.at_line(
                    i.at,
                    format!("{kind} `{}`: the name is already used by a {other}", i.name),
                );
            }
        }
    }
    for s in sources
        .iter()
        .filter(|s| s.name == crate::router::ADMIN_SOURCE)
    {
        c.at_line(
            s.at,
            format!(
                "source `{}`: the name is reserved for test alerts from the status page",
                s.name
            ),
        );
    }
    let promised = promised(sources);
    if promised > max_queue_depth
        && let Some(s) = sources.iter().find(|s| s.max_queued.is_some())
    {
        c.at_line(
            s.at,
            format!(
                "[[source]] max_queued: the sources' shares add up to {promised}, more than [host] max_queue_depth = {max_queue_depth}"
            ),
        );
    }
    for s in sources
        .iter()
        .filter(|s| s.name == crate::model::PAGE_SOURCE)
    {
        c.at_line(
            s.at,
            format!(
                "source `{}`: the name is reserved for the pages of incidents",
                s.name
            ),
        );
    }
}

/// `Config::queue_shares`: each source's `max_queued`, or else an equal part (at least 1) of
/// what those leave of `max_queue_depth`.
pub(super) fn queue_shares(
    sources: &[InstanceConfig],
    max_queue_depth: usize,
) -> Vec<(String, usize)> {
    let open = sources.iter().filter(|s| s.max_queued.is_none()).count();
    let each = (max_queue_depth.saturating_sub(promised(sources)) / open.max(1)).max(1);
    sources
        .iter()
        .map(|s| (s.name.clone(), s.max_queued.unwrap_or(each)))
        .collect()
}

/// The sum of the shares the sources set themselves.
fn promised(sources: &[InstanceConfig]) -> usize {
    sources.iter().filter_map(|s| s.max_queued).sum()
}
