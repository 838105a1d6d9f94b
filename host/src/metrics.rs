//! The host's counters, gauges and the submit → deliver latency histogram, rendered as
//! Prometheus text for `/metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Every metric the host exports.
#[derive(Default)]
pub struct Metrics {
    /// (metric name, rendered labels) → value.
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    instance_up: Mutex<BTreeMap<String, bool>>,
    queue_depth: AtomicI64,
    latency: Mutex<Histogram>,
    /// Why the queue is down (`alertbridge_queue_up 0`), if it is.
    queue_fault: Mutex<Option<String>>,
    /// Queue gauges and counters (no labels).
    dedup_keys: AtomicU64,
    dedup_evictions: AtomicU64,
    queue_file_bytes: AtomicU64,
    queue_compactions: AtomicU64,
    queue_faults: AtomicU64,
    queue_set_aside: AtomicU64,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

impl Metrics {
    fn add(&self, name: &'static str, pairs: &[(&str, &str)], n: u64) {
        let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        *c.entry((name, labels(pairs))).or_default() += n;
    }

    pub fn accepted(&self, source: &str) {
        self.add(
            "alertbridge_alerts_accepted_total",
            &[("source", source)],
            1,
        );
    }

    pub fn duplicate(&self, source: &str) {
        self.add(
            "alertbridge_alerts_duplicate_total",
            &[("source", source)],
            1,
        );
    }

    pub fn rejected(&self, source: &str, reason: &str) {
        self.add(
            "alertbridge_alerts_rejected_total",
            &[("source", source), ("reason", reason)],
            1,
        );
    }

    /// One recipient's outcome through `sink`: delivered, skipped, held or failed.
    pub fn delivery(&self, sink: &str, outcome: &str) {
        self.add(
            "alertbridge_deliveries_total",
            &[("sink", sink), ("outcome", outcome)],
            1,
        );
    }

    /// Counts one send found uncertain after a restart (it began, no outcome was recorded), by
    /// what was done: `resent` (marked as a repeat) or `skipped` (`on_uncertain = "skip"`).
    pub fn uncertain(&self, sink: &str, action: &str) {
        self.add(
            "alertbridge_uncertain_sends_total",
            &[("sink", sink), ("action", action)],
            1,
        );
    }

    pub fn restart(&self, instance: &str) {
        self.add(
            "alertbridge_instance_restarts_total",
            &[("instance", instance)],
            1,
        );
    }

    pub fn set_instance_up(&self, instance: &str, up: bool) {
        self.instance_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(instance.to_owned(), up);
    }

    pub fn queue_depth_add(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn queue_depth(&self) -> i64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// Marks the queue down (with why) or up again.
    pub fn set_queue_fault(&self, reason: Option<String>) {
        *self
            .queue_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
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
        self.queue_faults.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_dedup_keys(&self, n: u64) {
        self.dedup_keys.store(n, Ordering::Relaxed);
    }

    /// Counts keys the dedup index's size bound (`dedup_max_keys`) pushed out.
    pub fn dedup_evicted(&self, n: u64) {
        self.dedup_evictions.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_queue_file_bytes(&self, n: u64) {
        self.queue_file_bytes.store(n, Ordering::Relaxed);
    }

    pub fn queue_compacted(&self) {
        self.queue_compactions.fetch_add(1, Ordering::Relaxed);
    }

    /// Undecodable queue records set aside, in all (they stay in the file's `set_aside` table).
    pub fn set_queue_set_aside(&self, n: u64) {
        self.queue_set_aside.store(n, Ordering::Relaxed);
    }

    /// Counts records set aside by this process.
    pub fn queue_set_aside_add(&self, n: u64) {
        self.add("alertbridge_queue_set_aside_total", &[], n);
    }

    /// Records the time from accept to the last delivery of an alert.
    pub fn observe_latency(&self, seconds: f64) {
        let mut h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The value of one counter, for tests and the status page.
    pub fn counter(&self, name: &str, pairs: &[(&str, &str)]) -> u64 {
        let key = labels(pairs);
        let c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        c.iter()
            .find(|((n, l), _)| *n == name && *l == key)
            .map_or(0, |(_, v)| *v)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let help = [
            (
                "alertbridge_alerts_accepted_total",
                "Alerts durably queued, by source.",
            ),
            (
                "alertbridge_alerts_duplicate_total",
                "Alerts taken once already within the dedup window, by source.",
            ),
            (
                "alertbridge_alerts_rejected_total",
                "Alerts refused, by source and reason.",
            ),
            (
                "alertbridge_deliveries_total",
                "Recipient outcomes, by sink and outcome.",
            ),
            (
                "alertbridge_uncertain_sends_total",
                "Sends that began before a restart with no recorded outcome, by sink and action (resent marked as a repeat, or skipped).",
            ),
            (
                "alertbridge_instance_restarts_total",
                "Times an instance was recreated after failing.",
            ),
            (
                "alertbridge_queue_set_aside_total",
                "Undecodable queue records set aside at start by this process.",
            ),
        ];
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, text) in help {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} counter");
            for ((n, l), v) in counters.iter() {
                if *n == name && l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else if *n == name {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        drop(counters);
        let _ = writeln!(
            out,
            "# HELP alertbridge_queue_depth Alerts accepted and not finished."
        );
        let _ = writeln!(
            out,
            "# TYPE alertbridge_queue_depth gauge\nalertbridge_queue_depth {}",
            self.queue_depth()
        );
        let up = u8::from(self.queue_fault().is_none());
        for (name, kind, text, value) in [
            (
                "alertbridge_queue_up",
                "gauge",
                "1 if the durable queue takes alerts, 0 while it is unavailable (see /healthz).",
                u64::from(up),
            ),
            (
                "alertbridge_queue_faults_total",
                "counter",
                "Storage faults (failed commits) that took the queue down until it reopened.",
                self.queue_faults.load(Ordering::Relaxed),
            ),
            (
                "alertbridge_queue_file_bytes",
                "gauge",
                "Size of the queue file.",
                self.queue_file_bytes.load(Ordering::Relaxed),
            ),
            (
                "alertbridge_queue_compactions_total",
                "counter",
                "Times the queue file was compacted (it was mostly free space).",
                self.queue_compactions.load(Ordering::Relaxed),
            ),
            (
                "alertbridge_queue_set_aside",
                "gauge",
                "Undecodable queue records set aside (see `alertbridge queue check`).",
                self.queue_set_aside.load(Ordering::Relaxed),
            ),
            (
                "alertbridge_dedup_keys",
                "gauge",
                "Dedup keys held in memory (bounded by dedup_max_keys and the dedup window).",
                self.dedup_keys.load(Ordering::Relaxed),
            ),
            (
                "alertbridge_dedup_evictions_total",
                "counter",
                "Dedup keys evicted, oldest first, because dedup_max_keys was reached.",
                self.dedup_evictions.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {text}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP alertbridge_instance_up 1 if the instance is healthy.\n# TYPE alertbridge_instance_up gauge"
        );
        for (name, up) in self
            .instance_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "alertbridge_instance_up{{{}}} {}",
                labels(&[("instance", name)]),
                u8::from(*up)
            );
        }
        let h = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let name = "alertbridge_delivery_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from accept to the last delivery of an alert.\n# TYPE {name} histogram"
        );
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
            h.count, h.sum, h.count
        );
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
}
