//! Templates: rendering, escaping in both forms, the size and fuel bounds, fall-back to the
//! alert's own text, and compile errors at their place in the config file.

use std::path::Path;

use alertbridge_plugin_api::{Alert, Severity};

use super::*;
use crate::{config::Config, model::StoredAlert};

fn stored() -> StoredAlert {
    let mut a = Alert::new("Disk full on db01");
    a.body = "/var at 98%\nsecond line".into();
    a.severity = Severity::CRITICAL;
    a.labels.insert("host".into(), "db01".into());
    a.dedup_key = Some("db01-disk".into());
    a.attributes.insert(
        "alertmanager.annotation.runbook".into(),
        "https://wiki/disk".into(),
    );
    let mut s = StoredAlert::new(42, "monitoring", a, 1_796_119_200_000);
    s.uid = "u1".into();
    s
}

fn one(template: &str) -> Templates {
    Templates::compile(vec![(Owner::Route("r".into()), template.into())], "").unwrap()
}

#[test]
fn without_a_template_the_message_is_the_alerts_own_text() {
    let t = Templates::default();
    let s = stored();
    let r = t.render("r", "lync", &Context::alert(&s));
    assert_eq!(
        r,
        Rendered {
            subject: s.alert.subject.clone(),
            text: s.alert.body.clone(),
            ..Rendered::default()
        }
    );
    // The same as the documented equivalent template.
    let same = one("{{ text }}").render("r", "lync", &Context::alert(&s));
    assert_eq!((same.subject, same.text), (r.subject, r.text));
}

#[test]
fn renders_fields_labels_annotations_and_the_route_template_wins_over_the_sinks() {
    let t = Templates::compile(
        vec![
            (
                Owner::Route("r".into()),
                "[{{ severity | upper }}] {{ title }} on {{ labels.host }} (#{{ id }}, {{ source }}, \
                 {{ dedup_key }}, {{ received }}) {{ annotations.runbook }} {{ labels.nope }}|\
                 {{ received_ms | datetime }}|{{ alert_url }}"
                    .into(),
            ),
            (Owner::Sink("lync".into()), "sink: {{ subject }}".into()),
        ],
        "https://ab.example.com/",
    )
    .unwrap();
    let ctx = Context::alert(&stored());
    let r = t.render("r", "lync", &ctx);
    assert_eq!(
        r.text,
        "[CRITICAL] Disk full on db01 on db01 (#42, monitoring, db01-disk, 2026-12-01T10:00:00Z) \
         https://wiki/disk |2026-12-01T10:00:00Z|https://ab.example.com/?alert=42"
    );
    assert_eq!(r.subject, "Disk full on db01", "the subject is the alert's");
    assert_eq!(r.template, Some(Owner::Route("r".into())));
    let other = t.render("other", "lync", &ctx);
    assert_eq!(other.text, "sink: Disk full on db01");
    assert_eq!(other.template, Some(Owner::Sink("lync".into())));
    assert_eq!(t.render("other", "ocs", &ctx).template, None);
}

#[test]
fn html_escapes_every_value_and_plain_text_loses_only_control_characters() {
    let mut s = stored();
    s.alert.labels.insert(
        "host".into(),
        "<script>alert('x')</script>&\u{7}\u{1b}[31m".into(),
    );
    let t = one("<b>{{ subject }}</b>\r\n{{ labels.host }}\n{{ text }}\t\n\n");
    let r = t.render("r", "lync", &Context::alert(&s));
    assert_eq!(
        r.text,
        "<b>Disk full on db01</b>\n<script>alert('x')</script>&[31m\n/var at 98%\nsecond line",
        "plain: not escaped; CR, BEL and ESC gone; trailing blanks off"
    );
    assert_eq!(
        r.html.as_deref(),
        Some(
            "<b>Disk full on db01</b><br/>&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt;&amp;[31m<br/>\
             &#x2f;var at 98%<br/>second line"
        ),
        "HTML: the template's own markup stays, every value is escaped, lines become <br/>"
    );
}

#[test]
fn the_rendered_size_is_bounded_and_cut_visibly() {
    let mut s = stored();
    s.alert.body = "é".repeat(40_000);
    let r = one("{{ text }}{{ text }}").render("r", "lync", &Context::alert(&s));
    assert!(r.text.len() <= MAX_RENDERED_BYTES, "{}", r.text.len());
    assert!(r.text.len() > MAX_RENDERED_BYTES - 16);
    assert!(r.text.ends_with(output::CUT_MARK));
    assert!(r.error.is_none(), "a cut text is still the template's");
    let html = r.html.unwrap();
    assert!(html.len() <= MAX_RENDERED_BYTES && html.ends_with(output::CUT_MARK));

    // A cut never leaves half an entity in HTML.
    s.alert.body = "&".repeat(10_000);
    let html = one("{{ text }}")
        .render("r", "lync", &Context::alert(&s))
        .html
        .unwrap();
    let kept = html.strip_suffix(output::CUT_MARK).unwrap();
    assert!(kept.ends_with("&amp;") && kept.len() <= MAX_RENDERED_BYTES);
}

#[test]
fn a_runaway_template_runs_out_of_fuel_and_the_alerts_own_text_is_sent() {
    let t = one("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}x");
    let s = stored();
    let started = std::time::Instant::now();
    let r = t.render("r", "lync", &Context::alert(&s));
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(
        (r.subject.as_str(), r.text.as_str()),
        ("Disk full on db01", s.alert.body.as_str())
    );
    assert_eq!(r.html, None);
    let error = r.error.unwrap();
    assert!(error.starts_with("route `r`: "), "{error}");
    assert!(error.contains("fuel"), "{error}");

    // A value error at render time (not knowable at compile time) falls back the same way.
    let r = one("{{ subject + 1 }}").render("r", "lync", &Context::alert(&s));
    assert!(r.error.is_some() && r.text == s.alert.body);
}

#[test]
fn a_group_context_lists_its_alerts_and_counts_the_rest() {
    let alerts: Vec<StoredAlert> = (0..250)
        .map(|i| {
            let mut s = stored();
            s.id = i;
            s.alert.labels.insert("host".into(), format!("web{i:02}"));
            s
        })
        .collect();
    let refs: Vec<&StoredAlert> = alerts.iter().collect();
    let ctx = Context::group("[FIRING ×250] Disk full", "web00, web01, …", &refs);
    let t = one(
        "{{ subject }}: {% for a in alerts[:3] %}{{ a.labels.host }} {% endfor %}({{ count }}, {{ alerts | length }} listed, +{{ more }})",
    );
    assert_eq!(
        t.render("r", "lync", &ctx).text,
        "[FIRING ×250] Disk full: web00 web01 web02 (250, 200 listed, +50)"
    );
    assert_eq!(
        Templates::default().render("r", "lync", &ctx).text,
        "web00, web01, …"
    );
}

#[test]
fn an_incident_page_knows_its_number_and_reply_hint() {
    let mut a = Alert::new("[#7] Disk full — reply `ack 7`, `resolve 7` or `esc 7`");
    a.labels.insert("incident".into(), "7".into());
    let page = StoredAlert::new(1, "incidents", a.clone(), 0);
    let t =
        one("{% if incident %}Incident {{ incident }}: {{ reply_hint }}{% else %}none{% endif %}");
    assert_eq!(
        t.render("r", "lync", &Context::alert(&page)).text,
        "Incident 7: reply `ack 7`, `resolve 7` or `esc 7`"
    );
    let not_a_page = StoredAlert::new(1, "monitoring", a, 0);
    assert_eq!(
        t.render("r", "lync", &Context::alert(&not_a_page)).text,
        "none"
    );
}

#[test]
fn compile_errors_name_the_line_and_column_within_the_template() {
    let errors = Templates::compile(
        vec![
            (
                Owner::Route("a".into()),
                "ok {{ subject }}\n  {% if %}".into(),
            ),
            (
                Owner::Sink("s".into()),
                "{{ subject | no_such_filter }}".into(),
            ),
            (
                Owner::Route("fine".into()),
                "{{ text | truncate(5) }}".into(),
            ),
        ],
        "",
    )
    .unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        (errors[0].owner.clone(), errors[0].line),
        (Owner::Route("a".into()), 2)
    );
    assert!(errors[0].message.contains("syntax error"), "{}", errors[0]);
    assert_eq!(
        (errors[1].line, errors[1].column),
        (1, 14),
        "found by the trial render, at the filter's name: {}",
        errors[1]
    );
    assert!(
        errors[1].message.contains("unknown filter"),
        "{}",
        errors[1]
    );
}

const BASE: &str = "[host]\ndata_dir = \"/tmp/x\"\n[[sink]]\nname = \"lync\"\nplugin = \"ucwa\"\n\
                    [groups]\nops = [\"sip:a@x\"]\n";

fn check(text: &str) -> Vec<String> {
    match Config::parse(Path::new("t.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn config_errors_point_into_the_file_inline_and_in_a_template_file() {
    // Line 8 holds the one-line template; the error is at its column 20 (`{% if %}` ends at
    // `%}`, the first character after the quote is column 12).
    let text = format!(
        "{BASE}[[route]]\nname = \"r\"\ngroups = [\"ops\"]\nsinks = [\"lync\"]\ntemplate = \"Hi {{{{ x }}}} {{% if %}}\"\n"
    );
    let errors = check(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("t.toml:12:"),
        "the template's line in the file: {errors:?}"
    );
    assert!(
        errors[0].contains("route `r`: template: syntax error"),
        "{errors:?}"
    );

    // A multi-line string: template line 3 is file line 14 (the line break after """ is not
    // part of it).
    let text = format!(
        "{BASE}[[route]]\nname = \"r\"\ngroups = [\"ops\"]\nsinks = [\"lync\"]\ntemplate = \"\"\"\nline one\nline two\n   {{{{ subject | nope }}}}\n\"\"\"\n"
    );
    let errors = check(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("t.toml:15:17: route `r`: template: unknown filter"),
        "{errors:?}"
    );

    // A template file: its own name, line and column.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lync.j2"), "fine\n{{ subject }\n").unwrap();
    let config = dir.path().join("c.toml");
    let text = BASE.replace(
        "plugin = \"ucwa\"\n",
        "plugin = \"ucwa\"\ntemplate_file = \"lync.j2\"\n",
    );
    std::fs::write(&config, &text).unwrap();
    let errors: Vec<String> = Config::load(&config)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    let file = dir.path().join("lync.j2");
    assert_eq!(errors.len(), 1, "{errors:?}\n{text}");
    assert!(
        errors[0].starts_with(&format!("{}:2:", file.display())),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("sink `lync`: template: syntax error"),
        "{errors:?}"
    );

    std::fs::remove_file(&file).unwrap();
    let errors = check_file(&config);
    assert!(
        errors[0].contains("sink `lync`: template_file") && errors[0].contains("lync.j2"),
        "{errors:?}"
    );
}

fn check_file(path: &Path) -> Vec<String> {
    Config::load(path)
        .err()
        .map(|e| e.0.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn public_url_and_template_keys_are_checked() {
    for (url, ok) in [
        ("https://ab.example.com", true),
        ("http://10.0.0.1:9180/bridge/", true),
        ("ftp://x", false),
        ("https://", false),
        ("https://x/?a=1", false),
        ("https://u@x", false),
        ("https://x y", false),
    ] {
        let text = BASE.replace("[host]\n", &format!("[host]\npublic_url = {url:?}\n"));
        let errors = check(&text);
        assert_eq!(errors.is_empty(), ok, "{url}: {errors:?}");
        if !ok {
            assert!(
                errors[0].starts_with("t.toml:2:14: [host] public_url: "),
                "{errors:?}"
            );
        }
    }
    let config = Config::parse(
        Path::new("t.toml"),
        &BASE.replace(
            "[host]\n",
            "[host]\npublic_url = \"https://ab.example.com/\"\n",
        ),
    )
    .unwrap();
    assert_eq!(
        config.router.templates.public_url(),
        "https://ab.example.com"
    );

    let both = format!(
        "{BASE}[[route]]\nname = \"r\"\ngroups = [\"ops\"]\nsinks = [\"lync\"]\ntemplate = \"x\"\ntemplate_file = \"y\"\n"
    );
    assert!(check(&both)[0].contains("give `template` or `template_file`, not both"));
    let on_source =
        format!("{BASE}[[source]]\nname = \"m\"\nplugin = \"pop3\"\ntemplate = \"x\"\n");
    assert!(check(&on_source)[0].contains("source `m`: `template` is for routes and sinks"));
}
