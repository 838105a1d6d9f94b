//! Shared by the `queue_*` end-to-end tests: a small tmpfs mounted for the test, the real
//! `alertbridge` binary spawned with an optional RLIMIT_FSIZE, webhook posts whose answer
//! headers the tests read, and the test sink's records.
#![allow(dead_code, unsafe_code)]

use std::{
    fs,
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{bin_dir, get, wait_until};

pub const TOKEN: &str = "queue-e2e-token";
pub const LONG: Duration = Duration::from_secs(60);

/// A tmpfs of a fixed size, unmounted on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `path`; `None` (after saying why) if this machine does not
    /// let the test mount one (not root, or no CAP_SYS_ADMIN in a container).
    pub fn mount(path: &Path, bytes: u64) -> Option<Self> {
        fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .expect("run mount");
        if !out.status.success() {
            // One line past the test harness's capture, so `cargo test` shows it.
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            let line = format!(
                "skipped {test}: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {}\n",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            return None;
        }
        Some(Self {
            path: path.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the file system holding `dir` until a write fails for lack of room; returns the
/// filler file (remove it to free the space).
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).expect("create filler");
    for chunk in [1 << 16, 4096, 512, 1] {
        let block = vec![0x55u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

/// A spawned `alertbridge` with its log.
pub struct Bridge {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub admin: String,
}

/// Spawns `alertbridge ARGS`, stderr appended to `log`, with RLIMIT_FSIZE set to `fsize`
/// bytes when given (and SIGXFSZ left at its default: the host must cope itself).
pub fn spawn(args: &[&str], log: &Path, fsize: Option<u64>) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    let mut cmd = Command::new(bin_dir().join("alertbridge"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(limit) = fsize {
        // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().expect("spawn alertbridge")
}

/// Runs `alertbridge ARGS` to the end: exit status, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin_dir().join("alertbridge"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run alertbridge");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Bridge {
    /// Starts `alertbridge run --config CONFIG` and waits until its admin API answers.
    pub fn start(config: &Path, admin: u16, log: &Path, fsize: Option<u64>) -> Self {
        let child = spawn(
            &["run", "--config", &config.display().to_string()],
            log,
            fsize,
        );
        let mut b = Self {
            child: Some(child),
            log: log.to_owned(),
            admin: format!("http://127.0.0.1:{admin}"),
        };
        let start = Instant::now();
        while get(&format!("{}/healthz", b.admin)).is_none() {
            if let Some(status) = b.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "alertbridge exited at start with {status}; log:\n{}",
                    b.log()
                );
            }
            assert!(
                start.elapsed() < LONG,
                "alertbridge did not answer; log:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `/healthz`: status code and JSON.
    pub fn health(&self) -> (u16, serde_json::Value) {
        let (status, _, body) = http(&format!("{}/healthz", self.admin), "GET", &[], "")
            .unwrap_or_else(|| panic!("/healthz did not answer; log:\n{}", self.log()));
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    /// The sample of `/metrics` `name{...}` whose labels contain `labels`.
    pub fn metric_labelled(&self, name: &str, labels: &str) -> Option<f64> {
        let text = get(&format!("{}/metrics", self.admin))?;
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
    }

    /// One unlabelled sample of `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = get(&format!("{}/metrics", self.admin))?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A blocking HTTP/1.1 request (connection: close): status, head, body.
pub fn http(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {hostport}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    s.write_all(format!("{head}\r\n{body}").as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// Posts one JSON alert to the webhook: status, head, body. Waits (up to a minute) for the
/// webhook to listen: it starts after the admin API.
pub fn post_alert(hook_port: u16, alert: &serde_json::Value) -> (u16, String, String) {
    let start = Instant::now();
    loop {
        let answer = post_once(hook_port, alert);
        if answer.0 != 0 || start.elapsed() > LONG {
            return answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post_once(hook_port: u16, alert: &serde_json::Value) -> (u16, String, String) {
    http(
        &format!("http://127.0.0.1:{hook_port}/api/v1/alerts"),
        "POST",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        &alert.to_string(),
    )
    .unwrap_or((0, String::new(), String::new()))
}

/// The embedded queue backends a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Redb,
    /// The segment log (`[queue] backend = "log"`).
    Log,
}

impl Backend {
    /// The `[queue]` section that chooses it.
    fn section(self) -> &'static str {
        match self {
            Self::Redb => "",
            Self::Log => "[queue]\nbackend = \"log\"\n",
        }
    }
}

/// A config with the `webhook` source `hook`, the test sink and one route to one user;
/// `host_extra` goes into `[host]`. The queue lives in `data`, everything else in `dir`.
pub fn webhook_config(
    dir: &Path,
    data: &Path,
    admin: u16,
    hook_port: u16,
    host_extra: &str,
) -> PathBuf {
    webhook_config_on(Backend::Redb, dir, data, admin, hook_port, host_extra)
}

/// [`webhook_config`] with the queue on `backend`.
pub fn webhook_config_on(
    backend: Backend,
    dir: &Path,
    data: &Path,
    admin: u16,
    hook_port: u16,
    host_extra: &str,
) -> PathBuf {
    let d = dir.display();
    let tokens = dir.join("webhook.tokens");
    fs::write(&tokens, format!("{TOKEN}\n")).expect("write tokens");
    let config = format!(
        r#"
[host]
data_dir = "{data}"
admin_listen = "127.0.0.1:{admin}"
{host_extra}

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 100
hold_recheck_ms = 200

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook_port}"
tokens_file = "{tokens}"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
presence_file = "{d}/presence"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
offline = {{ policy = "hold", max_wait_secs = 3600, then = "skip" }}

{queue}"#,
        data = data.display(),
        tokens = tokens.display(),
        queue = backend.section(),
    );
    let path = dir.join("alertbridge.toml");
    fs::write(&path, config).expect("write config");
    path
}

/// Sets the one recipient online or offline (offline alerts are held, unfinished).
pub fn set_online(dir: &Path, online: bool) {
    let state = if online { "online" } else { "offline" };
    fs::write(
        dir.join("presence"),
        format!("sip:ops@contoso.com {state}\n"),
    )
    .expect("write presence");
}

/// An alert with dedup key and label `seq`, and a body of `body_bytes`.
pub fn alert(seq: &str, body_bytes: usize) -> serde_json::Value {
    serde_json::json!({
        "subject": format!("queue test {seq}"),
        "body": "b".repeat(body_bytes),
        "labels": {"seq": seq},
        "dedup_key": seq,
    })
}

/// The `seq` labels of everything the test sink recorded.
pub fn delivered_seqs(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("delivered.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| r["labels"]["seq"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until every one of `seqs` was delivered, each exactly once.
pub fn wait_delivered_once(dir: &Path, seqs: &[String], log: impl Fn() -> String) {
    wait_until("every acknowledged alert at the sink", LONG, || {
        let got = delivered_seqs(dir);
        seqs.iter().all(|s| got.contains(s))
    });
    let got = delivered_seqs(dir);
    for s in seqs {
        let n = got.iter().filter(|g| *g == s).count();
        assert_eq!(n, 1, "alert {s} delivered {n} times; log:\n{}", log());
    }
}

/// The segments of the log queue in `data`, oldest first.
pub fn log_segments(data: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(data.join("queue-log"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|x| x == "log"));
    out.sort();
    out
}

/// CRC-32 (IEEE), as the log's frames carry it.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Where each frame of log segment `bytes` starts and ends (header included).
pub fn log_frames(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    const HEADER: usize = 32;
    let mut frames = Vec::new();
    let mut at = HEADER;
    while at + LOG_FRAME_HEADER <= bytes.len() && bytes[at..at + 4] == 0xFEFF_AB17u32.to_le_bytes()
    {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = (at + LOG_FRAME_HEADER + len).min(bytes.len());
        frames.push(at..end);
        at = end;
    }
    frames
}

/// A log frame's header: magic, length, sequence, checksum.
pub const LOG_FRAME_HEADER: usize = 20;

/// Gives every frame of log segment `bytes` its checksum again (after a test changed bytes of
/// a document): what the log holds then was written whole, by something else than the host.
pub fn reseal_log_frames(bytes: &mut [u8]) {
    for frame in log_frames(bytes) {
        let crc = crc32(&[
            &bytes[frame.start + 8..frame.start + 16],
            &bytes[frame.start + LOG_FRAME_HEADER..frame.end],
        ]);
        bytes[frame.start + 16..frame.start + 20].copy_from_slice(&crc.to_le_bytes());
    }
}
