//! The admin server's connections: a hard cap (well below the process's open-file limit, so
//! the sources always have descriptors), a timeout for each request's head and the idle time
//! between requests, and a watchdog closing connections on which nothing moves.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::Router;
use hyper::{body::Incoming, server::conn::http1, service::Service as _};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_util::sync::CancellationToken;

use crate::config::admin::{AdminSettings, fd_budget, nofile_soft_limit};

/// The connection cap in effect: the configured one, lowered to the file-descriptor budget.
pub fn connection_cap(settings: &AdminSettings) -> usize {
    settings
        .max_connections
        .min(fd_budget(nofile_soft_limit()))
        .max(1)
}

/// Accepts connections while a slot is free (the others wait in the kernel's backlog, holding
/// no descriptor of ours) and serves each until `shutdown`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    settings: &AdminSettings,
    shutdown: CancellationToken,
) {
    let cap = connection_cap(settings);
    if cap < settings.max_connections {
        tracing::warn!(
            admin_max_connections = settings.max_connections,
            max_connections = cap,
            nofile = nofile_soft_limit(),
            "Admin HTTP: fewer connections than configured, to keep seven eighths of the open-file limit for the sources and sinks."
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        max_connections = cap,
        read_timeout_ms = settings.read_timeout.as_millis() as u64,
        idle_timeout_ms = settings.idle_timeout.as_millis() as u64,
        "Admin HTTP listening."
    );
    let mut last_full_warning: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0
            && last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60))
        {
            last_full_warning = Some(Instant::now());
            tracing::warn!(
                max_connections = cap,
                "Admin HTTP: every connection slot is taken; new connections wait until one closes."
            );
        }
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(connection(
                    stream,
                    peer,
                    app.clone(),
                    settings.clone(),
                    permit,
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!(error = %e, "Admin HTTP: cannot accept a connection.");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// When the connection last moved a byte, and how many requests are being handled on it.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Counts a request as being handled until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.busy.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(a))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's address, as a request extension (for the log of refused requests).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    settings: AdminSettings,
    _permit: OwnedSemaphorePermit,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        busy: AtomicUsize::new(0),
    });
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let svc = {
        let activity = Arc::clone(&activity);
        let app = TowerToHyperService::new(app);
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(Peer(peer));
            let busy = Busy::new(&activity);
            let answer = app.call(req);
            async move {
                let r = answer.await;
                drop(busy);
                r
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.read_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let tick = (settings.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(tick);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "Admin HTTP connection ended.");
                }
                break;
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = watchdog.tick() => {
                if activity.busy.load(Ordering::Relaxed) == 0
                    && activity.idle_for() > settings.idle_timeout
                {
                    tracing::debug!("Admin HTTP: closing a connection on which nothing moved.");
                    break;
                }
            }
        }
    }
}

/// A socket that notes when it last moved a byte.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    async fn start(settings: AdminSettings) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/big", get(|| async { vec![b'x'; 32 << 20] }));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move { run(listener, app, &settings, s).await });
        (addr, stop)
    }

    /// Reads what comes until the peer closes (or `limit` passes); returns the bytes read.
    async fn drain(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn slots_are_capped_and_half_sent_requests_time_out() {
        let (addr, stop) = start(AdminSettings {
            max_connections: 2,
            read_timeout: Duration::from_millis(300),
            ..AdminSettings::default()
        })
        .await;
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n")
                .await
                .unwrap();
            slow.push(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = drain(&mut s, Duration::from_secs(5)).await;
        let waited = start.elapsed();
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        // It waited for a slot: until the slow ones' heads timed out.
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        for mut s in slow {
            // Closed by the server (EOF) within the timeout, nothing answered.
            let got = drain(&mut s, Duration::from_secs(2)).await;
            assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_idle_timeout() {
        let (addr, stop) = start(AdminSettings {
            idle_timeout: Duration::from_millis(300),
            ..AdminSettings::default()
        })
        .await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        // Reads nothing while the answer stalls in the socket buffers.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let got = drain(&mut s, Duration::from_secs(5)).await;
        assert!(
            got.len() < 32 << 20,
            "the whole answer came: {} bytes",
            got.len()
        );
        // A client that reads keeps its connection and gets it all.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = drain(&mut s, Duration::from_secs(10)).await;
        assert!(got.len() > 32 << 20, "{} bytes", got.len());
        stop.cancel();
    }
}
