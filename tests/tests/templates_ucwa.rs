//! Message templates end to end: the real `alertbridge` binary with the real `test-source` and
//! `ucwa` plugin files against the UCWA simulator — a route's template shapes what the user
//! receives, a sink's template serves the routes without one, a hostile label arrives inert
//! (control characters gone in plain text, escaped in HTML), `alertbridge check` points at a
//! broken template's line and column, and `alertbridge route --alert` prints the rendered text.

use std::time::Duration;

use alertbridge_testbed::{
    harness::{Host, cli, emit, free_port, wait_until},
    ucwa_sim::{SimConfig, Simulator, UserSpec},
};

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";

fn sink(name: &str, discover: &str, format: &str, template: &str) -> String {
    format!(
        r#"
[[sink]]
name = "{name}"
plugin = "ucwa"
{template}
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
presence_cache_ms = 0
request_timeout_secs = 5
message_format = "{format}"
"#
    )
}

fn config(dir: &std::path::Path, admin: u16, control: u16, discover: &str) -> String {
    let d = dir.display();
    let plain = sink("lync", discover, "plain", "");
    let html = sink(
        "lync-html",
        discover,
        "html",
        r#"template = "{{ subject }} / <i>seq</i> {{ labels.seq }}""#,
    );
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000
public_url = "https://alertbridge.contoso.com/bridge/"

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 100
retry_max_ms = 500
presence_cache_ms = 0

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"
{plain}{html}
[groups]
ops = ["{ALICE}"]
leads = ["{BOB}"]

[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
continue = true
template = """
{{{{ severity | upper }}}}: {{{{ subject }}}}
seq={{{{ labels.seq }}}}{{% if incident %}} (never: not a page){{% endif %}}
{{{{ alert_url }}}}
"""

[[route]]
name = "leads"
groups = ["leads"]
sinks = ["lync-html"]
"#
    )
}

#[test]
fn a_route_template_shapes_the_im_and_a_hostile_label_arrives_inert() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let sim = rt
        .block_on(Simulator::start(SimConfig {
            users: vec![
                UserSpec::new("alerts@contoso.com", "alert-pw", "Online"),
                UserSpec::new(ALICE, "a", "Online"),
                UserSpec::new(BOB, "b", "Online"),
            ],
            ..SimConfig::default()
        }))
        .expect("start the UCWA simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, &sim.discover_url()),
    );
    // The label `seq` is `<prefix>:0`: markup, a script and a terminal escape sequence.
    let v = emit(
        control,
        "count=1&prefix=<script>alert('x')</script>\u{1b}[31m&subject=Disk%20full&severity=critical",
    );
    let id = v["ids"][0].as_u64().expect("an alert id");
    wait_until("both IMs", Duration::from_secs(30), || {
        !sim.received(ALICE).is_empty() && !sim.received(BOB).is_empty()
    });

    let alice = sim.received(ALICE);
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert_eq!(
        alice[0].subject, "Disk full 0",
        "the subject stays the alert's"
    );
    assert_eq!(alice[0].content_type, "text/plain");
    assert_eq!(
        alice[0].text,
        format!(
            "CRITICAL: Disk full 0\nseq=<script>alert('x')</script>[31m:0\n\
             https://alertbridge.contoso.com/bridge/?alert={id}"
        ),
        "the route's template, plain: not HTML-escaped, the ESC character gone"
    );

    // Bob's route has no template: the sink's, rendered as HTML by the host — the template's
    // markup kept, every value escaped — and sent as it is by the HTML sink.
    let bob = sim.received(BOB);
    assert_eq!(bob.len(), 1, "{bob:?}");
    assert_eq!(bob[0].content_type, "text/html");
    assert!(
        bob[0]
            .text
            .contains("Disk full 0 / <i>seq</i> &lt;script&gt;"),
        "{}",
        bob[0].text
    );
    assert!(
        !bob[0].text.contains("<script") && !bob[0].text.contains('\u{1b}'),
        "{}",
        bob[0].text
    );
    let a = host.api(&format!("/api/v1/alerts/{id}"));
    assert_eq!(
        a["alert"]["labels"]["seq"], "<script>alert('x')</script>\u{1b}[31m:0",
        "{a:#}"
    );
    drop(host);
    rt.block_on(sim.stop());
}

#[test]
fn check_points_at_a_broken_template_and_route_prints_the_rendered_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = r#"[host]
data_dir = "data"
public_url = "https://ab.example.com"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "https://lyncdiscover.contoso.com"
username = "alerts@contoso.com"
password = "pw"

[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "ops"
groups = ["ops"]
sinks = ["lync"]
template = """
{{ severity | upper }} {{ subject }}
host {{ labels.host | default("?") }}, see {{ alert_url }}
"""
"#;
    let config = dir.path().join("alertbridge.toml");
    // Line 22 of the file is the template's second line, where the unknown filter is used.
    let broken = base.replace(
        "host {{ labels.host | default(\"?\") }}",
        "{{ labels.host | nope }}",
    );
    std::fs::write(&config, &broken).unwrap();
    let (ok, out) = cli(&["check", "--config", config.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}:22:18: route `ops`: template: unknown filter",
            config.display()
        )),
        "{out}"
    );

    std::fs::write(&config, base).unwrap();
    let alert = dir.path().join("alert.json");
    std::fs::write(
        &alert,
        r#"{"subject": "Disk full", "severity": "high", "labels": {"host": "db01"}}"#,
    )
    .unwrap();
    let (ok, out) = cli(&[
        "route",
        "--config",
        config.to_str().unwrap(),
        "--alert",
        alert.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "message of route ops through lync to sip:alice@contoso.com:\n  \
             template: route `ops`'s\n  subject: Disk full\n  text:\n    \
             | HIGH Disk full\n    | host db01, see https://ab.example.com/?alert=0\n"
        ),
        "{out}"
    );
}
