//! `alertbridge demo`: it comes up, the sample mail and the webhook post are delivered to the
//! simulators (an offline user's copy held), and it stops cleanly on SIGINT.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{bin_dir, free_port};

#[test]
fn demo_delivers_the_sample_mail_and_webhook_post_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, webhook) = (free_port(), free_port());
    let mut child = Command::new(bin_dir().join("alertbridge"))
        .args(["demo", "--dir"])
        .arg(dir.path())
        .args([
            "--admin-port",
            &admin.to_string(),
            "--webhook-port",
            &webhook.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the demo");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
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
