//! Serving the router on a socket: accept loop with a cap on open connections, optional TLS,
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN) through hyper-util's auto builder,
//! deadlines against slow clients, and graceful stop.
//!
//! Slow and idle clients: a connection that has not started a request `header_read_timeout`
//! after it was accepted (TLS handshake included) is closed; on HTTP/1 hyper applies the same
//! deadline to every request head, so an idle keep-alive connection is closed after it too. The
//! body has its own deadline in the handler (408). On every protocol (HTTP/2 included, where a
//! client that answers PINGs would otherwise stay forever) a connection with no request in
//! flight for `idle_timeout` — requests refused with 401 do not count as activity — and any
//! connection older than `max_connection_age` is told to finish (HTTP/2 GOAWAY), and dropped
//! if it has not within `request_timeout` more. So nobody holds a `max_connections` slot for
//! long without sending alerts.
//!
//! Stop: on `shutdown` the listener is closed, every connection is told to finish the same way,
//! and `serve` returns once each has (every connection holds a slot of the cap until it ends).
//! The kit aborts what is left at the host's stop deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::CancellationToken;
use axum::{Router, extract::Request, http::StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Settings;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// HTTP/2 keep-alive ping interval and the time a ping may go unanswered.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is cancelled and in-flight requests are done.
pub async fn serve(
    listener: TcpListener,
    settings: &Settings,
    app: Router,
    shutdown: CancellationToken,
) {
    let cap = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(cap as usize));
    let tls = settings.tls.clone().map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let limits = Limits {
        first_request: settings.header_read_timeout,
        idle: settings.idle_timeout,
        max_age: settings.max_connection_age,
        grace: settings.request_timeout,
    };
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits,
            shutdown: shutdown.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let outcome = match tls {
                None => connection.run(stream).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.first_request, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => connection.run(stream).await,
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("TLS handshake timed out".to_owned()),
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(peer = %peer, error = %e, "Connection ended with an error.");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::debug!(
        connections = cap as usize - permits.available_permits(),
        "Stopping: finishing in-flight requests."
    );
    // Every connection holds a permit until it has ended.
    let _all = permits.acquire_many(cap).await;
}

/// How long a connection may live, and how.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Until the first request starts (after that, hyper's HTTP/1 header timeout applies).
    first_request: Duration,
    /// With no request in flight.
    idle: Duration,
    /// In all.
    max_age: Duration,
    /// To finish after being told to.
    grace: Duration,
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run<S>(self, stream: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let born = Instant::now();
        let activity = Arc::new(Activity::new(born));
        let seen = Arc::clone(&activity);
        let app = self.app;
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            let busy = Busy::begin(&seen);
            let response = app.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await;
                if let Ok(r) = &response {
                    busy.answered(r.status());
                }
                response
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        tokio::pin!(conn);
        let limits = self.limits;
        let first_request = tokio::time::sleep(limits.first_request);
        tokio::pin!(first_request);
        let mut waiting_for_first = true;
        let why = loop {
            tokio::select! {
                result = conn.as_mut() => return result.map_err(|e| e.to_string()),
                () = &mut first_request, if waiting_for_first => {
                    if !activity.started.load(Ordering::Relaxed) {
                        return Err("no request within the header read timeout".to_owned());
                    }
                    waiting_for_first = false;
                }
                () = self.shutdown.cancelled() => break "stopping",
                () = activity.idle(limits.idle) => break "idle timeout",
                () = tokio::time::sleep_until((born + limits.max_age).into()) => {
                    break "maximum connection age";
                }
            }
        };
        tracing::debug!(reason = why, "Telling a connection to finish.");
        conn.as_mut().graceful_shutdown();
        match tokio::time::timeout(limits.grace, conn).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("dropped: did not finish after the {why}")),
        }
    }
}

/// What a connection is doing: requests in flight, and when the last one ended.
struct Activity {
    born: Instant,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last counted request ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn new(born: Instant) -> Self {
        Self {
            born,
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long nothing has been in flight; `None` while a request is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        Some(Duration::from_millis(self.now_ms().saturating_sub(last)))
    }

    /// Returns once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            match self.idle_for() {
                Some(idle) if idle >= limit => return,
                Some(idle) => tokio::time::sleep(limit - idle).await,
                None => tokio::time::sleep(limit).await,
            }
        }
    }
}

/// One request in flight; when it ends, the connection's idle clock restarts — unless it was
/// refused for a missing or wrong token, which buys no time.
struct Busy {
    activity: Arc<Activity>,
    counts: bool,
}

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.started.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self {
            activity: Arc::clone(activity),
            counts: true,
        }
    }

    fn answered(mut self, status: StatusCode) {
        self.counts = status != StatusCode::UNAUTHORIZED;
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.counts {
            let now = self.activity.now_ms();
            self.activity.last_ms.fetch_max(now, Ordering::AcqRel);
        }
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Binds the listener, with a large backlog: Alertmanager fires every due group at once.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
