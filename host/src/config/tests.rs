//! Tests of config checking: every mistake found at once, each with its line and column.

use std::{path::Path, time::Duration};

use super::*;
use crate::router::OfflinePolicy;

const GOOD: &str = r#"
[host]
data_dir = "/var/lib/alertbridge"
admin_listen = "127.0.0.1:9180"

[[source]]
name = "helpdesk-mail"
plugin = "pop3"
[source.config]
server = "mail.contoso.com:995"
tls = "implicit"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "https://lyncdiscover.contoso.com"

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com"]
dba = ["sip:carol@contoso.com"]

[[route]]
name = "critical-to-ops"
match = { source = "helpdesk-mail", severity = ">=high", subject = "(?i)disk" }
groups = ["ops"]
sinks = ["lync"]
offline = { policy = "hold", max_wait_secs = 900, then = "fallback", fallback = "dba" }

[[route]]
name = "dba"
groups = ["dba"]
sinks = ["lync"]
"#;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(Path::new("t.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_good_config_parses() {
    let c = Config::parse(Path::new("/etc/alertbridge/t.toml"), GOOD).unwrap();
    assert_eq!(c.sources[0].name, "helpdesk-mail");
    assert_eq!(
        c.sources[0].config_toml,
        "server = \"mail.contoso.com:995\"\ntls = \"implicit\"\n"
    );
    assert_eq!(c.sources[0].keys.get("tls"), Some(&(11, 1)));
    assert_eq!(c.router.routes.len(), 2);
    let r = &c.router.routes[0];
    assert_eq!(
        r.offline,
        OfflinePolicy::Hold {
            max_wait: Duration::from_secs(900),
            then: Box::new(OfflinePolicy::Fallback("dba".into()))
        }
    );
    assert_eq!(c.host.data_dir, Path::new("/var/lib/alertbridge"));
}

#[test]
fn three_mistakes_in_three_places_are_all_reported() {
    let text =
        GOOD.replace(
            "admin_listen = \"127.0.0.1:9180\"",
            "admin_listen = \"127.0.0.1:9180\"\nlisten_port = 3",
        )
        .replace(
            "groups = [\"ops\"]\nsinks = [\"lync\"]",
            "groups = [\"opps\"]\nsinks = [\"lynk\"]",
        ) + "\n[colour]\nred = 1\n";
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with("t.toml:5:1: [host]: unknown field `listen_port`"),
        "{}",
        e[0]
    );
    assert_eq!(
        e[1],
        "t.toml:27:11: route `critical-to-ops`: no group `opps` in [groups]"
    );
    assert_eq!(
        e[2],
        "t.toml:28:10: route `critical-to-ops`: no [[sink]] named `lynk`"
    );
    assert!(
        e[3].starts_with("t.toml:36:2: unknown table `colour`"),
        "{}",
        e[3]
    );
}

#[test]
fn bad_values_name_their_place() {
    let text = GOOD
        .replace("severity = \">=high\"", "severity = \">=urgent\"")
        .replace("(?i)disk", "(unclosed")
        .replace("policy = \"hold\"", "policy = \"wait\"");
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(
        e[0].contains(":25:48:") && e[0].contains("unknown severity \"urgent\""),
        "{}",
        e[0]
    );
    assert!(e[1].contains("match.subject: invalid regex"), "{}", e[1]);
    assert!(
        e[2].contains("offline.policy: expected skip, hold, fallback or always, found `wait`"),
        "{}",
        e[2]
    );
}

#[test]
fn an_offline_policy_may_be_a_sub_table() {
    let text = GOOD.replace(
        "offline = { policy = \"hold\", max_wait_secs = 900, then = \"fallback\", fallback = \"dba\" }\n",
        "",
    ) + "[route.offline]\npolicy = \"fallback\"\n";
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains("route `dba`: offline: policy `fallback` needs `fallback = \"<route>\"`"),
        "{}",
        e[0]
    );
    let ok = text.replace("policy = \"fallback\"\n", "policy = \"always\"\n");
    let c = Config::parse(Path::new("t.toml"), &ok).unwrap();
    assert_eq!(c.router.routes[1].offline, OfflinePolicy::Always);
}

#[test]
fn syntax_errors_and_missing_data_dir() {
    assert!(errors("[host\n")[0].starts_with("t.toml:1:"));
    let e = errors("[host]\nadmin_listen = \"127.0.0.1:1\"\n");
    assert_eq!(
        e,
        ["t.toml:1:1: [host]: missing key `data_dir` (where the durable queue lives)"]
    );
    let e = errors(
        "[host]\ndata_dir = \"x\"\n[[source]]\nname = \"a\"\nplugin = \"p\"\n[[sink]]\nname = \"a\"\nplugin = \"q\"\n",
    );
    assert_eq!(
        e,
        ["t.toml:6:1: sink `a`: the name is already used by a source"]
    );
}

#[test]
fn plugin_errors_point_at_their_key() {
    let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
    let e = c.locate_plugin_error(&c.sources[0], Some("tls"), "unknown variant `tlz`");
    assert_eq!(
        e.to_string(),
        "t.toml:11:1: instance `helpdesk-mail`: unknown variant `tlz`"
    );
    let e = c.locate_plugin_error(&c.sinks[0], None, "username is required");
    assert_eq!(
        e.to_string(),
        "t.toml:13:1: instance `lync`: username is required"
    );
}

#[test]
fn each_source_has_a_share_of_the_queue() {
    let text = r#"
[host]
data_dir = "/d"
max_queue_depth = 100
[[source]]
name = "hook"
plugin = "webhook"
max_queued = 40
[[source]]
name = "mail"
plugin = "pop3"
[[source]]
name = "other"
plugin = "pop3"
[[sink]]
name = "lync"
plugin = "ucwa"
"#;
    let c = Config::parse(Path::new("t.toml"), text).unwrap();
    assert_eq!(
        c.queue_shares(),
        [
            ("hook".to_owned(), 40),
            ("mail".to_owned(), 30),
            ("other".to_owned(), 30)
        ],
        "the sources without max_queued split what is left"
    );
    let over = text.replace("max_queue_depth = 100", "max_queue_depth = 30");
    assert_eq!(
        errors(&over),
        [
            "t.toml:5:1: [[source]] max_queued: the sources' shares add up to 40, more than [host] max_queue_depth = 30"
        ]
    );
    let on_a_sink = text.replace("plugin = \"ucwa\"", "plugin = \"ucwa\"\nmax_queued = 1");
    assert_eq!(
        errors(&on_a_sink),
        ["t.toml:18:14: sink `lync`: `max_queued` is a source setting"]
    );
}

#[test]
fn on_uncertain_is_resend_by_default_skip_or_an_error_at_its_place() {
    let c = Config::parse(Path::new("t.toml"), GOOD).unwrap();
    assert_eq!(c.delivery.on_uncertain, OnUncertain::Resend);
    let with = |v: &str| {
        GOOD.replace(
            "[[source]]",
            &format!("[delivery]\non_uncertain = \"{v}\"\n\n[[source]]"),
        )
    };
    let c = Config::parse(Path::new("t.toml"), &with("skip")).unwrap();
    assert_eq!(c.delivery.on_uncertain, OnUncertain::Skip);
    let e = errors(&with("maybe"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].contains(":7:16:")
            && e[0].contains("[delivery] on_uncertain: `maybe` is not `resend` or `skip`"),
        "{}",
        e[0]
    );
}

const ESCALATION: &str = r#"
[[escalation]]
name = "ops-critical"
repeat = 1
ack_timeout_secs = 3600
levels = [
  { groups = ["ops"], after_secs = 0 },
  { groups = ["dba"], after_secs = 300 },
  { users = ["sip:cto@contoso.com"], after_secs = 900 },
]

[[route]]
name = "paged"
escalation = "ops-critical"
sinks = ["lync"]
"#;

#[test]
fn escalation_policies_parse_and_a_route_naming_one_is_accepted() {
    let c = Config::parse(
        Path::new("t.toml"),
        &format!("{GOOD}{ESCALATION}\n[incidents]\nresponders = [\"dba\"]\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &c.escalations[0];
    assert_eq!(
        (p.name.as_str(), p.repeat, p.ack_timeout_secs),
        ("ops-critical", 1, 3600)
    );
    assert_eq!(p.levels.len(), 3);
    assert_eq!(p.levels[1].groups, vec!["dba".to_owned()]);
    assert_eq!(p.levels[2].after_secs, 900);
    assert_eq!(
        c.route_escalations.get("paged").map(String::as_str),
        Some("ops-critical")
    );
    assert_eq!(c.incidents.responders, vec!["dba".to_owned()]);
    assert_eq!(
        c.incidents.responder_users(&c.router.groups),
        c.router.groups["dba"]
    );
}

#[test]
fn incident_responders_and_the_page_source_name_are_checked_with_line_and_column() {
    let off = GOOD.lines().count();
    let e = errors(&format!(
        "{GOOD}\n[incidents]\nresponders = [\"dba\", \"nobody\"]\n\n[[source]]\nname = \"incidents\"\nplugin = \"webhook\"\n"
    ));
    assert_eq!(
        e,
        [
            format!(
                "t.toml:{}:22: [incidents] responders: no group `nobody` in [groups]",
                off + 3
            ),
            format!(
                "t.toml:{}:1: source `incidents`: the name is reserved for the pages of incidents",
                off + 5
            ),
        ],
        "{e:#?}"
    );
}

#[test]
fn bad_escalation_policies_are_placed_at_their_level() {
    let bad = r#"
[[escalation]]
name = "p"
levels = [
  { groups = ["ops"], after_secs = 0 },
  { groups = ["nobody"], after_secs = 300 },
]

[[escalation]]
name = "q"
levels = [
  { groups = ["ops"] },
  { users = ["sip:x@contoso.com"], after_secs = 0 },
]

[[escalation]]
name = "r"
levels = []

[[escalation]]
name = "s"
levels = [ { after_secs = 0 } ]

[[route]]
name = "paged"
escalation = "missing"
sinks = ["lync"]
"#;
    let e = errors(&format!("{GOOD}{bad}"));
    // Line k of `bad` (its leading newline ends GOOD's last line) is line off + k.
    let off = GOOD.lines().count();
    let want = [
        format!(
            "t.toml:{}:3: level 2 of escalation `p` names unknown group `nobody`",
            off + 6
        ),
        format!(
            "t.toml:{}:3: level 2 of escalation `q` waits 0 s, not more than level 1's 0 s: waits must increase",
            off + 13
        ),
        format!("t.toml:{}:8: escalation `r` has no levels", off + 17),
        format!(
            "t.toml:{}:12: level 1 of escalation `s` pages nobody (give `groups` or `users`)",
            off + 22
        ),
        format!(
            "t.toml:{}:14: route `paged`: no [[escalation]] named `missing`",
            off + 26
        ),
    ];
    assert_eq!(e, want);
}

#[test]
fn the_example_config_checks_with_its_escalation_policy() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/alertbridge.example.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let p = c
        .escalations
        .iter()
        .find(|p| p.name == "ops-critical")
        .unwrap();
    assert_eq!(p.levels.len(), 3);
}
