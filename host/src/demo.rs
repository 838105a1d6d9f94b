//! `alertbridge demo`: the bridge with the bundled simulators on loopback — a UCWA server
//! (Lync / Skype for Business), a UCMA bridge (OCS / Lync 2010) and a POP3 mailbox — plus a
//! sample mail and a webhook post that turn into IMs for the online users of a group while an
//! offline user's alert is held, and an incident: a database alert on a route with an escalation
//! policy pages Alice; nobody answers, so Bob is paged [`LEVEL2_SECS`] later, and the demo says
//! how to acknowledge it from the UCWA simulator's page. It follows the incident through its own
//! admin API, as an operator's script would.
//!
//! The simulators are the test bed's binaries (`ucwa-sim`, `ucma-sim`, `pop3-server`), found
//! beside this executable like the plugins; `cargo build --workspace` builds them all.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
};

use crate::{
    app::Bridge,
    config::Config,
    model::{Outcome, now_ms},
    plugins::loader,
};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{0} is missing beside alertbridge: build everything first with `cargo build --workspace`"
    )]
    Missing(String),
    #[error("cannot start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not say where it listens")]
    NoAddress(String),
    #[error("cannot prepare the demo folder {dir}")]
    Dir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugins(#[from] loader::DirError),
    #[error("the demo config is wrong (a bug): {0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error("cannot post the sample alert to the webhook")]
    Post(#[source] std::io::Error),
    #[error("cannot install the signal handlers")]
    Signals(#[source] std::io::Error),
}

const TOKEN: &str = "demo-token";
/// How long the demo's escalation policy waits for an ack before paging level 2.
const LEVEL2_SECS: u64 = 10;
/// The demo's incident: a database alert on the route with the escalation policy.
const INCIDENT_ALERT: &str = r#"{"subject": "Replication lag on db02: 45 s", "body": "db02 is 45 s behind db01", "severity": "critical", "labels": {"service": "postgres", "host": "db02"}, "dedup_key": "db02-replication"}"#;
const SAMPLE_MAIL: &str = "From: Nagios <nagios@contoso.com>\r\n\
To: alerts@contoso.com\r\n\
Subject: PROBLEM: db01 disk /var is CRITICAL\r\n\
Message-ID: <demo-1@contoso.com>\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
/var is at 98% on db01 — the nightly backup will fail.\r\n";

/// A simulator child process and where it listens.
struct Sim {
    child: Child,
    addr: String,
}

async fn spawn(bin_dir: &Path, name: &str, args: &[String]) -> Result<Sim, DemoError> {
    let bin = bin_dir.join(name);
    if !bin.exists() {
        return Err(DemoError::Missing(name.to_owned()));
    }
    let mut child = Command::new(&bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C in the terminal reaches only the demo, which stops
        // the bridge (signing out of the simulated servers) before it stops the simulators.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DemoError::Spawn {
            what: name.to_owned(),
            source,
        })?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DemoError::NoAddress(name.to_owned()))?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(line))) => line,
        _ => return Err(DemoError::NoAddress(name.to_owned())),
    };
    let addr = line
        .trim()
        .trim_start_matches("listening on ")
        .trim_start_matches("http://")
        .to_owned();
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Sim { child, addr })
}

fn config_text(
    dir: &Path,
    admin: &str,
    webhook: &str,
    ucwa: &str,
    ucma: &str,
    pop3: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"# Written by `alertbridge demo`.
[host]
data_dir = "{d}/data"
admin_listen = "{admin}"
stop_deadline_ms = 3000

[delivery]
presence_cache_ms = 2000
hold_recheck_ms = 5000

[[source]]
name = "helpdesk-mail"
plugin = "pop3"
[source.config]
server = "{pop3}"
tls = "none"
username = "alerts"
password = "alertpass"
state_dir = "{d}/pop3-state"
poll_interval_ms = 1000

[[source]]
name = "monitoring"
plugin = "webhook"
[source.config]
listen = "{webhook}"
tokens_file = "{d}/webhook.tokens"

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "http://{ucwa}/"
username = "alerts@contoso.com"
password = "alertpass"
allow_http = true

[[sink]]
name = "ocs"
plugin = "ucma"
[sink.config]
endpoint = "http://{ucma}"
secret = "demo-bridge-secret"

[groups]
ops = ["sip:alice@contoso.com", "sip:bob@contoso.com", "sip:carol@contoso.com"]
legacy = ["sip:dave@contoso.com"]

# On call for the databases: Alice first; if she has not acknowledged within {LEVEL2_SECS} s, Bob.
[[escalation]]
name = "db-oncall"
levels = [
  {{ users = ["sip:alice@contoso.com"], after_secs = 0 }},
  {{ users = ["sip:bob@contoso.com"], after_secs = {LEVEL2_SECS} }},
]

# Database alerts open an incident (one per dedup key) that pages the levels of db-oncall
# until someone answers `ack` in the IM's conversation.
[[route]]
name = "db-incidents"
match = {{ labels = {{ service = "postgres" }} }}
escalation = "db-oncall"
sinks = ["lync"]
offline = {{ policy = "skip" }}

# Everyone in ops on Lync; carol is offline, so her copy is held until she signs in (10 min).
[[route]]
name = "ops-on-lync"
groups = ["ops"]
sinks = ["lync"]
continue = true
offline = {{ policy = "hold", max_wait_secs = 600, then = "skip" }}

# Dave is still on OCS 2007 R2, reached through the UCMA bridge.
[[route]]
name = "legacy-on-ocs"
groups = ["legacy"]
sinks = ["ocs"]
"#
    )
}

/// The sample webhook post.
const SAMPLE_POST: &str = r#"{"subject": "CPU at 100% on web02", "body": "load average 31.2 over 5 minutes", "severity": "high", "labels": {"host": "web02"}}"#;

async fn post_alert(webhook: &str, body: &str) -> Result<String, DemoError> {
    let mut s = tokio::net::TcpStream::connect(webhook)
        .await
        .map_err(DemoError::Post)?;
    let req = format!(
        "POST /api/v1/alerts HTTP/1.1\r\nhost: {webhook}\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(DemoError::Post)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .await
        .map_err(DemoError::Post)?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

fn create_dir(p: &Path) -> Result<(), DemoError> {
    std::fs::create_dir_all(p).map_err(|source| DemoError::Dir {
        dir: p.display().to_string(),
        source,
    })
}

/// A new folder only this user can enter, under a name nobody could predict (mkdtemp): a
/// folder created ahead by another local user cannot be taken over.
fn private_temp_dir() -> Result<PathBuf, DemoError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let base = std::env::temp_dir();
    let mut last = None;
    for _ in 0..16 {
        let dir = base.join(format!("alertbridge-demo-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => {
                return Err(DemoError::Dir {
                    dir: base.display().to_string(),
                    source,
                });
            }
        }
    }
    Err(DemoError::Dir {
        dir: base.display().to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no free name")),
    })
}

fn write(p: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(p, text).map_err(|source| DemoError::Dir {
        dir: p.display().to_string(),
        source,
    })
}

/// Runs the demo until SIGINT or SIGTERM.
pub async fn run(
    dir: Option<PathBuf>,
    admin_port: u16,
    webhook_port: u16,
) -> Result<(), DemoError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Taken before the simulators start: a Ctrl-C while the demo comes up must stop it through
    // the loop below, which stops them too — the default action would kill the demo alone and
    // leave the simulators (in their own process group) running.
    let mut term = signal(SignalKind::terminate()).map_err(DemoError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DemoError::Signals)?;
    let bin_dir = loader::default_dir();
    let dir = match dir {
        Some(dir) => {
            create_dir(&dir)?;
            dir
        }
        None => private_temp_dir()?,
    };
    let maildir = dir.join("mail/alerts/Maildir");
    for sub in ["new", "cur", "tmp"] {
        create_dir(&maildir.join(sub))?;
    }
    write(
        &dir.join("ucwa-users"),
        "alerts@contoso.com alertpass Online\nalice@contoso.com alicepass Online\nbob@contoso.com bobpass Online\ncarol@contoso.com carolpass Offline\n",
    )?;
    write(&dir.join("ucma-users"), "sip:dave@contoso.com Online\n")?;
    write(&dir.join("webhook.tokens"), &format!("{TOKEN}\n"))?;

    let path = |p: &Path| p.display().to_string();
    let ucwa = spawn(
        &bin_dir,
        "ucwa-sim",
        &["--users".into(), path(&dir.join("ucwa-users"))],
    )
    .await?;
    let ucma = spawn(
        &bin_dir,
        "ucma-sim",
        &[
            "--secret".into(),
            "demo-bridge-secret".into(),
            "--users".into(),
            path(&dir.join("ucma-users")),
        ],
    )
    .await?;
    let pop3 = spawn(
        &bin_dir,
        "pop3-server",
        &[
            "--user".into(),
            format!("alerts:alertpass:{}", maildir.display()),
        ],
    )
    .await?;

    let admin = format!("127.0.0.1:{admin_port}");
    let webhook = format!("127.0.0.1:{webhook_port}");
    let text = config_text(&dir, &admin, &webhook, &ucwa.addr, &ucma.addr, &pop3.addr);
    let config_path = dir.join("alertbridge.toml");
    write(&config_path, &text)?;
    let config = Config::parse(&config_path, &text)?;
    let plugins = loader::load_dir(&bin_dir)?;
    let (bridge, _reloads) = Bridge::start(config, &plugins).await?;

    // A monitoring mail lands in the mailbox, and a monitoring system posts to the webhook.
    write(&maildir.join("tmp/demo-1"), SAMPLE_MAIL)?;
    std::fs::rename(maildir.join("tmp/demo-1"), maildir.join("new/demo-1")).map_err(|source| {
        DemoError::Dir {
            dir: path(&maildir),
            source,
        }
    })?;
    let mut posted = String::new();
    for _ in 0..50 {
        match post_alert(&webhook, SAMPLE_POST).await {
            Ok(status) => {
                posted = status;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }

    println!(
        "alertbridge demo is running (Ctrl-C stops it). Everything listens on 127.0.0.1 only."
    );
    println!("  status page      http://{admin}/");
    println!(
        "  UCWA simulator   http://{}/   (Lync: alice and bob online, carol offline)",
        ucwa.addr
    );
    println!(
        "  UCMA simulator   http://{}/   (OCS 2007 R2: dave)",
        ucma.addr
    );
    println!(
        "  POP3 mailbox     {} (user alerts / alertpass); drop mails into {}",
        pop3.addr,
        maildir.join("new").display()
    );
    println!(
        "  webhook          curl -H 'Authorization: Bearer {TOKEN}' -d '{{\"subject\":\"Hello\"}}' http://{webhook}/api/v1/alerts"
    );
    println!("  config           {}", config_path.display());
    println!("sample mail dropped into the mailbox; webhook post answered: {posted}");
    let incident = post_alert(&webhook, INCIDENT_ALERT)
        .await
        .unwrap_or_else(|e| format!("not posted ({e})"));
    println!(
        "a database alert (label service=postgres) went to route db-incidents, which opens an incident: Alice is paged now, and Bob in {LEVEL2_SECS} s unless someone acknowledges (webhook answered: {incident})"
    );

    let mut shown = std::collections::BTreeSet::new();
    let mut incidents = IncidentsShown::default();
    let started = now_ms();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        for alert in bridge.queue.recent(20).unwrap_or_default() {
            for r in &alert.recipients {
                let key = (alert.id, r.user.clone(), r.outcome.name());
                if matches!(r.outcome, Outcome::Pending)
                    || alert.accepted_ms < started - 1000
                    || !shown.insert(key)
                {
                    continue;
                }
                println!(
                    "alert {} from {} ({:?}): {} {} via {}{}",
                    alert.id,
                    alert.source,
                    alert.alert.subject,
                    r.outcome.name(),
                    r.user,
                    r.sink,
                    if r.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", r.reason)
                    }
                );
            }
        }
        if let Some(list) = get_json(&admin, "/api/v1/incidents").await {
            incidents.show(&list, &ucwa.addr);
        }
    }
    println!("stopping…");
    bridge.stop().await;
    for mut sim in [ucwa, ucma, pop3] {
        let _ = sim.child.kill().await;
    }
    println!("stopped.");
    Ok(())
}

/// A GET on the demo's own admin API (loopback, no token): the JSON answer, or `None`.
async fn get_json(admin: &str, path: &str) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
    // HTTP/1.0: the answer ends with the connection, never chunked.
    let req = format!("GET {path} HTTP/1.0\r\nhost: {admin}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    s.take(4 << 20).read_to_end(&mut answer).await.ok()?;
    let at = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    if !answer.starts_with(b"HTTP/1.1 200") && !answer.starts_with(b"HTTP/1.0 200") {
        return None;
    }
    serde_json::from_slice(&answer[at + 4..]).ok()
}

/// What the demo already printed about each incident.
#[derive(Default)]
struct IncidentsShown {
    /// (incident, page seq) printed.
    pages: std::collections::BTreeSet<(u64, u64)>,
    /// (incident, "acknowledged" | "resolved") printed.
    marks: std::collections::BTreeSet<(u64, &'static str)>,
}

impl IncidentsShown {
    /// Prints each page, acknowledgement and resolution of `list` (`GET /api/v1/incidents`)
    /// not printed yet; after a page, how its people can acknowledge from the UCWA simulator.
    fn show(&mut self, list: &serde_json::Value, ucwa: &str) {
        let items = list["incidents"].as_array().map_or(&[][..], Vec::as_slice);
        for inc in items.iter().rev() {
            let (Some(id), Some(number)) = (inc["id"].as_u64(), inc["number"].as_str()) else {
                continue;
            };
            let title = inc["title"].as_str().unwrap_or_default();
            for page in inc["pages"].as_array().map_or(&[][..], Vec::as_slice) {
                let seq = page["seq"].as_u64().unwrap_or_default();
                if !page["handed"].as_bool().unwrap_or(false) || !self.pages.insert((id, seq)) {
                    continue;
                }
                let users: Vec<&str> = page["users"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter_map(serde_json::Value::as_str)
                    .collect();
                println!(
                    "incident {number} ({title:?}): level {} paged: {} — {}",
                    page["level"],
                    users.join(", "),
                    page["reason"].as_str().unwrap_or_default()
                );
                if inc["state"] == "open" {
                    for user in &users {
                        let login = user.trim_start_matches("sip:");
                        let name = login.split('@').next().unwrap_or(login);
                        println!(
                            "  to acknowledge {number} as {name}: type `ack` in the box \"reply as {login}\" on the UCWA simulator page and press Reply"
                        );
                        println!(
                            "  or from a shell: curl -H 'content-type: application/json' -d '{{\"text\":\"ack {id}\"}}' http://{ucwa}/control/users/{login}/reply"
                        );
                    }
                }
            }
            for (what, key) in [("acknowledged", "acked"), ("resolved", "resolved")] {
                let Some(by) = inc[key]["by"].as_str() else {
                    continue;
                };
                if self.marks.insert((id, what)) {
                    let after = if what == "acknowledged" {
                        " — no more levels are paged"
                    } else {
                        ""
                    };
                    println!("incident {number} {what} by {by}{after}");
                }
            }
        }
    }
}
