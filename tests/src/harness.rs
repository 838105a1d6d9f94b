//! Runs the real `alertbridge` binary with real plugin files for end-to-end tests: writes a
//! config into a scratch folder, starts the host, talks to its admin API, kills or stops it.
//!
//! The first test of a run that needs the binary or a plugin file runs `scripts/testbed`
//! (once per run, under a lock; a no-op when nothing changed): it builds the workspace, builds
//! the test plugins (`tests/plugins`, a workspace of their own) into `target/test-plugins`, and
//! links the host, the four real plugins and the two scriptable test plugins into
//! `target/testbed-<profile>` — [`bin_dir`], where the tests run the host from, so its default
//! `plugin_dir` holds all six. `target/<profile>` ([`build_dir`]) keeps what an operator gets:
//! no test plugin is ever built there. So a plain `cargo test --workspace` on a fresh checkout
//! has everything the end-to-end tests load.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Where the built files are, once `scripts/testbed` ran for this test run.
struct Built {
    /// `target/<profile>`: `cargo build --workspace`'s output.
    build: PathBuf,
    /// `target/test-plugins/<profile>`: the test plugins and the loader's fixtures.
    test_plugins: PathBuf,
    /// `target/testbed-<profile>`: the host with the real and the test plugins beside it.
    testbed: PathBuf,
}

/// This run's id, the same in every test process of one `cargo test` or `cargo nextest run`:
/// nextest's run id, else the parent process (cargo) with its start time.
fn run_id() -> String {
    if let Ok(id) = std::env::var("NEXTEST_RUN_ID") {
        return format!("nextest-{id}");
    }
    let stat = |pid: &str| fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which sits in parentheses and may hold spaces.
    let fields = |text: &str| -> Vec<String> {
        text.rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let own = fields(&stat("self"));
    let ppid = own.get(1).cloned().unwrap_or_default();
    let started = fields(&stat(&ppid)).get(19).cloned().unwrap_or_default();
    format!("parent-{ppid}-{started}")
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test binary>
        let build = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_owned();
        let target = build.parent().expect("target/<profile>").to_owned();
        let profile = build
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a profile folder")
            .to_owned();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ lives in the repository")
            .to_owned();
        let testbed = target.join(format!("testbed-{profile}"));
        if !testbed.join("alertbridge").exists() {
            // Past the test harness's capture: a long first build should not look like a hang.
            let _ = writeln!(
                std::io::stderr().lock(),
                "testbed: building the host, the plugins and the test plugins (scripts/testbed); the first time takes minutes"
            );
        }
        let mut script = Command::new(repo.join("scripts/testbed"));
        match profile.as_str() {
            "debug" => {}
            "release" => {
                script.arg("--release");
            }
            other => {
                script.args(["--profile", other]);
            }
        }
        let out = script
            .env("CARGO_TARGET_DIR", &target)
            .env("ALERTBRIDGE_TESTBED_RUN", run_id())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed");
        assert!(
            out.status.success(),
            "scripts/testbed failed (it builds what the end-to-end tests run):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Built {
            test_plugins: target.join("test-plugins").join(&profile),
            build,
            testbed,
        }
    })
}

/// The folder the tests run the host from (`target/testbed-<profile>`): the `alertbridge`
/// binary with the real plugins and the test plugins (`test-source`, `test-sink`) beside it,
/// so a config without `plugin_dir` finds all of them.
pub fn bin_dir() -> PathBuf {
    built().testbed.clone()
}

/// `target/<profile>` as `cargo build --workspace` leaves it: what an operator runs (the demo,
/// the default `plugin_dir`, `alertbridge plugins`). No test plugin is ever built here.
pub fn build_dir() -> PathBuf {
    built().build.clone()
}

/// A plugin file, e.g. `plugin_file("test_sink")`, `plugin_file("fixture_bad_root")` (from
/// `target/test-plugins/<profile>`) or `plugin_file("webhook")` (from [`build_dir`]).
pub fn plugin_file(name: &str) -> PathBuf {
    let file = format!("libalertbridge_{name}.so");
    let b = built();
    [b.test_plugins.join(&file), b.build.join(&file)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{file} is in neither {} nor {} after scripts/testbed",
                b.test_plugins.display(),
                b.build.display()
            )
        })
}

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `f` is true, or panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `alertbridge <args>` to its end with RUST_LOG=info: whether it exited 0, and what it
/// printed (stdout, then stderr).
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("alertbridge"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run alertbridge");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The loopback ports a config's `listen = "127.0.0.1:<port>"` lines name (not `admin_listen`).
fn listen_ports(config: &str) -> Vec<u16> {
    config
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            if key.trim() != "listen" {
                return None;
            }
            let value = value.trim().trim_matches('"');
            value.strip_prefix("127.0.0.1:")?.parse().ok()
        })
        .filter(|port| *port != 0)
        .collect()
}

/// A running `alertbridge run`.
pub struct Host {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub admin: String,
    child: Option<Child>,
    log: PathBuf,
    starts: u32,
    /// A command the binary runs under (e.g. `prlimit --nofile=256 --`); empty for none.
    prefix: Vec<String>,
}

impl Host {
    /// Writes `config` (which must set `admin_listen = "127.0.0.1:<admin_port>"`) to
    /// `dir/alertbridge.toml` and starts the host on it, waiting until the admin API answers.
    pub fn start(dir: &Path, admin_port: u16, config: &str) -> Self {
        let path = dir.join("alertbridge.toml");
        fs::write(&path, config).expect("write config");
        let mut host = Self {
            dir: dir.to_owned(),
            config: path,
            admin: format!("http://127.0.0.1:{admin_port}"),
            child: None,
            log: dir.join("host.log"),
            starts: 0,
            prefix: Vec::new(),
        };
        host.restart();
        host
    }

    /// As [`Host::start`], with the binary run under `prefix` (a command that ends by running
    /// the one it is given, e.g. `["prlimit", "--nofile=256", "--"]`), on every (re)start.
    pub fn start_under(dir: &Path, admin_port: u16, config: &str, prefix: &[&str]) -> Self {
        let path = dir.join("alertbridge.toml");
        fs::write(&path, config).expect("write config");
        let mut host = Self {
            dir: dir.to_owned(),
            config: path,
            admin: format!("http://127.0.0.1:{admin_port}"),
            child: None,
            log: dir.join("host.log"),
            starts: 0,
            prefix: prefix.iter().map(|s| (*s).to_owned()).collect(),
        };
        host.restart();
        host
    }

    /// Starts the host again on the same config (after a kill or stop).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the host is still running");
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open host log");
        let bin = bin_dir().join("alertbridge");
        let mut command = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("ALERTBRIDGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn alertbridge");
        self.child = Some(child);
        let url = format!("{}/healthz", self.admin);
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "alertbridge exited at start with {status}; log:\n{}",
                    self.log()
                );
            }
            if get(&url).is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "alertbridge did not answer on {url}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.wait_listeners();
    }

    /// Waits (up to 10 s each) until every `listen = "127.0.0.1:<port>"` the config names
    /// (a webhook source's port) takes connections: the admin API answers before a source
    /// instance has bound its port. A port that never opens (a test of a failing source) is
    /// left to the test.
    fn wait_listeners(&mut self) {
        let text = fs::read_to_string(&self.config).unwrap_or_default();
        for port in listen_ports(&text) {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10)
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            {
                let exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The process id of the running host, e.g. to send it SIGHUP.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends the running host a signal by name (`"HUP"`, `"TERM"`), as `kill -<name>` does.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the host has logged so far (all runs).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// GET on the admin API, parsed as JSON.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let body = get(&format!("{}{path}", self.admin))
            .unwrap_or_else(|| panic!("GET {path} failed; log:\n{}", self.log()));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// The admin API's alerts, newest first.
    pub fn alerts(&self, limit: usize) -> Vec<serde_json::Value> {
        self.api(&format!("/api/v1/alerts?limit={limit}"))["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Every alert the admin API holds, newest first, following its pages (`next_before`);
    /// `headers` go with each request (e.g. the admin token).
    pub fn all_alerts(&self, headers: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut path = "/api/v1/alerts?limit=500".to_owned();
        loop {
            let (status, body) = request("GET", &format!("{}{path}", self.admin), headers, "")
                .unwrap_or_else(|| panic!("GET {path} failed; log:\n{}", self.log()));
            assert_eq!(status, 200, "GET {path}: {body}");
            let page: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
            out.extend(page["alerts"].as_array().cloned().unwrap_or_default());
            match page["next_before"].as_u64() {
                Some(before) => path = format!("/api/v1/alerts?limit=500&before={before}"),
                None => return out,
            }
        }
    }

    /// The status of instance `name` from `/healthz`.
    pub fn instance(&self, name: &str) -> serde_json::Value {
        let h = self.api("/healthz");
        h["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
            .unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asks the test-source plugin listening on control port `control` to emit alerts
/// (`query`: `count=N&prefix=P&subject=S&severity=V&concurrency=C`), waiting for the port to
/// come up (the source binds it once its instance has started); returns its JSON answer
/// (`accepted`, `duplicates`, `refused`, `ids`, `errors`).
pub fn emit(control: u16, query: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{control}/emit?{query}");
    let mut answer = None;
    wait_until(
        "the test source's control port",
        Duration::from_secs(30),
        || {
            answer = post(&url);
            answer.is_some()
        },
    );
    let (status, body) = answer.unwrap_or_default();
    assert_eq!(status, 200, "the test source refused {url}: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the test source answered no JSON ({e}): {body}"))
}

/// A blocking HTTP GET over a plain socket; `None` if nothing answered.
pub fn get(url: &str) -> Option<String> {
    request("GET", url, &[], "").map(|(_, body)| body)
}

/// A blocking HTTP POST with an empty body: status and body.
pub fn post(url: &str) -> Option<(u16, String)> {
    request("POST", url, &[], "")
}

/// A blocking HTTP/1.1 request over a plain socket (one request per connection): status and
/// body, or `None` if nothing answered.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (hostport, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(hostport).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {hostport}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").ok()?;
    // Read the head, then as much body as it announces: some servers keep the connection open.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let have = buf.len() - head_end;
        let done = match length {
            Some(n) => have >= n,
            None if chunked => buf.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let body = if chunked { dechunk(&body) } else { body };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
