//! A scriptable source for alertbridge's tests: emits alerts on command (over a tiny HTTP
//! control port) or by itself at start, and records every receipt in a file.
//!
//! With `emit_count`, it submits alerts `0..emit_count` (dedup key `<prefix>:<seq>`, label
//! `seq`), skipping those whose receipts are already in `receipts_file`: after a host crash it
//! resumes where the receipts stop, like a mailbox that still holds unacknowledged mail.

use std::{
    collections::HashSet,
    fs::OpenOptions,
    io::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{
    Alert, Health, HealthState, PluginError, Severity, export_plugin,
    kit::{Host, Setup, Source, SourceContext, config_error},
};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// HTTP control port: `POST /emit?count=N&prefix=P&subject=S&severity=V&concurrency=C`,
    /// `POST /panic`.
    control_listen: Option<std::net::SocketAddr>,
    /// Lines `seq alert_id duplicate`, appended after each receipt.
    receipts_file: Option<PathBuf>,
    #[serde(default)]
    emit_count: u64,
    #[serde(default = "default_prefix")]
    emit_prefix: String,
    #[serde(default = "default_concurrency")]
    emit_concurrency: usize,
    /// Offer `emit_count` alerts at this fixed rate (open loop) instead of as fast as
    /// `emit_concurrency` allows.
    emit_rate_per_sec: Option<u64>,
    /// The run task panics this long after start.
    panic_after_ms: Option<u64>,
}

fn default_prefix() -> String {
    "test".into()
}

fn default_concurrency() -> usize {
    64
}

struct TestSource {
    config: Config,
    receipts: Mutex<Option<std::fs::File>>,
    done: Mutex<HashSet<String>>,
}

/// What one emit call did.
#[derive(Default, serde::Serialize)]
struct Emitted {
    accepted: u64,
    duplicates: u64,
    refused: u64,
    ids: Vec<u64>,
    errors: Vec<String>,
}

impl TestSource {
    fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: Config = setup.config()?;
        if config.emit_concurrency == 0 {
            return Err(config_error("emit_concurrency", "must be at least 1"));
        }
        let mut done = HashSet::new();
        let receipts = match &config.receipts_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                for line in text.lines() {
                    if let Some(seq) = line
                        .split(' ')
                        .next()
                        .filter(|_| line.split(' ').count() == 3)
                    {
                        done.insert(seq.to_owned());
                    }
                }
                let open = || -> std::io::Result<std::fs::File> {
                    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
                    // A SIGKILL can leave the last line torn; end it, so the next receipt
                    // starts a line of its own instead of gluing onto it.
                    if !text.is_empty() && !text.ends_with('\n') {
                        file.write_all(b"\n")?;
                    }
                    Ok(file)
                };
                Some(open().map_err(|e| {
                    config_error("receipts_file", format!("{}: {e}", path.display()))
                })?)
            }
        };
        Ok(Self {
            config,
            receipts: Mutex::new(receipts),
            done: Mutex::new(done),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        self: &Arc<Self>,
        host: &Host,
        prefix: &str,
        count: u64,
        subject: &str,
        severity: Severity,
        concurrency: usize,
        resume: bool,
    ) -> Emitted {
        let out = Arc::new(Mutex::new(Emitted::default()));
        let mut tasks = JoinSet::new();
        let mut pace = self
            .config
            .emit_rate_per_sec
            .filter(|_| resume)
            .map(|rate| {
                let mut i = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
        for seq in 0..count {
            let key = format!("{prefix}:{seq}");
            if resume
                && self
                    .done
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&key)
            {
                continue;
            }
            if let Some(pace) = pace.as_mut() {
                pace.tick().await;
            } else {
                while tasks.len() >= concurrency {
                    tasks.join_next().await;
                }
            }
            let mut alert = Alert::new(format!("{subject} {seq}"));
            alert.severity = severity;
            alert.body = format!("test alert {key}");
            alert.labels.insert("seq".into(), key.clone());
            alert.dedup_key = Some(key.clone());
            alert
                .labels
                .insert("submitted_us".into(), unix_micros().to_string());
            let (this, host, out) = (Arc::clone(self), host.clone(), Arc::clone(&out));
            tasks.spawn(async move {
                let result = host.submit(&alert).await;
                let mut o = out.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(r) => {
                        if r.duplicate {
                            o.duplicates += 1
                        } else {
                            o.accepted += 1
                        }
                        o.ids.push(r.alert_id);
                        this.record(&key, r.alert_id, r.duplicate);
                    }
                    Err(e) => {
                        o.refused += 1;
                        if o.errors.len() < 5 {
                            o.errors.push(format!("{}: {}", e.kind, e.message));
                        }
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let o = std::mem::take(&mut *out.lock().unwrap_or_else(PoisonError::into_inner));
        tracing::info!(
            prefix,
            accepted = o.accepted,
            duplicates = o.duplicates,
            refused = o.refused,
            "Emitted test alerts."
        );
        o
    }

    fn record(&self, key: &str, id: u64, duplicate: bool) {
        if let Some(f) = self
            .receipts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            // One write per line: `writeln!` writes piece by piece, and a kill between the
            // pieces would leave half a line for the next one to glue onto.
            let _ = f.write_all(format!("{key} {id} {duplicate}\n").as_bytes());
        }
        self.done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned());
    }

    async fn control(self: Arc<Self>, mut conn: TcpStream, host: Host) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&buf);
        let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let param = |k: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(|v| v.replace("%20", " ").replace('+', " "))
        };
        let (status, body) = match path {
            "/emit" => {
                let count = param("count").and_then(|v| v.parse().ok()).unwrap_or(1);
                let prefix = param("prefix").unwrap_or_else(|| "ctl".into());
                let subject = param("subject").unwrap_or_else(|| "Test alert".into());
                let severity = param("severity")
                    .and_then(|s| Severity::from_name(&s))
                    .unwrap_or(Severity::NORMAL);
                let concurrency = param("concurrency")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(64usize)
                    .max(1);
                let o = self
                    .emit(
                        &host,
                        &prefix,
                        count,
                        &subject,
                        severity,
                        concurrency,
                        false,
                    )
                    .await;
                ("200 OK", serde_json::to_string(&o).unwrap_or_default())
            }
            "/panic" => {
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                panic!("test source: panic on command");
            }
            _ => ("404 Not Found", "{}".to_owned()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
    }
}

impl Source for TestSource {
    async fn run(self: Arc<Self>, ctx: SourceContext) -> Result<(), PluginError> {
        tracing::info!(instance = %ctx.host.instance(), "Test source running.");
        let mut tasks = JoinSet::new();
        if let Some(ms) = self.config.panic_after_ms {
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                panic!("test source: scripted panic");
            });
        }
        if let Some(addr) = self.config.control_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| PluginError::transient(&e))?;
            let (this, host) = (Arc::clone(&self), ctx.host.clone());
            tasks.spawn(async move {
                loop {
                    if let Ok((conn, _)) = listener.accept().await {
                        let (this, host) = (Arc::clone(&this), host.clone());
                        // A panic here is the scripted one: it must fail the instance.
                        let job = tokio::spawn(this.control(conn, host));
                        if job.await.is_err_and(|e| e.is_panic()) {
                            panic!("test source: control task panicked");
                        }
                    }
                }
            });
        }
        if self.config.emit_count > 0 {
            let (this, host) = (Arc::clone(&self), ctx.host.clone());
            let c = &self.config;
            let (prefix, count, conc) = (c.emit_prefix.clone(), c.emit_count, c.emit_concurrency);
            tasks.spawn(async move {
                this.emit(
                    &host,
                    &prefix,
                    count,
                    "Test alert",
                    Severity::NORMAL,
                    conc,
                    true,
                )
                .await;
            });
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => Ok(()),
            Some(Err(e)) = tasks.join_next(), if !tasks.is_empty() => {
                if e.is_panic() { std::panic::resume_unwind(e.into_panic()) }
                Ok(())
            }
        }
    }

    fn health(&self) -> Health {
        Health::new(HealthState::OK, "")
    }
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// mimalloc, like the host (docs/writing-a-plugin.md §6: "Your allocator is your own").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

export_plugin! {
    name: "test-source",
    version: env!("CARGO_PKG_VERSION"),
    sources: { "test-source" => TestSource::new },
    sinks: {},
}
