//! The host's counters, gauges and the submit → deliver latency histogram, kept in a
//! `prometheus-client` registry and rendered as Prometheus text (format 0.0.4) for `/metrics`.
//! This module names every metric, its labels and its help text; the crate does the counting,
//! the escaping and the exposition format.

use std::{
    borrow::Cow,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64},
    },
};

use prometheus_client::{
    encoding::prometheus_text,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// A sample's labels, in the order they are rendered: the names are the code's own (borrowed),
/// the values come from the config or the traffic.
type Labels = Vec<(Cow<'static, str>, String)>;
type Counters = Family<Labels, Counter>;
type UGauge = Gauge<u64, AtomicU64>;

/// Every metric the host exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    accepted: Counters,
    duplicate: Counters,
    rejected: Counters,
    deliveries: Counters,
    uncertain: Counters,
    restarts: Counters,
    set_aside_total: Counter,
    queue_depth: Gauge<i64, AtomicI64>,
    queue_up: Gauge<i64, AtomicI64>,
    queue_faults: Counter,
    queue_file_bytes: UGauge,
    queue_compactions: Counter,
    queue_set_aside: UGauge,
    dedup_keys: UGauge,
    dedup_evictions: Counter,
    instance_up: Family<Labels, Gauge<i64, AtomicI64>>,
    latency: Histogram,
    incidents_open: Gauge<i64, AtomicI64>,
    ack_seconds: Histogram,
    escalations: Counters,
    silenced: Counter,
    handed_over: Counter,
    taken_over: Counter,
    digests: Counter,
    digest_alerts: Counter,
    /// Why the queue is down (`alertbridge_queue_up 0`), if it is.
    queue_fault: Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        // Registered in the order they are rendered. Counters are named without `_total` and
        // help texts without their final full stop: the crate adds both when it renders.
        let mut counters = |name: &str, help: &str| {
            let family = Counters::default();
            registry.register(name, help, family.clone());
            family
        };
        let accepted = counters(
            "alertbridge_alerts_accepted",
            "Alerts durably queued, by source",
        );
        let duplicate = counters(
            "alertbridge_alerts_duplicate",
            "Alerts taken once already within the dedup window, by source",
        );
        let rejected = counters(
            "alertbridge_alerts_rejected",
            "Alerts refused, by source and reason",
        );
        let deliveries = counters(
            "alertbridge_deliveries",
            "Recipient outcomes, by sink and outcome",
        );
        let uncertain = counters(
            "alertbridge_uncertain_sends",
            "Sends that began before a restart with no recorded outcome, by sink and action \
             (resent marked as a repeat, or skipped)",
        );
        let restarts = counters(
            "alertbridge_instance_restarts",
            "Times an instance was recreated after failing",
        );
        let escalations = counters(
            "alertbridge_escalations",
            "Incident levels paged after the first (escalations, repeats, `esc`), by level",
        );
        let m = Self {
            escalations,
            silenced: Counter::default(),
            handed_over: Counter::default(),
            taken_over: Counter::default(),
            digests: Counter::default(),
            digest_alerts: Counter::default(),
            incidents_open: Gauge::default(),
            ack_seconds: Histogram::new(ACK_BUCKETS),
            accepted,
            duplicate,
            rejected,
            deliveries,
            uncertain,
            restarts,
            set_aside_total: Counter::default(),
            queue_depth: Gauge::default(),
            queue_up: Gauge::default(),
            queue_faults: Counter::default(),
            queue_file_bytes: UGauge::default(),
            queue_compactions: Counter::default(),
            queue_set_aside: UGauge::default(),
            dedup_keys: UGauge::default(),
            dedup_evictions: Counter::default(),
            instance_up: Family::default(),
            latency: Histogram::new(BUCKETS),
            queue_fault: Mutex::new(None),
            registry: Registry::default(),
        };
        m.queue_up.set(1);
        registry.register(
            "alertbridge_queue_set_aside",
            "Undecodable queue records set aside at start by this process",
            m.set_aside_total.clone(),
        );
        registry.register(
            "alertbridge_queue_depth",
            "Alerts accepted and not finished",
            m.queue_depth.clone(),
        );
        registry.register(
            "alertbridge_queue_up",
            "1 if the durable queue takes alerts, 0 while it is unavailable (see /healthz)",
            m.queue_up.clone(),
        );
        registry.register(
            "alertbridge_queue_faults",
            "Storage faults (failed commits) that took the queue down until it reopened",
            m.queue_faults.clone(),
        );
        registry.register(
            "alertbridge_queue_file_bytes",
            "Size of the queue file",
            m.queue_file_bytes.clone(),
        );
        registry.register(
            "alertbridge_queue_compactions",
            "Times the queue file was compacted (it was mostly free space)",
            m.queue_compactions.clone(),
        );
        registry.register(
            "alertbridge_queue_set_aside",
            "Undecodable queue records set aside (see `alertbridge queue check`)",
            m.queue_set_aside.clone(),
        );
        registry.register(
            "alertbridge_dedup_keys",
            "Dedup keys held in memory (bounded by dedup_max_keys and the dedup window)",
            m.dedup_keys.clone(),
        );
        registry.register(
            "alertbridge_dedup_evictions",
            "Dedup keys evicted, oldest first, because dedup_max_keys was reached",
            m.dedup_evictions.clone(),
        );
        registry.register(
            "alertbridge_instance_up",
            "1 if the instance is healthy",
            m.instance_up.clone(),
        );
        registry.register(
            "alertbridge_delivery_seconds",
            "Time from accept to the last delivery of an alert",
            m.latency.clone(),
        );
        registry.register(
            "alertbridge_incidents_open",
            "Incidents not resolved (open or acknowledged)",
            m.incidents_open.clone(),
        );
        registry.register(
            "alertbridge_incident_ack_seconds",
            "Time from an incident's first page to its acknowledgement",
            m.ack_seconds.clone(),
        );
        registry.register(
            "alertbridge_alerts_silenced",
            "Alerts an active silence kept from their recipients (each recipient is also counted \
             in alertbridge_deliveries_total with outcome silenced)",
            m.silenced.clone(),
        );
        registry.register(
            "alertbridge_alerts_handed_over",
            "Alerts this host let go of unfinished because another host took them over (their \
             lease ran out; shared queue only): it delivers them",
            m.handed_over.clone(),
        );
        registry.register(
            "alertbridge_alerts_taken_over",
            "Unfinished alerts this host took over from hosts whose lease ran out (shared queue \
             only); counted in alertbridge_alerts_accepted_total by the host that accepted them",
            m.taken_over.clone(),
        );
        registry.register(
            "alertbridge_digests",
            "Digest IMs a sink took (one IM carrying a group's alerts, or several that waited \
             out a recipient's rate limit)",
            m.digests.clone(),
        );
        registry.register(
            "alertbridge_digest_alerts",
            "Alerts carried by the digest IMs a sink took (one per alert and digest)",
            m.digest_alerts.clone(),
        );
        Self { registry, ..m }
    }
}

/// Upper bounds of the page → ack buckets, in seconds.
const ACK_BUCKETS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 14400.0,
];

/// `pairs` as a sample's labels.
fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|&(k, v)| (Cow::Borrowed(k), v.to_owned()))
        .collect()
}

impl Metrics {
    fn add(family: &Counters, pairs: &[(&'static str, &str)]) {
        family.get_or_create(&labels(pairs)).inc();
    }

    pub fn accepted(&self, source: &str) {
        Self::add(&self.accepted, &[("source", source)]);
    }

    pub fn duplicate(&self, source: &str) {
        Self::add(&self.duplicate, &[("source", source)]);
    }

    pub fn rejected(&self, source: &str, reason: &str) {
        Self::add(&self.rejected, &[("source", source), ("reason", reason)]);
    }

    /// One recipient's outcome through `sink`: delivered, skipped, held or failed.
    pub fn delivery(&self, sink: &str, outcome: &str) {
        Self::add(&self.deliveries, &[("sink", sink), ("outcome", outcome)]);
    }

    /// Counts one send found uncertain after a restart (it began, no outcome was recorded), by
    /// what was done: `resent` (marked as a repeat) or `skipped` (`on_uncertain = "skip"`).
    pub fn uncertain(&self, sink: &str, action: &str) {
        Self::add(&self.uncertain, &[("sink", sink), ("action", action)]);
    }

    pub fn restart(&self, instance: &str) {
        Self::add(&self.restarts, &[("instance", instance)]);
    }

    pub fn set_instance_up(&self, instance: &str, up: bool) {
        self.instance_up
            .get_or_create(&labels(&[("instance", instance)]))
            .set(i64::from(up));
    }

    pub fn queue_depth_add(&self, delta: i64) {
        self.queue_depth.inc_by(delta);
    }

    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.get()
    }

    /// Marks the queue down (with why) or up again.
    pub fn set_queue_fault(&self, reason: Option<String>) {
        let mut fault = self
            .queue_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.queue_up.set(i64::from(reason.is_none()));
        *fault = reason;
    }

    /// Why the queue is down, if it is.
    pub fn queue_fault(&self) -> Option<String> {
        self.queue_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts one storage fault (a failed commit that took the queue down).
    pub fn queue_fault_seen(&self) {
        self.queue_faults.inc();
    }

    pub fn set_dedup_keys(&self, n: u64) {
        self.dedup_keys.set(n);
    }

    /// Counts keys the dedup index's size bound (`dedup_max_keys`) pushed out.
    pub fn dedup_evicted(&self, n: u64) {
        self.dedup_evictions.inc_by(n);
    }

    pub fn set_queue_file_bytes(&self, n: u64) {
        self.queue_file_bytes.set(n);
    }

    pub fn queue_compacted(&self) {
        self.queue_compactions.inc();
    }

    /// Undecodable queue records set aside, in all (they stay in the file's `set_aside` table).
    pub fn set_queue_set_aside(&self, n: u64) {
        self.queue_set_aside.set(n);
    }

    /// Counts records set aside by this process.
    pub fn queue_set_aside_add(&self, n: u64) {
        self.set_aside_total.inc_by(n);
    }

    /// Records the time from accept to the last delivery of an alert.
    pub fn set_incidents_open(&self, n: i64) {
        self.incidents_open.set(n);
    }

    pub fn observe_ack_seconds(&self, seconds: f64) {
        self.ack_seconds.observe(seconds.max(0.0));
    }

    pub fn escalation(&self, level: usize) {
        Self::add(&self.escalations, &[("level", &level.to_string())]);
    }

    /// An alert was silenced (its unfinished recipients recorded `silenced`).
    pub fn alert_silenced(&self) {
        self.silenced.inc();
    }

    /// This host let go of an alert another host took over (its save was refused).
    pub fn alert_handed_over(&self) {
        self.handed_over.inc();
    }

    /// This host took over `n` alerts of hosts whose lease ran out.
    pub fn alerts_taken_over(&self, n: u64) {
        self.taken_over.inc_by(n);
    }

    /// A sink took a digest IM carrying `alerts` alerts.
    pub fn digest_sent(&self, alerts: usize) {
        self.digests.inc();
        self.digest_alerts.inc_by(alerts as u64);
    }

    pub fn observe_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// The value of one counter (its full name, `_total` included), for tests and the status
    /// page; 0 for a counter or label set never counted.
    pub fn counter(&self, name: &str, pairs: &[(&str, &str)]) -> u64 {
        let family = match name {
            "alertbridge_alerts_accepted_total" => &self.accepted,
            "alertbridge_alerts_duplicate_total" => &self.duplicate,
            "alertbridge_alerts_rejected_total" => &self.rejected,
            "alertbridge_deliveries_total" => &self.deliveries,
            "alertbridge_uncertain_sends_total" => &self.uncertain,
            "alertbridge_instance_restarts_total" => &self.restarts,
            _ => {
                let plain = match name {
                    "alertbridge_queue_set_aside_total" => &self.set_aside_total,
                    "alertbridge_queue_faults_total" => &self.queue_faults,
                    "alertbridge_queue_compactions_total" => &self.queue_compactions,
                    "alertbridge_dedup_evictions_total" => &self.dedup_evictions,
                    "alertbridge_alerts_handed_over_total" => &self.handed_over,
                    "alertbridge_alerts_taken_over_total" => &self.taken_over,
                    _ => return 0,
                };
                return if pairs.is_empty() { plain.get() } else { 0 };
            }
        };
        let key: Labels = pairs
            .iter()
            .map(|&(k, v)| (Cow::Owned(k.to_owned()), v.to_owned()))
            .collect();
        family.get(&key).map_or(0, |c| c.get())
    }

    /// Prometheus text exposition format (0.0.4; [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and every metric encodes infallibly.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histogram() {
        let m = Metrics::default();
        m.accepted("mail");
        m.accepted("mail");
        m.delivery("lync", "delivered");
        m.set_instance_up("lync", true);
        m.queue_depth_add(3);
        m.observe_latency(0.004);
        let text = m.render();
        assert!(
            text.contains("alertbridge_alerts_accepted_total{source=\"mail\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("alertbridge_deliveries_total{sink=\"lync\",outcome=\"delivered\"} 1")
        );
        assert!(text.contains("alertbridge_queue_depth 3"));
        assert!(text.contains("alertbridge_instance_up{instance=\"lync\"} 1"));
        assert!(text.contains("alertbridge_delivery_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("alertbridge_delivery_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("\nalertbridge_queue_up 1\n"), "{text}");
        m.set_queue_fault(Some("disk full".into()));
        m.dedup_evicted(3);
        m.queue_set_aside_add(1);
        let text = m.render();
        assert!(text.contains("\nalertbridge_queue_up 0\n"), "{text}");
        assert!(text.contains("\nalertbridge_dedup_evictions_total 3\n"));
        assert!(text.contains("\nalertbridge_queue_set_aside_total 1\n"));
        assert_eq!(
            m.counter("alertbridge_alerts_accepted_total", &[("source", "mail")]),
            2
        );
    }

    /// What the hand-written renderer printed for this state (captured from it before it was
    /// replaced): every name, label, HELP and TYPE line stays the same.
    const BEFORE: &str = r#"# HELP alertbridge_alerts_accepted_total Alerts durably queued, by source.
# TYPE alertbridge_alerts_accepted_total counter
alertbridge_alerts_accepted_total{source="hook"} 1
alertbridge_alerts_accepted_total{source="mail"} 2
# HELP alertbridge_alerts_duplicate_total Alerts taken once already within the dedup window, by source.
# TYPE alertbridge_alerts_duplicate_total counter
alertbridge_alerts_duplicate_total{source="mail"} 1
# HELP alertbridge_alerts_rejected_total Alerts refused, by source and reason.
# TYPE alertbridge_alerts_rejected_total counter
alertbridge_alerts_rejected_total{source="hook",reason="too_large"} 1
# HELP alertbridge_deliveries_total Recipient outcomes, by sink and outcome.
# TYPE alertbridge_deliveries_total counter
alertbridge_deliveries_total{sink="lync",outcome="delivered"} 1
alertbridge_deliveries_total{sink="lync",outcome="failed"} 1
# HELP alertbridge_uncertain_sends_total Sends that began before a restart with no recorded outcome, by sink and action (resent marked as a repeat, or skipped).
# TYPE alertbridge_uncertain_sends_total counter
alertbridge_uncertain_sends_total{sink="lync",action="resent"} 1
# HELP alertbridge_instance_restarts_total Times an instance was recreated after failing.
# TYPE alertbridge_instance_restarts_total counter
alertbridge_instance_restarts_total{instance="ocs"} 1
# HELP alertbridge_queue_set_aside_total Undecodable queue records set aside at start by this process.
# TYPE alertbridge_queue_set_aside_total counter
alertbridge_queue_set_aside_total 1
# HELP alertbridge_queue_depth Alerts accepted and not finished.
# TYPE alertbridge_queue_depth gauge
alertbridge_queue_depth 3
# HELP alertbridge_queue_up 1 if the durable queue takes alerts, 0 while it is unavailable (see /healthz).
# TYPE alertbridge_queue_up gauge
alertbridge_queue_up 0
# HELP alertbridge_queue_faults_total Storage faults (failed commits) that took the queue down until it reopened.
# TYPE alertbridge_queue_faults_total counter
alertbridge_queue_faults_total 1
# HELP alertbridge_queue_file_bytes Size of the queue file.
# TYPE alertbridge_queue_file_bytes gauge
alertbridge_queue_file_bytes 4096
# HELP alertbridge_queue_compactions_total Times the queue file was compacted (it was mostly free space).
# TYPE alertbridge_queue_compactions_total counter
alertbridge_queue_compactions_total 1
# HELP alertbridge_queue_set_aside Undecodable queue records set aside (see `alertbridge queue check`).
# TYPE alertbridge_queue_set_aside gauge
alertbridge_queue_set_aside 1
# HELP alertbridge_dedup_keys Dedup keys held in memory (bounded by dedup_max_keys and the dedup window).
# TYPE alertbridge_dedup_keys gauge
alertbridge_dedup_keys 7
# HELP alertbridge_dedup_evictions_total Dedup keys evicted, oldest first, because dedup_max_keys was reached.
# TYPE alertbridge_dedup_evictions_total counter
alertbridge_dedup_evictions_total 2
# HELP alertbridge_instance_up 1 if the instance is healthy.
# TYPE alertbridge_instance_up gauge
alertbridge_instance_up{instance="lync"} 1
alertbridge_instance_up{instance="we\"ird\\name\n"} 0
# HELP alertbridge_delivery_seconds Time from accept to the last delivery of an alert.
# TYPE alertbridge_delivery_seconds histogram
alertbridge_delivery_seconds_bucket{le="0.001"} 0
alertbridge_delivery_seconds_bucket{le="0.0025"} 0
alertbridge_delivery_seconds_bucket{le="0.005"} 1
alertbridge_delivery_seconds_bucket{le="0.01"} 1
alertbridge_delivery_seconds_bucket{le="0.025"} 1
alertbridge_delivery_seconds_bucket{le="0.05"} 1
alertbridge_delivery_seconds_bucket{le="0.1"} 1
alertbridge_delivery_seconds_bucket{le="0.25"} 1
alertbridge_delivery_seconds_bucket{le="0.5"} 2
alertbridge_delivery_seconds_bucket{le="1"} 2
alertbridge_delivery_seconds_bucket{le="2.5"} 2
alertbridge_delivery_seconds_bucket{le="5"} 2
alertbridge_delivery_seconds_bucket{le="10"} 2
alertbridge_delivery_seconds_bucket{le="60"} 2
alertbridge_delivery_seconds_bucket{le="+Inf"} 3
alertbridge_delivery_seconds_sum 100.304
alertbridge_delivery_seconds_count 3
"#;

    /// The families in order, each as its HELP and TYPE lines and its samples sorted (a label
    /// family's samples come in no set order).
    fn families(text: &str) -> Vec<Vec<&str>> {
        let mut out: Vec<Vec<&str>> = Vec::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || out.is_empty() {
                out.push(Vec::new());
            }
            out.last_mut().unwrap().push(line);
        }
        for family in &mut out {
            family[2..].sort_unstable();
        }
        out
    }

    #[test]
    fn every_name_label_help_and_type_is_the_one_before() {
        let m = Metrics::default();
        for source in ["mail", "mail", "hook"] {
            m.accepted(source);
        }
        m.duplicate("mail");
        m.rejected("hook", "too_large");
        m.delivery("lync", "delivered");
        m.delivery("lync", "failed");
        m.uncertain("lync", "resent");
        m.restart("ocs");
        m.set_instance_up("lync", true);
        // Label values are escaped: a quote, a backslash and a newline stay inside the value.
        m.set_instance_up("we\"ird\\name\n", false);
        m.queue_depth_add(3);
        m.set_queue_fault(Some("disk full".into()));
        m.queue_fault_seen();
        m.set_dedup_keys(7);
        m.dedup_evicted(2);
        m.set_queue_file_bytes(4096);
        m.queue_compacted();
        m.set_queue_set_aside(1);
        m.queue_set_aside_add(1);
        for seconds in [0.004, 0.3, 100.0] {
            m.observe_latency(seconds);
        }
        let text = m.render();
        // The incident families (issue 14), the silenced alerts and the digests (issue 16) come
        // after the ones before, which are unchanged.
        let old: Vec<_> = families(&text)
            .into_iter()
            .filter(|f| {
                !f[0].contains("alertbridge_incident")
                    && !f[0].contains("escalations")
                    && !f[0].contains("alertbridge_alerts_silenced")
                    && !f[0].contains("alertbridge_digest")
                    && !f[0].contains("alertbridge_alerts_handed_over")
                    && !f[0].contains("alertbridge_alerts_taken_over")
            })
            .collect();
        assert_eq!(old, families(BEFORE), "{text}");
        assert_eq!(
            m.counter(
                "alertbridge_alerts_rejected_total",
                &[("source", "hook"), ("reason", "too_large")]
            ),
            1
        );
        assert_eq!(
            m.counter("alertbridge_alerts_rejected_total", &[("source", "hook")]),
            0
        );
        assert_eq!(m.counter("alertbridge_queue_faults_total", &[]), 1);
        assert_eq!(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    }

    /// A fresh host renders every unlabelled family at zero and the queue up; a labelled family
    /// (by source, sink or instance) appears with its first sample, as client libraries do.
    #[test]
    fn a_fresh_registry_renders_every_family() {
        let text = Metrics::default().render();
        for line in [
            "alertbridge_queue_set_aside_total 0",
            "alertbridge_queue_up 1",
            "alertbridge_queue_depth 0",
            "alertbridge_delivery_seconds_bucket{le=\"+Inf\"} 0",
            "alertbridge_delivery_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert_eq!(text.matches("# TYPE ").count(), 17, "{text}");
        assert!(
            text.contains("alertbridge_alerts_handed_over_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("alertbridge_alerts_taken_over_total 0\n"),
            "{text}"
        );
        assert!(text.contains("alertbridge_digests_total 0\n"), "{text}");
        assert!(
            text.contains("alertbridge_digest_alerts_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("alertbridge_alerts_silenced_total 0\n"),
            "{text}"
        );
        assert!(text.contains("alertbridge_incidents_open 0\n"), "{text}");
        assert!(
            text.contains("alertbridge_incident_ack_seconds_count 0\n"),
            "{text}"
        );
    }
}
