//! Serving the router on a socket: accept loop with a cap on open connections, optional TLS,
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN) through hyper-util's auto builder,
//! deadlines against slow clients, and graceful stop.
//!
//! Slow and idle clients: a connection that has not sent a whole request head
//! `header_read_timeout` after it was accepted (TLS handshake included) is closed; on HTTP/1 the
//! same deadline runs again from the end of every request, so an idle keep-alive connection or
//! a slow next head is cut off too. The body has its own deadline in the handler (408). On every
//! protocol (HTTP/2 included, where a client that answers PINGs would otherwise stay forever) a
//! connection with no request in flight for `idle_timeout` — requests refused with 401 do not
//! count as activity — and any connection older than `max_connection_age` is told to finish
//! (HTTP/2 GOAWAY), and dropped if it has not within `request_timeout` more. So nobody holds a
//! `max_connections` slot for long without sending alerts.
//!
//! All of these deadlines are one timer per connection, a watchdog that is moved only when it
//! fires: requests just note when they start and end (atomic counters), none arms a timer.
//!
//! Stop: on `shutdown` the listener is closed, every connection is told to finish the same way,
//! and `serve` returns once each has (every connection holds a slot of the cap until it ends).
//! The kit aborts what is left at the host's stop deadline.

use std::{
    future::Future as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use alertbridge_plugin_api::kit::CancellationToken;
use futures_util::task::AtomicWaker;
use hyper::{Request, StatusCode, Version, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_rustls::TlsAcceptor;

use crate::{config::Settings, routes::Api};

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// HTTP/2 keep-alive ping interval and the time a ping may go unanswered.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` is cancelled and in-flight requests are done.
pub async fn serve(
    listener: TcpListener,
    settings: &Settings,
    app: Api,
    shutdown: CancellationToken,
) {
    let cap = u32::try_from(settings.max_connections).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(cap as usize));
    let tls = settings.tls.clone().map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head deadline is the connection's watchdog's (`Activity::check`), not a timer that
    // hyper would arm for every request.
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let limits = Limits {
        head: settings.header_read_timeout,
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
                    match tokio::time::timeout(limits.head, acceptor.accept(stream)).await {
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
    /// For a whole request head: after the accept, and on HTTP/1 after every request.
    head: Duration,
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
    app: Api,
    limits: Limits,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run<S>(self, stream: S) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::new(Instant::now()));
        let seen = Arc::clone(&activity);
        let app = self.app;
        let service = service_fn(move |request: Request<Incoming>| {
            let busy = Busy::begin(&seen, request.version());
            let app = app.clone();
            async move {
                let response = app.call(request).await;
                busy.answered(response.status());
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::pin!(conn);
        let limits = self.limits;
        let watchdog = tokio::time::sleep(limits.head.min(limits.idle).min(limits.max_age));
        tokio::pin!(watchdog);
        let stop = self.shutdown.cancelled();
        tokio::pin!(stop);
        // The connection is polled at every wake-up of the task; the watchdog and the stop
        // signal only when one of them woke it (and on the first poll, to register).
        let side = Arc::new(SideWake::default());
        let side_waker = Waker::from(Arc::clone(&side));
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Err(result.map_err(|e| e.to_string())));
            }
            side.task.register(cx.waker());
            if !side.woken.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            let mut side_cx = Context::from_waker(&side_waker);
            if stop.as_mut().poll(&mut side_cx).is_ready() {
                return Poll::Ready(Ok("stopping"));
            }
            while watchdog.as_mut().poll(&mut side_cx).is_ready() {
                match activity.check(&limits) {
                    Verdict::Until(deadline) => watchdog.as_mut().reset(deadline.into()),
                    Verdict::Drop(why) => return Poll::Ready(Err(Err(why.to_owned()))),
                    Verdict::Finish(why) => return Poll::Ready(Ok(why)),
                }
            }
            Poll::Pending
        })
        .await;
        let why = match ended {
            Ok(why) => why,
            Err(result) => return result,
        };
        tracing::debug!(reason = why, "Telling a connection to finish.");
        conn.as_mut().graceful_shutdown();
        match tokio::time::timeout(limits.grace, conn).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("dropped: did not finish after the {why}")),
        }
    }
}

/// Wakes a connection's task for its watchdog or stop signal, and says so.
struct SideWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for SideWake {
    fn default() -> Self {
        Self {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What the watchdog decides when it fires.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing is due: look again then.
    Until(Instant),
    /// Close at once (a client that does not send its request head).
    Drop(&'static str),
    /// Tell the connection to finish.
    Finish(&'static str),
}

/// What a connection is doing: requests in flight, and when the last one ended.
struct Activity {
    born: Instant,
    /// A request has come over HTTP/2: no head deadline between requests (hyper's HTTP/2 has
    /// its own keep-alive pings, and the idle deadline still applies).
    h2: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request ended, whatever its answer: the next
    /// head is due `Limits::head` later.
    ended_ms: AtomicU64,
    /// Milliseconds after `born` when the last counted request ended (401s do not count).
    last_ms: AtomicU64,
}

impl Activity {
    fn new(born: Instant) -> Self {
        Self {
            born,
            h2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            ended_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    /// The watchdog's look at the connection: what is overdue, or when to look again.
    fn check(&self, limits: &Limits) -> Verdict {
        let now = Instant::now();
        let max_age = self.born + limits.max_age;
        if now >= max_age {
            return Verdict::Finish("maximum connection age");
        }
        let mut next = max_age;
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Requests have their own deadlines; the head and idle clocks start when they end.
            next = next.min(now + limits.head.min(limits.idle));
        } else {
            if !self.h2.load(Ordering::Relaxed) {
                let due = self.at(self.ended_ms.load(Ordering::Acquire)) + limits.head;
                if now >= due {
                    return Verdict::Drop("no request head within the header read timeout");
                }
                next = next.min(due);
            }
            let due = self.at(self.last_ms.load(Ordering::Acquire)) + limits.idle;
            if now >= due {
                return Verdict::Finish("idle timeout");
            }
            next = next.min(due);
        }
        Verdict::Until(next)
    }
}

/// One request in flight; when it ends, the connection's head clock restarts, and so does its
/// idle clock — unless it was refused for a missing or wrong token, which buys no time.
struct Busy {
    activity: Arc<Activity>,
    counts: bool,
}

impl Busy {
    fn begin(activity: &Arc<Activity>, version: Version) -> Self {
        if version == Version::HTTP_2 {
            activity.h2.store(true, Ordering::Relaxed);
        }
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
        let now = self.activity.now_ms();
        self.activity.ended_ms.fetch_max(now, Ordering::AcqRel);
        if self.counts {
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
