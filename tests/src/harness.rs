//! Runs the real `alertbridge` binary with real plugin files for end-to-end tests: writes a
//! config into a scratch folder, starts the host, talks to its admin API, kills or stops it.
//!
//! The binary and the plugin files come from the workspace's target folder, so build the
//! workspace first (`scripts/test` does: `cargo build --workspace` then the tests).

use std::{
    fs,
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The folder holding the `alertbridge` binary and the plugin files: the profile folder of
/// the target this test binary was built into.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_owned();
    let bin = dir.join("alertbridge");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, as scripts/test does)",
        bin.display()
    );
    dir
}

/// A plugin file of the workspace, e.g. `plugin_file("test_sink")`.
pub fn plugin_file(name: &str) -> PathBuf {
    let p = bin_dir().join(format!("libalertbridge_{name}.so"));
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        p.display()
    );
    p
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
    use std::io::Write as _;
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
