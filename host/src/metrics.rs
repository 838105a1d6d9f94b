//! The host's counters, gauges and the submit → deliver latency histogram, rendered as
//! Prometheus text for `/metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
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
                "alertbridge_instance_restarts_total",
                "Times an instance was recreated after failing.",
            ),
        ];
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, text) in help {
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} counter");
            for ((n, l), v) in counters.iter() {
                if *n == name {
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
        assert_eq!(
            m.counter("alertbridge_alerts_accepted_total", &[("source", "mail")]),
            2
        );
    }
}
