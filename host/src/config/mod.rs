//! The config file: reading it, checking all of it at once, and the validated result.
//!
//! Every table rejects unknown keys, and every mistake is reported with file, line and column
//! (see [`ConfigErrors`]). An instance's `config` table is kept as TOML text for its plugin,
//! together with where each of its keys is, so the plugin's complaints can be pointed at too.

pub mod admin;
mod error;
pub mod escalation;
mod grouping;
mod instances;
pub mod queue;
mod raw;
mod routes;
mod settings;
mod templates;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use toml_edit::ImDocument;

use self::escalation::EscalationPolicy;
use self::{
    error::Collector,
    raw::{RawDelivery, RawHost, section},
};
pub use self::{
    error::{ConfigError, ConfigErrors, line_col},
    instances::InstanceConfig,
    queue::QueueBackend,
    settings::{DeliverySettings, HostSettings, IncidentSettings, OnUncertain},
};
use crate::router::Router;

/// A validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub host: HostSettings,
    pub delivery: DeliverySettings,
    pub sources: Vec<InstanceConfig>,
    pub sinks: Vec<InstanceConfig>,
    pub router: Router,
    /// The `[[escalation]]` policies, checked.
    pub escalations: Vec<EscalationPolicy>,
    /// Route name -> the escalation policy it names.
    pub route_escalations: BTreeMap<String, String>,
    /// `[queue]`: the embedded queue or the shared PostgreSQL one.
    pub queue: QueueBackend,
    /// `[incidents]`.
    pub incidents: IncidentSettings,
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(path, &text)
    }

    /// Checks config text; `path` names it in errors and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigErrors> {
        let mut c = Collector::new(path, text);
        let doc = match ImDocument::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                // The message never quotes the line; name the key written on it.
                let message = e.message().trim_end();
                let message = match e.span().and_then(|s| error::key_at(text, s.start)) {
                    Some(key) => format!("`{key}`: {message}"),
                    None => message.to_owned(),
                };
                c.at(e.span(), message);
                return Err(c.fail());
            }
        };
        let root = doc.as_table();
        for (key, _) in root.iter() {
            if ![
                "host",
                "delivery",
                "source",
                "sink",
                "groups",
                "route",
                "escalation",
                "incidents",
                "queue",
            ]
            .contains(&key)
            {
                let span = root.key(key).and_then(|k| k.span());
                c.at(span, format!("unknown table `{key}` (expected host, delivery, source, sink, groups, escalation, incidents, queue or route)"));
            }
        }

        let host_errors = c.errors.len();
        let host = section::<RawHost>(&mut c, root, "host");
        let host_failed = c.errors.len() > host_errors;
        let delivery = section::<RawDelivery>(&mut c, root, "delivery").unwrap_or_default();
        let sources = instances::instances(&mut c, root, "source", text);
        let sinks = instances::instances(&mut c, root, "sink", text);
        let groups =
            section::<BTreeMap<String, Vec<String>>>(&mut c, root, "groups").unwrap_or_default();

        let host =
            settings::host_settings(&mut c, root, host.unwrap_or_default(), path, host_failed);
        let queue = queue::queue_backend(&mut c, root, path.parent().unwrap_or(Path::new(".")));
        let delivery = settings::delivery_settings(&mut c, delivery);
        instances::check_instances(&mut c, &sources, &sinks, host.max_queue_depth);
        let sink_names: Vec<&str> = sinks.iter().map(|s| s.name.as_str()).collect();
        let source_names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        let escalations = escalation::escalations(&mut c, root, &groups);
        let incidents = settings::incident_settings(&mut c, root, &groups);
        let policy_names: Vec<&str> = escalations.iter().map(|p| p.name.as_str()).collect();
        let mut route_escalations = BTreeMap::new();
        let routes = routes::routes(
            &mut c,
            root,
            &groups,
            &sink_names,
            &source_names,
            (&policy_names, &mut route_escalations),
        );
        let templates = templates::templates(&mut c, root, text, path);
        c.finish(Config {
            path: path.to_owned(),
            host,
            delivery,
            sources,
            sinks,
            router: Router {
                routes,
                groups,
                templates,
            },
            escalations,
            route_escalations,
            queue,
            incidents,
        })
    }

    /// Each source's share of `max_queue_depth`: its `max_queued`, or else an equal part of
    /// what the sources with an explicit share leave (at least 1). No source can then fill the
    /// queue the others need.
    pub fn queue_shares(&self) -> Vec<(String, usize)> {
        instances::queue_shares(&self.sources, self.host.max_queue_depth)
    }

    /// Maps a plugin's config complaint about instance `inst` (about `key`, a dotted path into
    /// the instance's config, when the plugin named one) to a place in this file.
    pub fn locate_plugin_error(
        &self,
        inst: &InstanceConfig,
        key: Option<&str>,
        message: &str,
    ) -> ConfigError {
        let (line, column) = key
            .and_then(|k| inst.keys.get(k))
            .copied()
            .unwrap_or(inst.at);
        // A plugin's serde error may quote the value it found, which may be a secret; the key
        // is named instead.
        let mut msg = error::without_value(message);
        if let Some(key) =
            key.filter(|k| !inst.keys.contains_key(*k) || error::is_value_error(&msg))
        {
            msg = format!("`{key}`: {msg}");
        }
        ConfigError {
            file: self.path.display().to_string(),
            line,
            column,
            message: format!("{} `{}`: {}", "instance", inst.name, msg),
        }
    }
}

#[cfg(test)]
mod tests;
