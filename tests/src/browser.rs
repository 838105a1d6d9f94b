//! A headless Chromium driven through chromedriver's WebDriver API, for the status page tests:
//! start it ([`Browser::start`] with the paths from [`crate::servers::chromium`]), open a URL, run
//! a script, read an element's text, click, take a screenshot into `target/screenshots/`.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::harness::{bin_dir, free_port, request, wait_until};

/// How long the browser may take to come up.
const START: Duration = Duration::from_secs(30);

/// A chromedriver process and one browser session in it; both end when dropped.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (paths from [`crate::servers::chromium`]),
    /// with a fresh profile of its own.
    pub fn start((chromedriver, chromium): &(PathBuf, PathBuf)) -> Self {
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", START, || {
            request("GET", &format!("{base}/status"), &[], "").is_some()
        });
        let profile = std::env::temp_dir().join(format!(
            "alertbridge-chromium-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&profile).expect("browser profile folder");
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", format!("--user-data-dir={}", profile.display())]
        }}}});
        let v = webdriver("POST", &format!("{base}/session"), &caps);
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            profile,
        }
    }

    /// One WebDriver command of this session; panics on a WebDriver error.
    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let v = webdriver(
            method,
            &format!("{}/session/{}{path}", self.base, self.session),
            &body,
        );
        if v["value"].get("error").is_some() {
            panic!("webdriver {path}: {v}");
        }
        v["value"].clone()
    }

    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `js` in the page (`arguments[0]`... are `args`) and answers what it returns.
    pub fn script(&self, js: &str, args: Value) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": args}))
    }

    /// The visible text of the first element matching `selector` ("" if none).
    pub fn text(&self, selector: &str) -> String {
        self.script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([selector]),
        )
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Clicks the first element matching `selector` as a person would (WebDriver element
    /// click: scrolled into view, refused if hidden or covered).
    pub fn click(&self, selector: &str) {
        let found = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": selector}),
        );
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_owned();
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Saves a screenshot as `target/screenshots/<name>` and answers its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", json!({}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let out = bin_dir().parent().expect("target").join("screenshots");
        fs::create_dir_all(&out).expect("screenshot folder");
        let path = out.join(name);
        fs::write(&path, &png).expect("write the screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }
}

/// One WebDriver call: JSON in, JSON out.
fn webdriver(method: &str, url: &str, body: &Value) -> Value {
    let body = if method == "GET" {
        String::new()
    } else {
        body.to_string()
    };
    let (_, text) = request(method, url, &[("content-type", "application/json")], &body)
        .unwrap_or_else(|| panic!("chromedriver did not answer {url}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("chromedriver {url}: {e}: {text}"))
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            &[],
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = fs::remove_dir_all(&self.profile);
    }
}
