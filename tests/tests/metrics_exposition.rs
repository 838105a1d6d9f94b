//! `/metrics` of a running host, after real traffic (accepted, duplicate, delivered and failed
//! alerts, latencies), read whole by a strict parser of the Prometheus text format 0.0.4: every
//! line is a HELP, a TYPE or a sample of the family declared above it; names, label escapes and
//! values are well formed; no family or series appears twice; histogram buckets are cumulative
//! and end in `+Inf` equal to `_count`. Then the figures are checked against what was sent.

use std::{
    collections::{BTreeMap, HashSet},
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::Duration,
};

use alertbridge_testbed::harness::{Host, emit, free_port, wait_until};

const LONG: Duration = Duration::from_secs(30);

/// One sample line: its name, its labels in order, its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A metric family: its TYPE, its HELP text (unescaped) and its samples in order.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: String,
    samples: Vec<Sample>,
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':') && !s.starts_with("__")
}

/// `text` with the escapes `escapes` allows (`\\` and `\n`, plus `\"` in label values) undone.
fn unescape(text: &str, quote: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some('n') => out.push('\n'),
                Some('"') if quote => out.push('"'),
                other => return Err(format!("bad escape \\{other:?} in {text:?}")),
            },
            '"' if quote => return Err(format!("unescaped quote in {text:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("not a value: {s:?}")),
    }
}

/// `name{a="x",b="y"} value`.
fn sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err(format!("no value: {line:?}")),
    };
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    let rest = match rest.strip_prefix('{') {
        None => rest,
        Some(mut inner) => {
            loop {
                let Some((key, after)) = inner.split_once("=\"") else {
                    return Err(format!("bad labels: {line:?}"));
                };
                if !is_label_name(key) {
                    return Err(format!("bad label name {key:?} in {line:?}"));
                }
                // The value ends at the first quote not escaped.
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| format!("unterminated label value: {line:?}"))?;
                labels.push((key.to_owned(), unescape(&after[..end], true)?));
                let after = &after[end + 1..];
                if let Some(next) = after.strip_prefix(',') {
                    inner = next;
                } else if let Some(done) = after.strip_prefix('}') {
                    break done;
                } else {
                    return Err(format!("bad labels: {line:?}"));
                }
            }
        }
    };
    let v = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("no space before the value: {line:?}"))?;
    if v.contains(' ') {
        return Err(format!("a timestamp or junk after the value: {line:?}"));
    }
    let keys: HashSet<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
    if keys.len() != labels.len() {
        return Err(format!("a label twice: {line:?}"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: value(v)?,
    })
}

/// The family a sample of `name` belongs to, given the family declared last.
fn belongs(family: &str, kind: &str, name: &str) -> bool {
    match kind {
        "histogram" => [
            format!("{family}_bucket"),
            format!("{family}_sum"),
            format!("{family}_count"),
        ]
        .contains(&name.to_owned()),
        _ => name == family,
    }
}

/// Parses a whole exposition, strictly.
fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if !is_name(name) || families.contains_key(name) {
                return Err(format!("HELP for a bad or repeated family: {line:?}"));
            }
            let help = unescape(help, false)?;
            families.insert(
                name.to_owned(),
                Family {
                    help,
                    ..Family::default()
                },
            );
            current = Some(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line:?}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("unknown type: {line:?}"));
            }
            let family = match (&current, families.get_mut(name)) {
                (Some(c), Some(f)) if c == name && f.kind.is_empty() && f.samples.is_empty() => f,
                _ => return Err(format!("TYPE not right after its HELP: {line:?}")),
            };
            family.kind = kind.to_owned();
        } else if line.starts_with('#') || line.trim().is_empty() {
            return Err(format!(
                "a line that is neither HELP, TYPE nor sample: {line:?}"
            ));
        } else {
            let s = sample(line)?;
            let name = current
                .as_ref()
                .ok_or(format!("a sample before any family: {line:?}"))?;
            let family = families.get_mut(name).expect("declared");
            if family.kind.is_empty() || !belongs(name, &family.kind, &s.name) {
                return Err(format!(
                    "sample {line:?} is not of family {name} ({})",
                    family.kind
                ));
            }
            if family.kind == "counter" && (s.value.is_nan() || s.value < 0.0) {
                return Err(format!("a negative counter: {line:?}"));
            }
            if !series.insert(format!("{}{:?}", s.name, s.labels)) {
                return Err(format!("a series twice: {line:?}"));
            }
            family.samples.push(s);
        }
    }
    for (name, family) in &families {
        if family.kind.is_empty() {
            return Err(format!("family {name} has no TYPE"));
        }
        if family.kind == "histogram" {
            check_histogram(name, family)?;
        }
    }
    Ok(families)
}

/// Buckets ascending in `le`, counts cumulative, the last `+Inf` and equal to `_count`.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    let buckets: Vec<&Sample> = family
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .collect();
    let mut last = (f64::NEG_INFINITY, 0.0);
    for b in &buckets {
        let le = b
            .labels
            .iter()
            .find(|(k, _)| k == "le")
            .ok_or(format!("{name}: a bucket without le"))?;
        let le = value(&le.1)?;
        if le <= last.0 || b.value < last.1 {
            return Err(format!(
                "{name}: buckets not ascending and cumulative at le={le}"
            ));
        }
        last = (le, b.value);
    }
    let count = family
        .samples
        .iter()
        .find(|s| s.name == format!("{name}_count"))
        .ok_or(format!("{name}: no _count"))?;
    if last.0 != f64::INFINITY || last.1 != count.value {
        return Err(format!(
            "{name}: the +Inf bucket is not last or not equal to _count"
        ));
    }
    if !family
        .samples
        .iter()
        .any(|s| s.name == format!("{name}_sum"))
    {
        return Err(format!("{name}: no _sum"));
    }
    Ok(())
}

/// A raw GET: the response head and body.
fn scrape(admin: &str) -> (String, String) {
    let hostport = admin.strip_prefix("http://").unwrap();
    let mut s = TcpStream::connect(hostport).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: {hostport}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

fn config(dir: &Path, admin: u16, control: u16) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 0
max_attempts = 1

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
outcome = {{ "sip:nobody@x" = "failed_permanent" }}

[groups]
ops = ["sip:alice@x", "sip:nobody@x"]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["sink"]
"#
    )
}

fn sample_of<'f>(
    families: &'f BTreeMap<String, Family>,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'f Sample> {
    families.values().flat_map(|f| &f.samples).find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && s.labels
                .iter()
                .zip(labels)
                .all(|((k, v), (k2, v2))| k == k2 && v == v2)
    })
}

#[test]
fn the_whole_metrics_page_parses_and_counts_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(dir.path(), admin, &config(dir.path(), admin, control));
    let first = emit(control, "count=4&prefix=m&subject=disk");
    assert_eq!(first["accepted"], 4, "{first}");
    let again = emit(control, "count=4&prefix=m&subject=disk");
    assert_eq!(again["duplicates"], 4, "{again}");

    let mut families = BTreeMap::new();
    wait_until("every delivery counted", LONG, || {
        let (_, body) = scrape(&host.admin);
        families = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        sample_of(&families, "alertbridge_delivery_seconds_count", &[])
            .is_some_and(|s| s.value == 4.0)
            && sample_of(
                &families,
                "alertbridge_deliveries_total",
                &[("sink", "sink"), ("outcome", "failed")],
            )
            .is_some_and(|s| s.value == 4.0)
    });
    let (head, body) = scrape(&host.admin);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let families = parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    // Every family the host exports is there, with its type and help; a labelled family
    // appears with its first sample, so those nothing counted here are absent.
    let never = [
        "alertbridge_alerts_rejected_total",
        "alertbridge_uncertain_sends_total",
        "alertbridge_instance_restarts_total",
        "alertbridge_escalations_total",
    ];
    let expected = [
        ("alertbridge_alerts_accepted_total", "counter"),
        ("alertbridge_alerts_duplicate_total", "counter"),
        ("alertbridge_alerts_rejected_total", "counter"),
        ("alertbridge_deliveries_total", "counter"),
        ("alertbridge_uncertain_sends_total", "counter"),
        ("alertbridge_instance_restarts_total", "counter"),
        ("alertbridge_queue_set_aside_total", "counter"),
        ("alertbridge_queue_depth", "gauge"),
        ("alertbridge_queue_up", "gauge"),
        ("alertbridge_queue_faults_total", "counter"),
        ("alertbridge_queue_file_bytes", "gauge"),
        ("alertbridge_queue_compactions_total", "counter"),
        ("alertbridge_queue_set_aside", "gauge"),
        ("alertbridge_dedup_keys", "gauge"),
        ("alertbridge_dedup_evictions_total", "counter"),
        ("alertbridge_instance_up", "gauge"),
        ("alertbridge_delivery_seconds", "histogram"),
        ("alertbridge_incidents_open", "gauge"),
        ("alertbridge_incident_ack_seconds", "histogram"),
        ("alertbridge_escalations_total", "counter"),
        ("alertbridge_alerts_silenced_total", "counter"),
        ("alertbridge_alerts_handed_over_total", "counter"),
        ("alertbridge_alerts_taken_over_total", "counter"),
        ("alertbridge_digests_total", "counter"),
        ("alertbridge_digest_alerts_total", "counter"),
    ];
    let names: Vec<&str> = families.keys().map(String::as_str).collect();
    let mut want: Vec<&str> = expected
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !never.contains(n))
        .collect();
    want.sort_unstable();
    assert_eq!(names, want, "{body}");
    for (name, kind) in expected.into_iter().filter(|(n, _)| !never.contains(n)) {
        let f = &families[name];
        assert_eq!(f.kind, kind, "{name}");
        assert!(
            f.help.ends_with('.') && f.help.len() > 10,
            "{name}: {:?}",
            f.help
        );
    }

    let value = |name: &str, labels: &[(&str, &str)]| {
        sample_of(&families, name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in\n{body}"))
            .value
    };
    assert_eq!(
        value("alertbridge_alerts_accepted_total", &[("source", "src")]),
        4.0
    );
    assert_eq!(
        value("alertbridge_alerts_duplicate_total", &[("source", "src")]),
        4.0
    );
    let delivered = [("sink", "sink"), ("outcome", "delivered")];
    assert_eq!(value("alertbridge_deliveries_total", &delivered), 4.0);
    assert_eq!(
        value("alertbridge_instance_up", &[("instance", "src")]),
        1.0
    );
    assert_eq!(
        value("alertbridge_instance_up", &[("instance", "sink")]),
        1.0
    );
    assert_eq!(value("alertbridge_queue_up", &[]), 1.0);
    assert_eq!(value("alertbridge_queue_depth", &[]), 0.0);
    assert_eq!(value("alertbridge_dedup_keys", &[]), 4.0);
    assert!(value("alertbridge_queue_file_bytes", &[]) > 0.0);
    assert_eq!(
        value("alertbridge_delivery_seconds_bucket", &[("le", "+Inf")]),
        4.0
    );
    assert!(value("alertbridge_delivery_seconds_sum", &[]) > 0.0);
}

/// The parser refuses what a scraper would: it is no rubber stamp.
#[test]
fn the_parser_refuses_broken_expositions() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n";
    parse(ok).unwrap();
    for bad in [
        "a_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\"\"} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"a\nb\"} 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP a A.\n# TYPE a gauge\na one\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad:?}");
    }
}
