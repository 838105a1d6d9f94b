//! Fairness between sources under a flood, through real sockets and a real Dovecot: one
//! webhook post of 150 alerts takes no more than its source's share of the queue (`[[source]]
//! max_queued`; the places are reserved as the submits come, so the batch in flight cannot
//! overshoot), and a mail that lands during the flood is taken at once and delivered while the
//! flood's alerts still wait for the sink — it does not wait behind all of them.
//!
//! Before: one 150-alert post went past `max_queue_depth` (every submit of the batch was
//! checked before any was counted), the mailbox was refused as "queue full" until the flood
//! drained, and its alert then queued behind every flood delivery for the sink's slots.
//!
//! Needs Dovecot (`scripts/test` starts it; read: `ALERTBRIDGE_TEST_POP3_ADDR`,
//! `ALERTBRIDGE_TEST_MAILDIR_ROOT`) and the built workspace (`cargo build -p alertbridge -p
//! alertbridge-webhook -p alertbridge-pop3 -p alertbridge-test-sink`). The mailbox user
//! `tvolfair` is added to Dovecot's passwd-file at run time, as `pop3_host.rs` does.

use std::{
    fs,
    io::{BufRead as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use alertbridge_testbed::harness::{Host, free_port, get, request, wait_until};
use serde_json::{Value, json};

const TOKEN: &str = "fair-token-0c2e";
const LONG: Duration = Duration::from_secs(120);
const USER: &str = "tvolfair";

/// A Maildir user of this test in the test Dovecot, kept in its passwd-file while alive.
struct Mailbox {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    guard: Option<JoinHandle<()>>,
}

impl Mailbox {
    fn create(addr: &str) -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: start Dovecot with scripts/dovecot.sh (scripts/dovecot.sh start DIR && eval \"$(scripts/dovecot.sh env DIR)\"), as scripts/test does")
            })
        };
        let root = PathBuf::from(var("ALERTBRIDGE_TEST_MAILDIR_ROOT"));
        let users_file = root
            .parent()
            .map(|d| d.join("dovecot").join("users"))
            .unwrap_or_default();
        let users = fs::read_to_string(&users_file).expect("read Dovecot's users file");
        let template = users
            .lines()
            .find(|l| l.starts_with("alerts:"))
            .expect("the users file has the `alerts` user");
        let fields: Vec<&str> = template.split(':').collect();
        let (uid, gid) = (
            fields[2].parse::<u32>().expect("uid"),
            fields[3].parse::<u32>().expect("gid"),
        );
        let home = root.join(USER);
        let line = format!(
            "{USER}:{{PLAIN}}{USER}pass:{uid}:{gid}::{}::\n",
            home.display()
        );
        let dir = home.join("Maildir");
        for path in [
            &home,
            &dir,
            &dir.join("new"),
            &dir.join("cur"),
            &dir.join("tmp"),
        ] {
            fs::create_dir_all(path).expect("create Maildir");
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown Maildir");
            fs::set_permissions(path, fs::Permissions::from_mode(0o777)).expect("chmod Maildir");
        }
        for sub in ["new", "cur", "tmp"] {
            for entry in fs::read_dir(dir.join(sub)).expect("list Maildir").flatten() {
                fs::remove_file(entry.path()).expect("empty Maildir");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let prefix = format!("{USER}:");
        ensure_line(&users_file, &prefix, &line);
        let guard = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                ensure_line(&users_file, &prefix, &line);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        wait_until("Dovecot to accept the test user", LONG, || pop3_login(addr));
        Self {
            dir,
            stop,
            guard: Some(guard),
        }
    }

    /// Drops a mail into `new/` the Maildir way (written in `tmp/`, renamed).
    fn deliver(&self, name: &str, mail: &str) {
        let tmp = self.dir.join("tmp").join(name);
        fs::write(&tmp, mail).expect("write mail");
        fs::rename(&tmp, self.dir.join("new").join(name)).expect("deliver mail");
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(g) = self.guard.take() {
            let _ = g.join();
        }
    }
}

/// Appends `line` to the passwd-file unless a line starts with `prefix`.
fn ensure_line(file: &Path, prefix: &str, line: &str) {
    let text = fs::read_to_string(file).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with(prefix)) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(file)
            .expect("open Dovecot's users file");
        f.write_all(line.as_bytes()).expect("add the test user");
    }
}

fn pop3_login(addr: &str) -> bool {
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = std::io::BufReader::new(&stream);
    let mut writer = &stream;
    let mut ok = || {
        let mut line = String::new();
        reader.read_line(&mut line).is_ok() && line.starts_with("+OK")
    };
    let good = ok()
        && writer
            .write_all(format!("USER {USER}\r\n").as_bytes())
            .is_ok()
        && ok()
        && writer
            .write_all(format!("PASS {USER}pass\r\n").as_bytes())
            .is_ok()
        && ok();
    let _ = writer.write_all(b"QUIT\r\n");
    good
}

fn records(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_flood_from_the_webhook_neither_overshoots_its_share_nor_makes_the_mailbox_wait() {
    let pop3 = std::env::var("ALERTBRIDGE_TEST_POP3_ADDR")
        .expect("ALERTBRIDGE_TEST_POP3_ADDR is not set: start Dovecot with scripts/dovecot.sh");
    let mailbox = Mailbox::create(&pop3);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (admin, hook) = (free_port(), free_port());
    let tokens = dir.path().join("webhook.tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens");
    // The sink takes 400 ms a message, two at a time: 40 flood alerts keep it busy for 8 s.
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
max_queue_depth = 60

[delivery]
per_recipient_per_minute = 0
sink_concurrency = 2

[[source]]
name = "hook"
plugin = "webhook"
max_queued = 40
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{tokens}"

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{pop3}"
tls = "none"
username = "{USER}"
password = "{USER}pass"
state_dir = "{d}/pop3-state"
poll_interval_ms = 200
max_backoff_ms = 1000

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
delay_ms = 400

[groups]
ops = ["sip:alice@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
        tokens = tokens.display(),
    );
    let host = Host::start(dir.path(), admin, &config);
    wait_until("the webhook and the mailbox to be up", LONG, || {
        get(&format!("http://127.0.0.1:{hook}/healthz")).is_some() && {
            host.instance("mail")["state"] == "ok"
        }
    });

    // One post of 150 alerts, as the attack sent.
    let flood: Vec<Value> = (0..150)
        .map(|i| json!({"subject": format!("flood {i}")}))
        .collect();
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = request(
        "POST",
        &format!("http://127.0.0.1:{hook}/api/v1/alerts"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &Value::Array(flood).to_string(),
    )
    .expect("an answer to the flood");
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let taken = answer["ids"]
        .as_array()
        .map_or(0, |ids| ids.iter().filter(|id| id.is_u64()).count());
    assert_eq!(
        status, 503,
        "the rest is refused for back-pressure: {answer}"
    );
    assert!(
        taken <= 40,
        "the batch overshot the webhook's share of 40: {taken} taken"
    );
    assert!(
        taken >= 30,
        "the share was not available to the webhook: {taken} taken"
    );
    assert!(
        answer["error"].as_str().unwrap_or("").contains(
            "source `hook` has 40 alerts waiting, its share of the queue (max_queued 40)"
        ),
        "{answer}"
    );

    // A mail during the flood: taken at once, and delivered while the flood still waits.
    let mail = format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {USER}@example.test\r\n\
         Subject: mailbox during the flood\r\nMessage-ID: <fair-1@example.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nstill heard\r\n"
    );
    mailbox.deliver("fair-1.mail", &mail);
    wait_until("the mail's IM", LONG, || {
        records(dir.path())
            .iter()
            .any(|r| r["subject"] == "mailbox during the flood")
    });
    let flood_before = records(dir.path())
        .iter()
        .filter(|r| r["source"] == "hook")
        .count();
    eprintln!("flood alerts taken: {taken}; delivered before the mail's IM: {flood_before}");
    assert!(
        flood_before + 10 <= taken,
        "the mail waited behind the flood: {flood_before} of {taken} flood alerts went before it"
    );
    wait_until("the flood to drain", LONG, || {
        records(dir.path())
            .iter()
            .filter(|r| r["source"] == "hook")
            .count()
            == taken
    });
    let metrics = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    assert!(
        !metrics.contains("alertbridge_alerts_rejected_total{source=\"mail\""),
        "the mailbox was refused: {metrics}"
    );

    // Finished alerts give their places back: the whole share is there again.
    let again: Vec<Value> = (0..40)
        .map(|i| json!({"subject": format!("after {i}")}))
        .collect();
    let (status, text) = request(
        "POST",
        &format!("http://127.0.0.1:{hook}/api/v1/alerts"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &Value::Array(again).to_string(),
    )
    .expect("an answer to the second post");
    assert_eq!(status, 202, "the share was not given back: {text}");
}
