//! The config file's shape as serde reads it, with spans kept where later checks need them,
//! and reading one of its tables into that shape.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, de::IntoDeserializer};
use serde_spanned::Spanned;
use toml_edit::{ArrayOfTables, Item, Table};

use super::error::Collector;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    pub data_dir: Option<PathBuf>,
    pub plugin_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    pub admin_token_file: Option<PathBuf>,
    pub admin_token_env: Option<String>,
    pub admin_hosts: Option<Vec<String>>,
    pub admin_max_connections: Option<usize>,
    pub admin_read_timeout_ms: Option<u64>,
    pub admin_idle_timeout_ms: Option<u64>,
    pub dedup_window_secs: Option<u64>,
    pub dedup_max_keys: Option<usize>,
    pub history_max_alerts: Option<usize>,
    pub max_queue_depth: Option<usize>,
    pub stop_deadline_ms: Option<u64>,
    pub max_subject_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_recipients_per_alert: Option<usize>,
    /// Read (and checked) by `config::templates`.
    #[serde(default, rename = "public_url")]
    pub _public_url: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub presence_cache_ms: Option<u64>,
    pub reachable: Option<Vec<Spanned<String>>>,
    pub max_attempts: Option<u32>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub hold_recheck_ms: Option<u64>,
    pub per_recipient_per_minute: Option<u32>,
    pub sink_concurrency: Option<usize>,
    pub per_sink_per_second: Option<u32>,
    pub deliver_timeout_ms: Option<u64>,
    pub on_uncertain: Option<Spanned<String>>,
    pub fold_rate_limited: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub name: Spanned<String>,
    pub plugin: Spanned<String>,
    /// Sources only: how many of this source's alerts may be unfinished at once.
    pub max_queued: Option<Spanned<usize>>,
    /// Read separately, as the TOML text handed to the plugin.
    #[serde(default, rename = "config")]
    pub _config: Option<serde::de::IgnoredAny>,
    /// Sinks only: the message template; read (and compiled) by `config::templates`.
    #[serde(default, rename = "template")]
    pub _template: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "template_file")]
    pub _template_file: Option<serde::de::IgnoredAny>,
}

/// One name or a list of names.
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name or a list of names")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub source: Option<Spanned<OneOrMany>>,
    pub severity: Option<Spanned<String>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub labels_regex: BTreeMap<String, Spanned<String>>,
    pub subject: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOffline {
    pub policy: Spanned<String>,
    pub max_wait_secs: Option<u64>,
    pub then: Option<Spanned<String>>,
    pub fallback: Option<Spanned<String>>,
    /// `offline` (default) or `deliver`: a recipient whose presence could not be had.
    pub unknown: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    #[serde(default)]
    pub groups: Vec<Spanned<String>>,
    #[serde(default)]
    pub users: Vec<Spanned<String>>,
    pub sinks: Spanned<Vec<Spanned<String>>>,
    #[serde(rename = "continue", default)]
    pub cont: bool,
    #[serde(default)]
    pub allow_alert_recipients: bool,
    pub offline: Option<RawOffline>,
    /// The `[[escalation]]` policy whose levels give the recipients (issue 14).
    pub escalation: Option<Spanned<String>>,
    /// The message template; read (and compiled) by `config::templates`.
    #[serde(default, rename = "template")]
    pub _template: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "template_file")]
    pub _template_file: Option<serde::de::IgnoredAny>,
    /// Grouping into digests (issue 16): fields whose values make a group.
    pub group_by: Option<Spanned<Vec<Spanned<String>>>>,
    pub group_wait_ms: Option<Spanned<u64>>,
    pub group_interval_ms: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLevel {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub after_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    pub name: Spanned<String>,
    #[serde(default)]
    pub repeat: u32,
    #[serde(default)]
    pub ack_timeout_secs: u64,
    pub levels: Spanned<Vec<Spanned<RawLevel>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawIncidents {
    /// Groups whose members may ack or resolve any incident, besides those paged for it.
    #[serde(default)]
    pub responders: Vec<Spanned<String>>,
}

/// Deserializes `root[key]` as `T`, recording an error (and returning `None`) if it fails.
pub(super) fn section<T: for<'de> Deserialize<'de>>(
    c: &mut Collector<'_>,
    root: &Table,
    key: &str,
) -> Option<T> {
    let item = root.get(key)?;
    deserialize(c, item, &format!("[{key}]"))
}

/// The `[[key]]` tables: none if absent, or (with an error recorded) if `key` is not an array
/// of tables.
pub(super) fn tables<'a>(
    c: &mut Collector<'_>,
    root: &'a Table,
    key: &str,
) -> Option<&'a ArrayOfTables> {
    let item = root.get(key)?;
    let tables = item.as_array_of_tables();
    if tables.is_none() {
        c.at(
            root.key(key).and_then(|k| k.span()),
            format!("`{key}` must be an array of tables: write [[{key}]]"),
        );
    }
    tables
}

/// Deserializes `item` as `T`, recording an error under `context` (and returning `None`) if it
/// fails.
pub(super) fn deserialize<T: for<'de> Deserialize<'de>>(
    c: &mut Collector<'_>,
    item: &Item,
    context: &str,
) -> Option<T> {
    let value = match item.clone().into_value() {
        Ok(v) => v,
        Err(item) => {
            c.at(item.span(), format!("{context}: expected a table"));
            return None;
        }
    };
    T::deserialize(value.into_deserializer())
        .map_err(|e| c.de(context, &e))
        .ok()
}
