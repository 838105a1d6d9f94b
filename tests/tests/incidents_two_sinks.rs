//! An incident whose route has two sinks, the `ucwa` sink (`lync`, the UCWA simulator) and the
//! `ucma` sink (`ocs`, the UCMA bridge simulator): Alice exists only on Lync, Bob only on OCS,
//! so the one page reaches each through their own system. Bob acks on OCS → Alice is told on
//! Lync, once (not through Bob's sink, not through the route's first sink); then a resolve
//! through the admin API → each is told on their own system.

use std::time::{Duration, Instant};

use alertbridge_testbed::{
    harness::{Host, emit, free_port, request},
    ucma_sim::{self, Availability},
    ucwa_sim::{self, UserSpec},
};

const LONG: Duration = Duration::from_secs(30);
const SECRET: &str = "incidents-two-sinks-secret-012345";
const ADMIN_TOKEN: &str = "incidents-two-sinks-admin-token-5c1";

const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";

fn config(dir: &std::path::Path, admin: u16, control: u16, discover: &str, bridge: &str) -> String {
    let d = dir.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
admin_token_file = "admin.token"
stop_deadline_ms = 3000

[delivery]
per_recipient_per_minute = 0
retry_initial_ms = 50
retry_max_ms = 200
presence_cache_ms = 0

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "{discover}"
allow_http = true
username = "alerts@contoso.com"
password = "alert-pw"
presence_cache_ms = 0
request_timeout_secs = 5

[[sink]]
name = "ocs"
plugin = "ucma"
[sink.config]
endpoint = "{bridge}"
secret = "{SECRET}"
health_interval_ms = 200
inbound = true
inbound_wait_ms = 1000

[[escalation]]
name = "both"
levels = [
  {{ users = ["{ALICE}", "{BOB}"], after_secs = 0 }},
]

[[route]]
name = "db"
escalation = "both"
sinks = ["lync", "ocs"]
offline = {{ policy = "skip" }}
"#
    )
}

/// What the bot said to `user` on OCS, oldest first.
fn ocs_lines(sim: &ucma_sim::SimHandle, user: &str) -> Vec<String> {
    sim.conversations_of(user)
        .iter()
        .flat_map(|c| c.lines.iter())
        .filter(|l| l.from == "bridge")
        .map(|l| l.text.clone())
        .collect()
}

/// What `user` received on Lync, oldest first.
fn lync_texts(sim: &ucwa_sim::SimHandle, user: &str) -> Vec<String> {
    sim.received(user).into_iter().map(|im| im.text).collect()
}

#[test]
fn news_reaches_each_person_through_the_sink_that_paged_them() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let lync = rt
        .block_on(ucwa_sim::Simulator::start(ucwa_sim::SimConfig {
            users: [("alerts@contoso.com", "alert-pw"), (ALICE, "a")]
                .map(|(u, p)| UserSpec::new(u, p, "Online"))
                .to_vec(),
            invitation_timeout: Duration::from_millis(2000),
            ..ucwa_sim::SimConfig::default()
        }))
        .expect("start the UCWA simulator");
    let ocs = rt
        .block_on(ucma_sim::Simulator::start(
            ucma_sim::SimConfig::new(SECRET).user(BOB, Availability::Online),
        ))
        .expect("start the bridge simulator");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("{ADMIN_TOKEN}\n")).unwrap();
    let (admin, control) = (free_port(), free_port());
    let host = Host::start(
        dir.path(),
        admin,
        &config(dir.path(), admin, control, &lync.discover_url(), &ocs.url()),
    );
    let everything = |what: &str| {
        format!(
            "{what}\nLync Alice: {:#?}\nLync Bob: {:#?}\nOCS Alice: {:#?}\nOCS Bob: {:#?}\nhost log:\n{}",
            lync_texts(&lync, ALICE),
            lync_texts(&lync, BOB),
            ocs_lines(&ocs, ALICE),
            ocs_lines(&ocs, BOB),
            host.log()
        )
    };
    let until = |what: &str, mut done: Box<dyn FnMut() -> bool + '_>| {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < LONG, "{}", everything(what));
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    let v = emit(
        control,
        "count=1&prefix=repl&subject=Replication%20lag&severity=critical",
    );
    assert_eq!(v["accepted"], 1, "{v}");

    // One page each, through their own system.
    until(
        "Alice paged on Lync",
        Box::new(|| lync_texts(&lync, ALICE).iter().any(|t| t.contains("[#1]"))),
    );
    until(
        "Bob paged on OCS",
        Box::new(|| {
            ocs.received(BOB).iter().any(|im| {
                im.body.contains("[#1]")
                    || im.subject.as_deref().is_some_and(|s| s.contains("[#1]"))
            })
        }),
    );
    // The sink that reached each is kept as its delivery's outcome comes back, just after the
    // simulator took the IM: a moment for that.
    std::thread::sleep(Duration::from_millis(200));

    // Bob acks in his OCS conversation.
    let bob_conversation = ocs
        .conversations_of(BOB)
        .into_iter()
        .rev()
        .find(|c| c.open)
        .expect("the page left Bob a conversation");
    ocs.user_says(BOB, "ack", Some(&bob_conversation.id), false)
        .expect("Bob's conversation is open");
    until(
        "the confirmation to Bob on OCS",
        Box::new(|| {
            ocs_lines(&ocs, BOB)
                .iter()
                .any(|l| l.starts_with("#1 acknowledged by"))
        }),
    );
    until(
        "Alice told on Lync",
        Box::new(|| {
            lync_texts(&lync, ALICE)
                .iter()
                .any(|t| t.starts_with("#1 acknowledged by"))
        }),
    );
    // Resolved through the admin API: each told on their own system.
    let (status, body) = request(
        "POST",
        &format!("http://127.0.0.1:{admin}/api/v1/incidents/1/resolve"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        "",
    )
    .expect("the admin API answers");
    assert_eq!(status, 200, "{body}");
    until(
        "Alice told of the resolve on Lync",
        Box::new(|| {
            lync_texts(&lync, ALICE)
                .iter()
                .any(|t| t.starts_with("#1 resolved"))
        }),
    );
    until(
        "Bob told of the resolve on OCS",
        Box::new(|| {
            ocs_lines(&ocs, BOB)
                .iter()
                .any(|l| l.starts_with("#1 resolved"))
        }),
    );
    // A moment for anything sent twice or through the wrong system to show.
    std::thread::sleep(Duration::from_millis(300));
    let count =
        |texts: &[String], prefix: &str| texts.iter().filter(|t| t.starts_with(prefix)).count();
    let (alice, bob) = (lync_texts(&lync, ALICE), ocs_lines(&ocs, BOB));
    assert_eq!(
        (
            count(&alice, "#1 acknowledged"),
            count(&alice, "#1 resolved")
        ),
        (1, 1),
        "{}",
        everything("Alice told once of each on Lync")
    );
    assert_eq!(
        count(&bob, "#1 resolved"),
        1,
        "{}",
        everything("Bob told once")
    );
    assert!(
        ocs_lines(&ocs, ALICE).is_empty() && lync_texts(&lync, BOB).is_empty(),
        "{}",
        everything("nobody told through the other's system")
    );
    drop(host);
}
