//! `alertbridge demo`: it comes up, the sample mail and the webhook post are delivered to the
//! simulators (an offline user's copy held), and it stops cleanly on SIGINT. And what a newcomer
//! sees first is clean: the demo and `alertbridge plugins`, run from the build folder as an
//! operator would (`target/<profile>`, its default `plugin_dir`), show no warning and no test
//! plugin — the test plugins are built elsewhere (`scripts/testbed`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{build_dir, free_port};

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
    let start = Instant::now();
    while !wanted
        .iter()
        .all(|w| seen.iter().any(|l: &String| shows(l, w)))
    {
        let left = Duration::from_secs(60).saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the demo did not show every delivery within 60 s; it printed:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
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
