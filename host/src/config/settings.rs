//! The typed sections `[host]`, `[delivery]` and `[incidents]`: their settings, the defaults
//! of what is left out, and reading them from the file.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use alertbridge_plugin_api::PresenceState;
use serde_spanned::Spanned;
use toml_edit::{Item, Table};

use super::{
    admin::{AdminKeys, AdminSettings},
    error::Collector,
    raw::{RawDelivery, RawHost, RawIncidents, section},
};

/// Host-wide settings (`[host]`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostSettings {
    pub data_dir: PathBuf,
    pub plugin_dir: Option<PathBuf>,
    pub admin_listen: Option<SocketAddr>,
    /// The admin server's token, allowed host names and limits.
    pub admin: AdminSettings,
    pub dedup_window: Duration,
    /// Keys at most in the dedup index (oldest evicted first).
    pub dedup_max_keys: usize,
    /// Set by `run --accept-empty-queue`, never by the file.
    pub accept_empty_queue: bool,
    pub history_max_alerts: usize,
    pub max_queue_depth: usize,
    pub stop_deadline: Duration,
    pub max_subject_bytes: usize,
    pub max_body_bytes: usize,
    /// Users and groups one alert may name.
    pub max_recipients_per_alert: usize,
}

/// Delivery settings (`[delivery]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliverySettings {
    pub presence_cache: Duration,
    /// Presence states that count as online.
    pub reachable: Vec<PresenceState>,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub hold_recheck: Duration,
    /// 0 for no limit.
    pub per_recipient_per_minute: u32,
    pub sink_concurrency: usize,
    /// Messages per second per sink; 0 for no limit.
    pub per_sink_per_second: u32,
    pub deliver_timeout: Duration,
    /// What a send that began before a restart and has no outcome becomes.
    pub on_uncertain: OnUncertain,
    /// When a recipient's rate limit is reached, what waits for them goes as one digest IM at
    /// the next free slot instead of one by one (issue 16).
    pub fold_rate_limited: bool,
}

/// `[delivery] on_uncertain`: what to do after a restart with a send that began (recorded before
/// the sink was called) and has no recorded outcome, so the recipient may or may not have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnUncertain {
    /// Send it again, marked "(repeat after restart)" so the reader knows it may be a duplicate.
    #[default]
    Resend,
    /// Do not send it again; the recipient is recorded as skipped with the reason.
    Skip,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            presence_cache: Duration::from_secs(15),
            reachable: vec![
                PresenceState::AVAILABLE,
                PresenceState::BUSY,
                PresenceState::AWAY,
            ],
            max_attempts: 8,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            hold_recheck: Duration::from_secs(15),
            per_recipient_per_minute: 30,
            sink_concurrency: 64,
            per_sink_per_second: 0,
            deliver_timeout: Duration::from_secs(60),
            on_uncertain: OnUncertain::Resend,
            fold_rate_limited: true,
        }
    }
}

/// `[incidents]`: who may act on incidents besides the people paged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentSettings {
    /// Groups whose members may ack or resolve any incident.
    pub responders: Vec<String>,
}

impl IncidentSettings {
    /// The responders' users (SIP URIs), their groups expanded through `groups`.
    pub fn responder_users(&self, groups: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for u in self
            .responders
            .iter()
            .filter_map(|g| groups.get(g))
            .flatten()
        {
            if !out.contains(u) {
                out.push(u.clone());
            }
        }
        out
    }
}

pub(super) fn host_settings(
    c: &mut Collector<'_>,
    root: &Table,
    raw: RawHost,
    path: &Path,
    already_wrong: bool,
) -> HostSettings {
    let base = path.parent().unwrap_or(Path::new("."));
    let data_dir = raw.data_dir.map(|d| base.join(d)).unwrap_or_else(|| {
        if already_wrong {
            return PathBuf::new();
        }
        let span = root.get("host").and_then(Item::span).or(Some(0..0));
        c.at(
            span,
            "[host]: missing key `data_dir` (where the durable queue lives)",
        );
        PathBuf::new()
    });
    let (admin, problems) = AdminSettings::from_keys(AdminKeys {
        listen: raw.admin_listen,
        token_file: raw.admin_token_file.map(|f| base.join(f)),
        token_env: raw.admin_token_env,
        hosts: raw.admin_hosts,
        max_connections: raw.admin_max_connections,
        read_timeout_ms: raw.admin_read_timeout_ms,
        idle_timeout_ms: raw.admin_idle_timeout_ms,
    });
    for (key, message) in problems {
        let host = root.get("host");
        let span = host.and_then(|h| h.get(key)).and_then(Item::span);
        c.at(
            span.or_else(|| host.and_then(Item::span)),
            format!("[host] {key}: {message}"),
        );
    }
    HostSettings {
        data_dir,
        plugin_dir: raw.plugin_dir.map(|d| base.join(d)),
        admin_listen: raw.admin_listen,
        admin,
        dedup_window: Duration::from_secs(raw.dedup_window_secs.unwrap_or(86_400)),
        dedup_max_keys: raw.dedup_max_keys.unwrap_or(1_000_000).max(1),
        accept_empty_queue: false,
        history_max_alerts: raw.history_max_alerts.unwrap_or(10_000),
        max_queue_depth: raw.max_queue_depth.unwrap_or(100_000),
        stop_deadline: Duration::from_millis(raw.stop_deadline_ms.unwrap_or(10_000)),
        max_subject_bytes: raw.max_subject_bytes.unwrap_or(1024),
        max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
        max_recipients_per_alert: raw.max_recipients_per_alert.unwrap_or(100),
    }
}

pub(super) fn delivery_settings(c: &mut Collector<'_>, raw: RawDelivery) -> DeliverySettings {
    let d = DeliverySettings::default();
    let reachable = raw.reachable.map_or(d.reachable, |list| {
        list.into_iter()
            .filter_map(|s| {
                let state = PresenceState::from_name(s.get_ref());
                if state.is_none() {
                    c.at(
                        Some(s.span()),
                        format!(
                            "[delivery] reachable: unknown presence state `{}`",
                            s.get_ref()
                        ),
                    );
                }
                state
            })
            .collect()
    });
    let on_uncertain = raw
        .on_uncertain
        .map_or(d.on_uncertain, |s| match s.get_ref().as_str() {
            "resend" => OnUncertain::Resend,
            "skip" => OnUncertain::Skip,
            other => {
                c.at(
                    Some(s.span()),
                    format!("[delivery] on_uncertain: `{other}` is not `resend` or `skip`"),
                );
                d.on_uncertain
            }
        });
    DeliverySettings {
        presence_cache: raw
            .presence_cache_ms
            .map_or(d.presence_cache, Duration::from_millis),
        reachable,
        max_attempts: raw.max_attempts.unwrap_or(d.max_attempts).max(1),
        retry_initial: raw
            .retry_initial_ms
            .map_or(d.retry_initial, Duration::from_millis),
        retry_max: raw.retry_max_ms.map_or(d.retry_max, Duration::from_millis),
        hold_recheck: raw
            .hold_recheck_ms
            .map_or(d.hold_recheck, Duration::from_millis),
        per_recipient_per_minute: raw
            .per_recipient_per_minute
            .unwrap_or(d.per_recipient_per_minute),
        sink_concurrency: raw.sink_concurrency.unwrap_or(d.sink_concurrency).max(1),
        per_sink_per_second: raw.per_sink_per_second.unwrap_or(d.per_sink_per_second),
        deliver_timeout: raw
            .deliver_timeout_ms
            .map_or(d.deliver_timeout, Duration::from_millis),
        on_uncertain,
        fold_rate_limited: raw.fold_rate_limited.unwrap_or(d.fold_rate_limited),
    }
}

/// `[incidents]`: its responder groups must be known.
pub(super) fn incident_settings(
    c: &mut Collector<'_>,
    root: &Table,
    groups: &BTreeMap<String, Vec<String>>,
) -> IncidentSettings {
    let raw = section::<RawIncidents>(c, root, "incidents").unwrap_or_default();
    for g in &raw.responders {
        if !groups.contains_key(g.get_ref()) {
            c.at(
                Some(g.span()),
                format!(
                    "[incidents] responders: no group `{}` in [groups]",
                    g.get_ref()
                ),
            );
        }
    }
    IncidentSettings {
        responders: raw
            .responders
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
    }
}
