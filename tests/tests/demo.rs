//! `alertbridge demo`: it comes up, the sample mail and the webhook post are delivered to the
//! simulators (an offline user's copy held), its incident pages Alice and, unanswered, Bob, the
//! demo says how to acknowledge from the UCWA simulator's page, and doing what it says (Bob's
//! reply box) acknowledges the incident; it stops cleanly on SIGINT. And what a newcomer
//! sees first is clean: the demo and `alertbridge plugins`, run from the build folder as an
//! operator would (`target/<profile>`, its default `plugin_dir`), show no warning and no test
//! plugin — the test plugins are built elsewhere (`scripts/testbed`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{build_dir, free_port, request};

/// Reads the demo's lines into `seen` until `done` holds for them; fails after `within`.
fn read_until(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    child: &mut std::process::Child,
    what: &str,
    within: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let start = Instant::now();
    while !done(seen) {
        let left = within.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the demo did not show {what} within {within:?}; it printed:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

#[test]
fn demo_delivers_the_sample_mail_and_webhook_post_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let mut child = Command::new(build_dir().join("alertbridge"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .args([
            "--admin-port",
            &admin.to_string(),
            "--webhook-port",
            &webhook.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (log_tx, log_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });

    let wanted = [
        "from helpdesk-mail (\"PROBLEM: db01 disk /var is CRITICAL\"): delivered sip:alice@contoso.com via lync",
        "from helpdesk-mail (\"PROBLEM: db01 disk /var is CRITICAL\"): delivered sip:dave@contoso.com via ocs",
        "from helpdesk-mail (\"PROBLEM: db01 disk /var is CRITICAL\"): held sip:carol@contoso.com via lync",
        "from monitoring (\"CPU at 100% on web02\"): delivered sip:bob@contoso.com via lync",
        "from monitoring (\"CPU at 100% on web02\"): held sip:carol@contoso.com via lync",
    ];
    // Which of the mail and the webhook post is queued first (alert 1 or 2) is a race.
    let shows = |line: &str, w: &str| {
        line.starts_with("alert ")
            && line
                .split_once(' ')
                .and_then(|(_, rest)| rest.split_once(' '))
                .is_some_and(|(_, rest)| rest.starts_with(w))
    };
    let mut seen = Vec::new();
    read_until(
        &rx,
        &mut seen,
        &mut child,
        "every delivery",
        Duration::from_secs(60),
        |seen| {
            wanted
                .iter()
                .all(|w| seen.iter().any(|l: &String| shows(l, w)))
        },
    );
    let status_page = seen
        .iter()
        .find(|l| l.contains("status page"))
        .expect("the demo says where to look");
    assert!(
        status_page.contains(&format!("http://127.0.0.1:{admin}/")),
        "{status_page}"
    );
    let sims: Vec<String> = seen
        .iter()
        .filter(|l| l.contains("simulator"))
        .filter_map(|l| {
            l.split("http://")
                .nth(1)?
                .split('/')
                .next()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(sims.len(), 2, "{seen:?}");

    // The incident: Alice paged at once, nobody answers, Bob paged after the policy's wait.
    let bob_paged = |l: &str| {
        l.starts_with("alert ")
            && l.contains("from incidents (\"[#1] Replication lag on db02: 45 s")
            && l.contains("delivered sip:bob@contoso.com via lync")
    };
    let incident = "incident #1 (\"Replication lag on db02: 45 s\")";
    read_until(
        &rx,
        &mut seen,
        &mut child,
        "the incident escalating to Bob",
        Duration::from_secs(40),
        |seen| {
            // Level 2's line, then the hint how to answer as Bob.
            seen.iter()
                .any(|l| l.starts_with(&format!("{incident}: level 2 paged: sip:bob@contoso.com")))
                && seen.iter().any(|l| l.contains("to acknowledge #1 as bob"))
                && seen.iter().any(|l| bob_paged(l))
        },
    );
    let level1 = seen
        .iter()
        .position(|l| l.starts_with(&format!("{incident}: level 1 paged: sip:alice@contoso.com")))
        .expect("level 1 (Alice) shown before level 2");
    let level2 = seen
        .iter()
        .position(|l| l.starts_with(&format!("{incident}: level 2 paged")))
        .unwrap_or_default();
    assert!(level1 < level2, "{seen:#?}");
    // The admin API agrees: level 2 was paged after its 10 s wait, nobody having answered.
    let (_, body) = request(
        "GET",
        &format!("http://127.0.0.1:{admin}/api/v1/incidents/1"),
        &[],
        "",
    )
    .expect("the admin API answers");
    let inc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let waited =
        inc["pages"][1]["at_ms"].as_i64().unwrap_or(0) - inc["opened_ms"].as_i64().unwrap_or(0);
    assert!(
        (10_000..20_000).contains(&waited) && inc["pages"][1]["users"][0] == "sip:bob@contoso.com",
        "level 2 paged {waited} ms after the incident opened: {inc:#}"
    );
    // What the demo says to do, done as a person would: Bob's reply box on the simulator page.
    let hint = seen
        .iter()
        .find(|l| l.contains("to acknowledge #1 as bob"))
        .unwrap_or_else(|| panic!("no hint how to acknowledge as Bob: {seen:#?}"));
    assert!(
        hint.contains("reply as bob@contoso.com") && hint.contains("UCWA simulator page"),
        "{hint}"
    );
    let ucwa = seen
        .iter()
        .find(|l| l.contains("UCWA simulator"))
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .expect("the UCWA simulator's address")
        .to_owned();
    let (status, body) = request(
        "POST",
        &format!("http://{ucwa}/control/users/bob@contoso.com/reply-form"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "text=ack",
    )
    .expect("the UCWA simulator answers");
    assert!(status == 303 || status == 200, "{status} {body}");
    read_until(
        &rx,
        &mut seen,
        &mut child,
        "the incident acknowledged",
        Duration::from_secs(30),
        |seen| {
            seen.iter()
                .any(|l| l.starts_with("incident #1 acknowledged by"))
        },
    );

    // Everything the demo logged while it came up and delivered: no warning (such as "Plugin
    // file refused" for a test plugin beside the real ones).
    let log: Vec<String> = log_rx.try_iter().collect();
    assert!(
        !log.iter()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "the demo's first screen warned:\n{}",
        log.join("\n")
    );

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the demo did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("stopped."),
        "{rest:?}"
    );
    for addr in sims {
        assert!(
            std::net::TcpStream::connect(&addr).is_err(),
            "simulator {addr} still listens after the demo stopped"
        );
    }
}

/// `alertbridge plugins` in the build folder (its default `plugin_dir`) lists the four real
/// plugins, each loadable, and nothing else: no test plugin, no refused fixture, no warning.
#[test]
fn plugins_in_the_default_dir_are_the_real_ones_only() {
    let out = Command::new(build_dir().join("alertbridge"))
        .arg("plugins")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run alertbridge plugins");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let listed: Vec<&str> = stdout.lines().skip(1).map(str::trim).collect();
    let files: Vec<&str> = listed
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        files,
        [
            "libalertbridge_pop3.so",
            "libalertbridge_ucma.so",
            "libalertbridge_ucwa.so",
            "libalertbridge_webhook.so"
        ],
        "{stdout}"
    );
    assert!(listed.iter().all(|l| !l.contains("refused")), "{stdout}");
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );
}
