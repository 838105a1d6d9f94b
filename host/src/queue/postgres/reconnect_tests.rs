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
        // Up once it takes connections: its thread binds the port again, a moment later (a
        // queue opened before that met "connection refused").
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the proxy listens");
            std::thread::sleep(Duration::from_millis(10));
        }
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

/// A session of the test's own that holds `LOCK TABLE ab_alerts IN ACCESS EXCLUSIVE MODE`
/// (as a migration or an operator's maintenance does) until dropped.
struct TableLock {
    release: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TableLock {
    fn take(url: &Secret) -> Self {
        let url = Secret::new(url.expose());
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("lock runtime")
                .block_on(async move {
                    let mut c = connect(&url).await.expect("connect");
                    let txn = c.transaction().await.expect("begin");
                    txn.batch_execute("LOCK TABLE ab_alerts IN ACCESS EXCLUSIVE MODE")
                        .await
                        .expect("lock");
                    locked_tx.send(()).expect("tell");
                    let _ = released.await;
                    txn.rollback().await.expect("release");
                });
        });
        locked_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the table is locked");
        Self {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Issue 15: the reconnect waited without bound once connected. A transaction cut after its
/// insert leaves alerts whose commit is uncertain; the reconnect looks them up — and while that
/// query waited (here on a table lock), the writer tried nothing more and said nothing: the
/// queue answered the old fault's reason for as long as it took, health too. Now each
/// reconnect attempt as a whole is bounded: it ends, says why ("did not answer") and is tried
/// again with backoff, and the queue is back once the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_that_hangs_once_connected_ends_says_why_and_is_tried_again() {
    let Some(db) = TestDb::new() else { return };
    let metrics = Arc::new(Metrics::default());
    let q = PgQueue::open(
        PgSettings {
            url: Secret::new(db.url.expose()),
            node: "a".into(),
            lease: Duration::from_secs(10),
        },
        &QueueOptions::default(),
        Arc::clone(&metrics),
        Box::new(drop),
    )
    .expect("the queue opens");
    q.enqueue("s", Alert::new("before")).await.expect("up");
    let lock = TableLock::take(&db.url);
    // The next enqueue's insert waits on the lock; its session is cut there: the transaction
    // fails after its insert was sent (uncertain).
    let pending = q.enqueue("s", Alert::new("cut"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cut = db.one(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = '{}' AND query LIKE 'INSERT INTO ab_alerts%'",
            db.name
        ));
        if cut != "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the insert never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(pending.await, Err(QueueError::Unavailable { .. })));
    let first = metrics.queue_fault().expect("down");
    // The reconnect connects, then waits on the lock. Each attempt ends in time, says why,
    // and the next one comes: the reason changes from the cut session's.
    let deadline = Instant::now() + BACK_WITHIN;
    let said = loop {
        match metrics.queue_fault() {
            Some(r) if r != first => break r,
            Some(_) => {}
            None => panic!("up while the table is locked?"),
        }
        assert!(
            Instant::now() < deadline,
            "no reconnect attempt ended while the database did not answer: the queue still says \
             {first:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(said.contains("did not answer"), "{said}");
    drop(lock);
    let back = enqueue_until_taken(&q, BACK_WITHIN).await;
    assert!(back.is_ok(), "{back:?}");
    assert!(metrics.queue_fault().is_none());
}
