//! The `pop3` source against a real Dovecot while the queue's disk is full (a real tmpfs filled
//! to ENOSPC): the queue goes down loudly, the source is told "queue unavailable, try later",
//! every mail stays in the mailbox, and once the disk has room again each mail becomes exactly
//! one IM and is deleted.
//!
//! Needs root (to mount the tmpfs; skipped with a message otherwise), Dovecot (`scripts/test`
//! starts it; by hand: `eval "$(scripts/dovecot.sh env DIR)"`) and the built workspace.

mod queue_support;

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alertbridge_testbed::harness::{free_port, wait_until};
use queue_support::*;

const USER: &str = "tqueuefull";

/// A Dovecot mailbox of this test: a passwd-file line and an empty Maildir.
///
/// `dovecot.sh restart` (which the pop3 plugin's own tests run) rewrites the passwd-file, so a
/// guard thread puts the line back whenever it is missing, for as long as the mailbox lives.
struct Mailbox {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Mailbox {
    fn create() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: start Dovecot with scripts/dovecot.sh (eval \"$(scripts/dovecot.sh env DIR)\"), as scripts/test does")
            })
        };
        let maildirs = PathBuf::from(var("ALERTBRIDGE_TEST_MAILDIR_ROOT"));
        let users_file = maildirs
            .parent()
            .map(|d| d.join("dovecot").join("users"))
            .unwrap_or_default();
        let users = fs::read_to_string(&users_file).expect("read Dovecot's users file");
        let template = users
            .lines()
            .find(|l| l.starts_with("alerts:"))
            .expect("the users file has the `alerts` user");
        let fields: Vec<&str> = template.split(':').collect();
        let (uid, gid): (u32, u32) = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        let home = maildirs.join(USER);
        let dir = home.join("Maildir");
        for path in [
            home.clone(),
            dir.clone(),
            dir.join("new"),
            dir.join("cur"),
            dir.join("tmp"),
        ] {
            fs::create_dir_all(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
        }
        for sub in ["new", "cur", "tmp"] {
            for e in fs::read_dir(dir.join(sub)).unwrap().flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (file, flag) = (users_file.clone(), Arc::clone(&stop));
        ensure_user(&file, uid, gid, &home);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                ensure_user(&file, uid, gid, &home);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let addr = var("ALERTBRIDGE_TEST_POP3_ADDR");
        wait_until("Dovecot to accept the test user", LONG, || {
            pop3_login(&addr)
        });
        Self { dir, stop }
    }

    fn deliver(&self, n: usize) {
        let body = "disk full test line\r\n".repeat(1500);
        let mail = format!(
            "From: Monitoring <monitor@example.test>\r\nTo: {USER}@example.test\r\nSubject: qfull {n}\r\n\
             Message-ID: <qfull-{n}-{}@example.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros()
        );
        let file = format!("qfull.{n}.{}", std::process::id());
        let tmp = self.dir.join("tmp").join(&file);
        fs::write(&tmp, mail).unwrap();
        fs::rename(&tmp, self.dir.join("new").join(&file)).unwrap();
    }

    fn count(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|s| fs::read_dir(self.dir.join(s)).map_or(0, |d| d.count()))
            .sum()
    }
}

/// Appends the test user to Dovecot's passwd-file unless it is there (one append: atomic).
fn ensure_user(users_file: &Path, uid: u32, gid: u32, home: &Path) {
    let text = fs::read_to_string(users_file).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with(&format!("{USER}:"))) {
        use std::io::Write as _;
        if let Ok(mut f) = fs::OpenOptions::new().append(true).open(users_file) {
            let _ = f.write_all(
                format!(
                    "{USER}:{{PLAIN}}{USER}pass:{uid}:{gid}::{}::\n",
                    home.display()
                )
                .as_bytes(),
            );
        }
    }
}

/// Whether the test user can log in over plain POP3.
fn pop3_login(addr: &str) -> bool {
    use std::io::{BufRead as _, Write as _};
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = std::io::BufReader::new(&stream);
    let mut writer = &stream;
    let mut reply = || {
        let mut line = String::new();
        reader.read_line(&mut line).is_ok() && line.starts_with("+OK")
    };
    let ok = reply()
        && writer
            .write_all(format!("USER {USER}\r\n").as_bytes())
            .is_ok()
        && reply()
        && writer
            .write_all(format!("PASS {USER}pass\r\n").as_bytes())
            .is_ok()
        && reply();
    let _ = writer.write_all(b"QUIT\r\n");
    ok
}

fn delivered_subjects(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["subject"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn pop3_keeps_the_mail_while_the_queue_disk_is_full_and_delivers_it_once_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, 8 << 20) else {
        return;
    };
    let mailbox = Mailbox::create();
    let addr = std::env::var("ALERTBRIDGE_TEST_POP3_ADDR").unwrap();
    let admin = free_port();
    let d = dir.path().display();
    let config = dir.path().join("alertbridge.toml");
    fs::write(
        &config,
        format!(
            r#"
[host]
data_dir = "{data}"
admin_listen = "127.0.0.1:{admin}"

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "{addr}"
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

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
"#,
            data = data.display()
        ),
    )
    .unwrap();
    let b = Bridge::start(&config, admin, &dir.path().join("host.log"), None);
    mailbox.deliver(0);
    wait_until("the first mail as an IM", LONG, || {
        delivered_subjects(dir.path()).contains(&"qfull 0".to_owned())
    });
    wait_until("the first mail deleted", LONG, || mailbox.count() == 0);

    let filler = fill(&data);
    for n in 1..=5 {
        mailbox.deliver(n);
    }
    wait_until("the queue to go down", LONG, || {
        b.metric("alertbridge_queue_up") == Some(0.0)
    });
    let (code, health) = b.health();
    assert_eq!(code, 503, "{health}");
    // Several polls while the disk stays full. A mail may still be taken when a commit finds
    // room inside the file (then it is queued, acknowledged and deleted); every other one is
    // refused "try later" and stays on the server: none is lost.
    std::thread::sleep(Duration::from_secs(3));
    let kept = mailbox.count();
    let taken = b
        .metric_labelled("alertbridge_alerts_accepted_total", "source=\"mail\"")
        .unwrap_or(0.0) as usize
        - 1;
    assert!(
        kept >= 1,
        "every mail left the mailbox while the disk was full; log:\n{}",
        b.log()
    );
    assert_eq!(
        kept + taken,
        5,
        "a mail is neither on the server nor queued; log:\n{}",
        b.log()
    );
    assert!(
        b.log().contains("mail stays on the server") && b.log().contains("queue unavailable"),
        "the source was not told: {}",
        b.log()
    );

    fs::remove_file(&filler).unwrap();
    wait_until("every mail as an IM", LONG, || {
        delivered_subjects(dir.path()).len() >= 6
    });
    wait_until("the mailbox emptied", LONG, || mailbox.count() == 0);
    std::thread::sleep(Duration::from_millis(500));
    let mut got = delivered_subjects(dir.path());
    got.sort();
    let want: Vec<String> = (0..=5).map(|n| format!("qfull {n}")).collect();
    assert_eq!(got, want, "each mail exactly once; log:\n{}", b.log());
}
