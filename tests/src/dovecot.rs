//! The test Dovecot, as the end-to-end tests that read mail use it: its environment (from
//! `scripts/dovecot.sh env`), a mailbox user of its own per test (added to Dovecot's
//! passwd-file at run time, kept there while alive), a POP3 login probe, plain mails, and what
//! the host and its test sink report (records, labels, `/metrics` counters).

use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    harness::{Host, get, wait_until},
    servers,
};

pub const LONG: Duration = Duration::from_secs(120);
pub const RECIPIENT: &str = "sip:ops@contoso.com";

/// Where the test Dovecot is, from the variables `scripts/dovecot.sh env` prints.
pub struct Dovecot {
    pub addr: String,
    pub maildirs: PathBuf,
    pub users_file: PathBuf,
}

/// The test Dovecot, if its variables are set and it answers; else the test skips (one line
/// saying how to start it) or, under `ALERTBRIDGE_REQUIRE_SERVERS`, fails — see
/// [`crate::servers`]. Use as `let Some(env) = dovecot() else { return };`.
pub fn dovecot() -> Option<Dovecot> {
    detect(&|name| std::env::var(name).ok())
        .map_err(|why| servers::absent("Dovecot", &why, servers::DOVECOT_HINT))
        .ok()
}

/// [`dovecot`] over the variables `lookup` gives: where it is, or why it is not there.
pub fn detect(lookup: &impl Fn(&str) -> Option<String>) -> Result<Dovecot, String> {
    let addr = servers::var(lookup, "ALERTBRIDGE_TEST_POP3_ADDR")?;
    let maildirs = PathBuf::from(servers::var(lookup, "ALERTBRIDGE_TEST_MAILDIR_ROOT")?);
    // The script keeps its passwd-file beside its config: DIR/dovecot/users, DIR/mail.
    let users_file = maildirs
        .parent()
        .map(|d| d.join("dovecot").join("users"))
        .unwrap_or_default();
    if !users_file.is_file() {
        return Err(format!(
            "{} is missing (ALERTBRIDGE_TEST_MAILDIR_ROOT is not from scripts/dovecot.sh?)",
            users_file.display()
        ));
    }
    if !servers::answers(&addr) {
        return Err(format!(
            "nothing answers at ALERTBRIDGE_TEST_POP3_ADDR={addr}"
        ));
    }
    Ok(Dovecot {
        addr,
        maildirs,
        users_file,
    })
}

pub fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// A mailbox user of this test file: a line in Dovecot's passwd-file and an empty Maildir.
///
/// `dovecot.sh restart` (which the pop3 plugin's own tests run) rewrites the passwd-file, so a
/// guard thread puts the line back whenever it is missing, for as long as the mailbox lives.
pub struct Mailbox {
    pub user: String,
    pub dir: PathBuf,
    stop: Arc<AtomicBool>,
    guard: Option<JoinHandle<()>>,
}

impl Mailbox {
    pub fn create(env: &Dovecot, user: &str) -> Self {
        let users = fs::read_to_string(&env.users_file).expect("read Dovecot's users file");
        // name:{PLAIN}pass:uid:gid::home:: — the mail owner of the script's own users.
        let template = users
            .lines()
            .find(|l| l.starts_with("alerts:"))
            .expect("the users file has the `alerts` user");
        let fields: Vec<&str> = template.split(':').collect();
        let (uid, gid) = (
            fields[2].parse::<u32>().expect("uid"),
            fields[3].parse::<u32>().expect("gid"),
        );
        let home = env.maildirs.join(user);
        let line = format!(
            "{user}:{{PLAIN}}{user}pass:{uid}:{gid}::{}::\n",
            home.display()
        );
        let dir = home.join("Maildir");
        for path in [
            home.clone(),
            dir.clone(),
            dir.join("new"),
            dir.join("cur"),
            dir.join("tmp"),
        ] {
            fs::create_dir_all(&path).expect("create Maildir");
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .expect("chown Maildir to the mail user");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).expect("chmod Maildir");
        }
        for sub in ["new", "cur", "tmp"] {
            for entry in fs::read_dir(dir.join(sub)).expect("list Maildir").flatten() {
                fs::remove_file(entry.path()).expect("empty Maildir");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (file, prefix, flag) = (
            env.users_file.clone(),
            format!("{user}:"),
            Arc::clone(&stop),
        );
        ensure_line(&file, &prefix, &line);
        let guard = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                ensure_line(&file, &prefix, &line);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // Dovecot looks at the passwd-file at most once a second: wait until the user can log in.
        wait_until(&format!("Dovecot to accept user {user}"), LONG, || {
            pop3_login(&env.addr, user)
        });
        Self {
            user: user.to_owned(),
            dir,
            stop,
            guard: Some(guard),
        }
    }

    /// Drops a mail into `new/` the Maildir way (written in `tmp/`, renamed); returns the time
    /// of the rename in µs since the epoch.
    pub fn deliver(&self, name: &str, mail: &str) -> u128 {
        self.deliver_bytes(name, mail.as_bytes())
    }

    /// [`Self::deliver`] for a mail that is not UTF-8.
    pub fn deliver_bytes(&self, name: &str, mail: &[u8]) -> u128 {
        let file = format!("{}.{name}.{}.pop3-e2e", unix_micros(), std::process::id());
        self.deliver_as(&file, mail)
    }

    /// [`Self::deliver_bytes`] under exactly the file name `file` (in `tmp/`, then `new/`).
    pub fn deliver_as(&self, file: &str, mail: impl AsRef<[u8]>) -> u128 {
        let tmp = self.dir.join("tmp").join(file);
        fs::write(&tmp, mail).expect("write mail");
        fs::rename(&tmp, self.dir.join("new").join(file)).expect("deliver mail");
        unix_micros()
    }

    pub fn files(&self) -> Vec<PathBuf> {
        ["new", "cur"]
            .iter()
            .flat_map(|s| {
                fs::read_dir(self.dir.join(s))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
            })
            .collect()
    }

    /// Mails on the server (new and seen).
    pub fn count(&self) -> usize {
        self.files().len()
    }

    /// The Message-IDs of the mails still on the server (a file Dovecot just moved is skipped).
    pub fn message_ids(&self) -> BTreeSet<String> {
        self.files()
            .iter()
            .filter_map(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter_map(|m| header(&m, "message-id").map(|v| v.trim_matches(['<', '>']).to_owned()))
            .collect()
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

/// Appends `line` to the passwd-file unless a line starts with `prefix` (one append: atomic).
pub fn ensure_line(file: &Path, prefix: &str, line: &str) {
    let text = fs::read_to_string(file).unwrap_or_default();
    if !text.lines().any(|l| l.starts_with(prefix)) {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(file)
            .expect("open Dovecot's users file");
        f.write_all(line.as_bytes())
            .expect("add the test user to Dovecot's users file");
    }
}

/// Whether `user` can log in over plain POP3 (USER/PASS, then QUIT).
pub fn pop3_login(addr: &str, user: &str) -> bool {
    use std::io::BufRead as _;
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
            .write_all(format!("USER {user}\r\n").as_bytes())
            .is_ok()
        && reply()
        && writer
            .write_all(format!("PASS {user}pass\r\n").as_bytes())
            .is_ok()
        && reply();
    let _ = writer.write_all(b"QUIT\r\n");
    ok
}

pub fn header<'a>(mail: &'a str, name: &str) -> Option<&'a str> {
    mail.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    })
}

pub fn plain_mail(user: &str, id: &str, subject: &str, body: &str) -> String {
    format!(
        "From: Monitoring <monitor@example.test>\r\nTo: {user}@example.test\r\nSubject: {subject}\r\n\
         Message-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
}

/// The test sink's records (a SIGKILL may cut the last line short: it is skipped).
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn label<'a>(record: &'a serde_json::Value, name: &str) -> &'a str {
    record["labels"][name].as_str().unwrap_or("")
}

/// A counter of the host's `/metrics` for source `mail` (0 when absent or not answering).
pub fn metric(host: &Host, name: &str, labels: &str) -> u64 {
    let text = get(&format!("{}/metrics", host.admin)).unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{"))
                && l.contains("source=\"mail\"")
                && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

pub fn wait_source_ok(host: &Host) {
    wait_until("the pop3 source to be logged in", LONG, || {
        host.instance("mail")["state"] == "ok"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder laid out as `scripts/dovecot.sh` leaves it (DIR/dovecot/users, DIR/mail), and
    /// the variables its `env` would print for a server at `addr`.
    fn layout(dir: &Path, addr: &str) -> impl Fn(&str) -> Option<String> {
        fs::create_dir_all(dir.join("dovecot")).unwrap();
        fs::create_dir_all(dir.join("mail")).unwrap();
        fs::write(
            dir.join("dovecot/users"),
            "alerts:{PLAIN}alertpass:1:1::/x::\n",
        )
        .unwrap();
        let (addr, mail) = (addr.to_owned(), dir.join("mail").display().to_string());
        move |name: &str| match name {
            "ALERTBRIDGE_TEST_POP3_ADDR" => Some(addr.clone()),
            "ALERTBRIDGE_TEST_MAILDIR_ROOT" => Some(mail.clone()),
            _ => None,
        }
    }

    #[test]
    fn without_the_variables_dovecot_is_absent_naming_the_first_missing() {
        let why = detect(&|_: &str| None).err().unwrap();
        assert_eq!(why, "ALERTBRIDGE_TEST_POP3_ADDR is not set");
    }

    #[test]
    fn a_dead_port_is_absent_and_a_listening_one_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let env = layout(dir.path(), &addr);
        let found = detect(&env).expect("a listening port with the script's layout");
        assert_eq!(found.addr, addr);
        assert_eq!(found.users_file, dir.path().join("dovecot/users"));
        drop(listener);
        let why = detect(&env).err().unwrap();
        assert!(
            why.contains("nothing answers") && why.contains(&addr),
            "{why}"
        );
    }

    #[test]
    fn a_maildir_root_not_made_by_the_script_is_absent() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let env = layout(dir.path(), &addr);
        fs::remove_file(dir.path().join("dovecot/users")).unwrap();
        let why = detect(&env).err().unwrap();
        assert!(why.contains("users"), "{why}");
    }
}
