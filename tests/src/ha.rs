//! Several real hosts on one PostgreSQL (`[queue] backend = "postgres"`), as the
//! high-availability tests run them: each [`Node`] is an `alertbridge run` with a webhook and
//! the test sink (a record file of its own); a [`Load`] posts alerts across their webhooks as
//! a load balancer's clients would (to the next host when one refuses the connection or says
//! "try later"); [`check_deliveries`] reads every node's record and checks that each alert with
//! a 202 reached the sink, and that none arrived twice unmarked.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::harness::{Host, free_port, get, wait_until};

/// The webhook's bearer token on every node.
pub const TOKEN: &str = "ha-token-5d1e";
/// The recipient of single alerts.
pub const OPS: &str = "sip:ops@contoso.com";
/// The users a [`Load`] spreads its alerts over (alert `seq` goes to user `seq % USERS`).
pub const USERS: usize = 64;
/// How long a test waits for what must happen.
pub const LONG: Duration = Duration::from_secs(120);

/// What differs between the nodes of a test.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `[queue] lease_ms`.
    pub lease_ms: u64,
    /// More lines for `[host]`, `[queue]`, `[delivery]` and the test sink's config.
    pub host_extra: String,
    pub queue_extra: String,
    pub delivery_extra: String,
    pub sink_extra: String,
}

/// A scratch folder for a test's hosts (and database server), removed at the end unless the
/// test failed: then it is kept, and its path printed, for a look at the logs and the data.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "alertbridge-ha-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::dovecot::unix_micros()
        ));
        fs::create_dir_all(&dir).expect("scratch folder");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test folder kept for a look: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Makes sure the host and plugins are built (the first test of a run builds them), then
/// starts the clock of the test's own part, which its summary line reports.
pub fn started() -> Instant {
    crate::harness::bin_dir();
    Instant::now()
}

/// One host of the pair (or more) sharing the database at `db_url`.
pub struct Node {
    pub name: String,
    pub host: Host,
    pub hook_port: u16,
    pub dir: PathBuf,
    admin_port: u16,
    db_url: String,
}

impl Node {
    /// The config of node `name` in `dir` (its data, record file and log stay there).
    pub fn config(
        dir: &Path,
        name: &str,
        db_url: &str,
        admin: u16,
        hook: u16,
        o: &Options,
    ) -> String {
        let d = dir.display();
        format!(
            r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
history_max_alerts = 50000
{host_extra}

[queue]
backend = "postgres"
url = "{db_url}"
node = "{name}"
lease_ms = {lease_ms}
{queue_extra}

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 60000
{delivery_extra}

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "127.0.0.1:{hook}"
tokens_file = "{d}/webhook.tokens"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"
redeliveries_file = "{d}/redeliveries.txt"
{sink_extra}

# Each alert names its recipient: a load spread over many users is delivered side by side
# (one user's messages from one source go one at a time, in accept order).
[[route]]
name = "all"
sinks = ["sink"]
allow_alert_recipients = true
"#,
            lease_ms = o.lease_ms,
            host_extra = o.host_extra,
            queue_extra = o.queue_extra,
            delivery_extra = o.delivery_extra,
            sink_extra = o.sink_extra,
        )
    }

    /// Starts node `name` in `root/<name>` on the database at `db_url`; returns once its
    /// webhook answers.
    pub fn start(root: &Path, name: &str, db_url: &str, o: &Options) -> Self {
        let dir = root.join(name);
        // With the queue in PostgreSQL the host keeps little in data_dir, and creates none.
        fs::create_dir_all(dir.join("data")).expect("node folder");
        fs::write(dir.join("webhook.tokens"), format!("{TOKEN}\n")).expect("tokens file");
        let (admin, hook_port) = (free_port(), free_port());
        let config = Self::config(&dir, name, db_url, admin, hook_port, o);
        let host = Host::start(&dir, admin, &config);
        let node = Self {
            name: name.to_owned(),
            host,
            hook_port,
            dir,
            admin_port: admin,
            db_url: db_url.to_owned(),
        };
        node.wait_for_webhook();
        node
    }

    /// `http://127.0.0.1:<hook>/api/v1/alerts`.
    pub fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/alerts", self.hook_port)
    }

    fn wait_for_webhook(&self) {
        let url = format!("http://127.0.0.1:{}/healthz", self.hook_port);
        let start = Instant::now();
        while get(&url).is_none_or(|b| b.trim() != "ok") {
            assert!(
                start.elapsed() < LONG,
                "{}: the webhook did not answer on {url}; log:\n{}",
                self.name,
                self.host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        self.host.kill9();
    }

    /// Starts it again after a kill; returns once its webhook answers.
    pub fn restart(&mut self) {
        self.host.restart();
        self.wait_for_webhook();
    }

    /// Rewrites its config with other `Options` (same ports, database and folder), for the
    /// next [`Node::restart`].
    pub fn reconfigure(&self, o: &Options) {
        let config = Self::config(
            &self.dir,
            &self.name,
            &self.db_url,
            self.admin_port,
            self.hook_port,
            o,
        );
        fs::write(&self.host.config, config).expect("write config");
    }

    /// The last `n` lines of its log at WARN or ERROR, for a failure message.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.host.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        format!(
            "{} (warnings and errors, last {n}):\n{}",
            self.name,
            tail.join("\n")
        )
    }

    /// The test sink's record of this node: one object per delivered recipient.
    pub fn records(&self) -> Vec<Record> {
        fs::read_to_string(self.dir.join("delivered.jsonl"))
            .unwrap_or_default()
            .lines()
            // A SIGKILL may cut the last line short: only whole lines count.
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| Record {
                node: self.name.clone(),
                alert_id: v["alert_id"].as_u64().unwrap_or(0),
                key: v["labels"]["key"].as_str().unwrap_or("").to_owned(),
                subject: v["subject"].as_str().unwrap_or("").to_owned(),
                delivered_us: v["delivered_us"].as_u64().unwrap_or(0),
            })
            .collect()
    }
}

/// One delivery the test sink of `node` recorded.
#[derive(Clone, Debug)]
pub struct Record {
    pub node: String,
    pub alert_id: u64,
    /// The alert's `key` label (the test's own name for it, also its dedup key).
    pub key: String,
    pub subject: String,
    /// When the sink took it (µs since the epoch).
    pub delivered_us: u64,
}

/// The body the tests post: one alert to `user` whose dedup key and `key` label are `key`.
pub fn alert_body(key: &str, user: &str) -> String {
    json!({
        "subject": format!("ha alert {key}"),
        "labels": {"key": key},
        "dedup_key": key,
        "recipients": {"users": [user]},
    })
    .to_string()
}

/// The user alert `seq` of a [`Load`] goes to.
pub fn user_of(seq: usize) -> String {
    format!("sip:u{}@contoso.com", seq % USERS)
}

/// One answer of a webhook.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// POSTs a JSON `body` to `url` with [`TOKEN`].
pub async fn post(client: &reqwest::Client, url: &str, body: String) -> reqwest::Result<Answer> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// Posts the alert `key` for `user` to the webhook at `url` from a synchronous test; its id
/// (anything but a 202 fails the test).
pub fn post_now(url: &str, key: &str, user: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answer = rt
        .block_on(post(&reqwest::Client::new(), url, alert_body(key, user)))
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    assert_eq!(answer.status, 202, "{key} at {url}: {answer:?}");
    answer.body["ids"][0]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: a 202 without an id: {answer:?}"))
}

/// What the posting clients met besides first-time 202s.
#[derive(Debug, Default)]
pub struct Trouble {
    /// Refused or cut connections (a killed host), each followed by a resend to the next host.
    pub connection_errors: AtomicUsize,
    /// 503 answers.
    pub unavailable: AtomicUsize,
    /// 503 answers that carried a `Retry-After`.
    pub retry_after: AtomicUsize,
    /// 202s naming an alert the hosts already had (a resend after a lost answer).
    pub duplicates: AtomicUsize,
}

/// Clients posting `count` alerts (keys `<prefix>-00000`…) across webhooks, each alert until a
/// 202: the first try at `urls[seq % n]`, and after a refused connection or a 503 the next URL
/// (after the `Retry-After` for a 503), as a load balancer in front of the hosts would.
pub struct Load {
    rt: tokio::runtime::Runtime,
    posters: Vec<tokio::task::JoinHandle<Vec<(String, u64)>>>,
    accepted: Arc<AtomicUsize>,
    pub trouble: Arc<Trouble>,
    pub count: usize,
}

impl Load {
    /// Starts `connections` clients; `rate` (alerts/s over all of them) paces the posts when
    /// set.
    pub fn start(
        urls: &[String],
        prefix: &str,
        count: usize,
        connections: usize,
        rate: Option<u32>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let next = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let trouble = Arc::new(Trouble::default());
        let start = Instant::now();
        let posters = (0..connections)
            .map(|_| {
                let client = Client {
                    urls: urls.to_vec(),
                    prefix: prefix.to_owned(),
                    count,
                    next: next.clone(),
                    accepted: accepted.clone(),
                    trouble: trouble.clone(),
                    pace: rate.map(|r| (start, Duration::from_secs(1) / r.max(1))),
                };
                rt.spawn(client.run())
            })
            .collect();
        Self {
            rt,
            posters,
            accepted,
            trouble,
            count,
        }
    }

    /// How many alerts got their 202 so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Whether every client is done.
    pub fn finished(&self) -> bool {
        self.posters
            .iter()
            .all(tokio::task::JoinHandle::is_finished)
    }

    /// Waits until at least `n` alerts got their 202 (or every client is done).
    pub fn wait_accepted(&self, n: usize) {
        wait_until(&format!("{n} alerts accepted"), LONG * 2, || {
            self.accepted() >= n || self.finished()
        });
    }

    /// Waits for every client: key → alert id of every 202 (a key answered with two ids fails).
    pub fn finish(self) -> BTreeMap<String, u64> {
        let mut receipts = BTreeMap::new();
        for poster in self.posters {
            for (key, id) in self.rt.block_on(poster).expect("a poster failed") {
                if let Some(other) = receipts.insert(key.clone(), id) {
                    assert_eq!(other, id, "{key} got two different alert ids");
                }
            }
        }
        assert_eq!(receipts.len(), self.count, "not every alert got a 202");
        receipts
    }

    /// One line on what the clients met.
    pub fn summary(&self) -> String {
        let t = &self.trouble;
        format!(
            "{} connection errors, {} 503s ({} with Retry-After), {} resends answered as duplicates",
            t.connection_errors.load(Ordering::Relaxed),
            t.unavailable.load(Ordering::Relaxed),
            t.retry_after.load(Ordering::Relaxed),
            t.duplicates.load(Ordering::Relaxed),
        )
    }
}

/// One posting client with one keep-alive connection per host.
struct Client {
    urls: Vec<String>,
    prefix: String,
    count: usize,
    next: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    trouble: Arc<Trouble>,
    /// (start, interval): alert `seq` is posted no earlier than `start + seq * interval`.
    pace: Option<(Instant, Duration)>,
}

impl Client {
    async fn run(self) -> Vec<(String, u64)> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut receipts = Vec::new();
        loop {
            let seq = self.next.fetch_add(1, Ordering::SeqCst);
            if seq >= self.count {
                return receipts;
            }
            if let Some((start, interval)) = self.pace {
                let due = start + interval * u32::try_from(seq).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due.into()).await;
            }
            let key = format!("{}-{seq:05}", self.prefix);
            let id = self.post_until_taken(&http, seq, &key).await;
            receipts.push((key, id));
            self.accepted.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn post_until_taken(&self, http: &reqwest::Client, seq: usize, key: &str) -> u64 {
        let body = alert_body(key, &user_of(seq));
        let deadline = Instant::now() + LONG;
        let mut target = seq % self.urls.len();
        loop {
            assert!(Instant::now() < deadline, "{key}: no 202 within {LONG:?}");
            let t = &self.trouble;
            match post(http, &self.urls[target], body.clone()).await {
                Ok(a) if a.status == 202 => {
                    if a.body["duplicates"]
                        .as_array()
                        .is_some_and(|d| !d.is_empty())
                    {
                        t.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    return a.body["ids"][0]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{key}: a 202 without an id: {a:?}"));
                }
                Ok(a) if a.status == 503 => {
                    t.unavailable.fetch_add(1, Ordering::Relaxed);
                    let secs: u64 = match a.retry_after.as_deref().map(str::parse) {
                        Some(Ok(s)) => {
                            t.retry_after.fetch_add(1, Ordering::Relaxed);
                            s
                        }
                        _ => 1,
                    };
                    tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
                }
                Ok(a) => panic!("{key}: unexpected answer {a:?}"),
                Err(_) => {
                    t.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            target = (target + 1) % self.urls.len();
        }
    }
}

/// Waits until no node has an unfinished alert in hand (`/healthz` `queue_depth` 0 on each).
pub fn wait_idle(nodes: &[&Node]) {
    for node in nodes {
        wait_until(&format!("{}: an empty queue", node.name), LONG, || {
            node.host.api("/healthz")["queue_depth"] == 0
        });
    }
}

/// What [`check_deliveries`] found.
#[derive(Debug)]
pub struct Deliveries {
    /// Records over all nodes.
    pub records: usize,
    /// Second copies, all marked as repeats.
    pub marked: usize,
    /// Alerts delivered by each node.
    pub by_node: BTreeMap<String, usize>,
}

/// Waits until every alert of `receipts` (key → id) is in some node's record, then checks:
/// each delivery is of an alert with a 202 and under its id, and an alert arrived unmarked at
/// most once — a second copy (another host took it over after its owner died mid-send) must
/// carry `repeat_mark` before its subject.
pub fn check_deliveries(
    nodes: &[&Node],
    receipts: &BTreeMap<String, u64>,
    repeat_mark: &str,
) -> Deliveries {
    let all = || -> Vec<Record> { nodes.iter().flat_map(|n| n.records()).collect() };
    let mut missing = Vec::new();
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("every alert with a 202 in a sink", LONG, || {
            let seen: BTreeSet<String> = all().into_iter().map(|r| r.key).collect();
            missing = receipts
                .keys()
                .filter(|k| !seen.contains(*k))
                .take(5)
                .cloned()
                .collect();
            missing.is_empty()
        });
    }));
    if waited.is_err() {
        let views: Vec<String> = missing
            .iter()
            .map(|k| {
                let id = receipts[k];
                let view =
                    get(&format!("{}/api/v1/alerts/{id}", nodes[0].host.admin)).unwrap_or_default();
                format!("{k} (alert {id}): {view}")
            })
            .collect();
        let logs: Vec<String> = nodes.iter().map(|n| n.log_tail(40)).collect();
        panic!(
            "alerts with a 202 never reached a sink, e.g.:\n{}\n{}",
            views.join("\n"),
            logs.join("\n")
        );
    }
    let mut unmarked: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Deliveries {
        records: 0,
        marked: 0,
        by_node: BTreeMap::new(),
    };
    for r in all() {
        out.records += 1;
        let id = receipts
            .get(&r.key)
            .unwrap_or_else(|| panic!("{} delivered {:?}, which never got a 202", r.node, r.key));
        assert_eq!(
            r.alert_id, *id,
            "{}: {} delivered as alert {}, its 202 said {id}",
            r.node, r.key, r.alert_id
        );
        *out.by_node.entry(r.node.clone()).or_default() += 1;
        if r.subject.starts_with(repeat_mark) {
            out.marked += 1;
        } else if let Some(first) = unmarked.insert(r.key.clone(), r.node.clone()) {
            panic!(
                "{} (alert {id}) arrived unmarked twice: by {first} and by {}",
                r.key, r.node
            );
        }
    }
    out
}
