//! The PostgreSQL queue's reconnect against a database that goes away and comes back the way
//! a real server does, driven through a TCP proxy the test controls ([`Proxy`]): refused
//! (nothing listens), stalled (connections accepted, never answered: a server coming up under
//! load) or up (forwarded to the test server). Every change of mode cuts every connection, as
//! a server restart does.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alertbridge_plugin_api::{Alert, kit::Secret};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

use super::{tests::TestDb, *};
use crate::queue::{Queue, QueueError, QueueOptions};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwarded to the real server.
    Up,
    /// Nothing listens: "connection refused".
    Refuse,
    /// Accepted and held without a byte either way.
    Stall,
}

/// A TCP proxy in front of the test server, on a thread and runtime of its own.
pub(crate) struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy (up) to `target` (`host:port`).
    pub(crate) fn start(target: String) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let (mode, rx) = watch::channel(Mode::Up);
        let stop = CancellationToken::new();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime")
                    .block_on(serve(port, target, rx, stop));
            }
        });
        Self {
            port,
            mode,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    port: u16,
    target: String,
    mut mode: watch::Receiver<Mode>,
    stop: CancellationToken,
) {
    loop {
        let now = *mode.borrow_and_update();
        // Every change cuts every connection of the mode before.
        let cut = stop.child_token();
        let listener = if now == Mode::Refuse {
            None
        } else {
            // The port was ours a moment ago: bound again as soon as it is free.
            let mut bound = None;
            for _ in 0..100 {
                match TcpListener::bind(("127.0.0.1", port)).await {
                    Ok(l) => {
                        bound = Some(l);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            Some(bound.expect("the proxy port binds again"))
        };
        loop {
            let accepted = async {
                match &listener {
                    Some(l) => l.accept().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                changed = mode.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                conn = accepted => {
                    let Some((conn, _)) = conn else { continue };
                    let cut = cut.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        match now {
                            Mode::Up => {
                                let Ok(mut server) = TcpStream::connect(&target).await else {
                                    return;
                                };
                                let mut conn = conn;
                                tokio::select! {
                                    () = cut.cancelled() => {}
                                    _ = tokio::io::copy_bidirectional(&mut conn, &mut server) => {}
                                }
                            }
                            Mode::Stall | Mode::Refuse => {
                                cut.cancelled().await;
                                drop(conn);
                            }
                        }
                    });
                }
            }
        }
        cut.cancel();
        drop(listener);
    }
}

/// `url` (`postgres://user:pw@host:port/db`) through the proxy: its `host:port` and the new URL.
fn through(url: &str, port: u16) -> (String, String) {
    let (head, rest) = url.split_once('@').expect("a URL with user@host");
    let (addr, tail) = rest.split_once('/').expect("a URL with a database");
    (addr.to_owned(), format!("{head}@127.0.0.1:{port}/{tail}"))
}

/// How long a queue may take to notice the database is back: the longest backoff step with
/// its jitter, one connection attempt, and slack for a loaded machine.
const BACK_WITHIN: Duration = Duration::from_secs(30);

fn open_through(db: &TestDb) -> (Proxy, PgQueue, Arc<Metrics>) {
    let (addr, _) = through(db.url.expose(), 0);
    let proxy = Proxy::start(addr);
    let (_, url) = through(db.url.expose(), proxy.port);
    let metrics = Arc::new(Metrics::default());
    let q = PgQueue::open(
        PgSettings {
            url: Secret::new(url),
            node: "a".into(),
            lease: Duration::from_secs(10),
        },
        &QueueOptions::default(),
        Arc::clone(&metrics),
        Box::new(drop),
    )
    .expect("the queue opens");
    (proxy, q, metrics)
}

/// Enqueues until one is taken (the queue is back) or `within` passed.
async fn enqueue_until_taken(q: &PgQueue, within: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + within;
    loop {
        match q.enqueue("s", Alert::new("after")).await {
            Ok(t) => return Ok(t.id),
            Err(QueueError::Unavailable { reason, .. }) if Instant::now() < deadline => {
                let _ = reason;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refused_then_stalled_while_coming_up_then_back_means_the_queue_is_back() {
    let Some(db) = TestDb::new() else { return };
    let (proxy, q, metrics) = open_through(&db);
    q.enqueue("s", Alert::new("before"))
        .await
        .expect("up at first");
    for round in 0..4 {
        proxy.set(Mode::Refuse);
        // Traffic meets the cut connection: down.
        let deadline = Instant::now() + BACK_WITHIN;
        while q.enqueue("s", Alert::new("during")).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the queue never went down"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metrics.queue_fault().is_some(), "round {round}");
        tokio::time::sleep(Duration::from_millis(300 * round)).await;
        // The server comes up slowly: connections are taken and not answered for a while.
        proxy.set(Mode::Stall);
        tokio::time::sleep(Duration::from_millis(700)).await;
        proxy.set(Mode::Up);
        let back = enqueue_until_taken(&q, BACK_WITHIN).await;
        assert!(
            back.is_ok(),
            "round {round}: the queue did not come back: {back:?}; health: {:?}",
            metrics.queue_fault()
        );
        assert!(metrics.queue_fault().is_none(), "round {round}");
    }
}
