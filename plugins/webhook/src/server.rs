//! Serving the router on a socket: accept loop with a cap on open connections, optional TLS,
//! HTTP/1.1 and HTTP/2 (h2c by prior knowledge, h2 by ALPN) through hyper-util's auto builder,
//! deadlines against slow clients, and graceful stop.
//!
//! Slow clients: a connection that has not started a request `header_read_timeout` after it was
//! accepted (TLS handshake included) is closed; on HTTP/1 hyper applies the same deadline to
//! every request head, so an idle keep-alive connection is closed after it too. The body has
//! its own deadline in the handler (408). Idle HTTP/2 connections are pinged and closed when the
//! peer stops answering.
//!
//! Stop: on `shutdown` the listener is closed, every connection is told to finish (HTTP/1 ends
//! after the response in progress, HTTP/2 sends GOAWAY), and `serve` returns once the in-flight
//! requests — including their wait for the host's receipt — are answered. The kit aborts what is
//! left at the host's stop deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use alertbridge_plugin_api::kit::CancellationToken;
use axum::{Router, extract::Request};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
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
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
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
    let first_request = settings.header_read_timeout;
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
            first_request,
        };
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let outcome = match tls {
                None => connection.run(stream, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(first_request, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection.run(stream, watcher).await,
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
        connections = graceful.count(),
        "Stopping: finishing in-flight requests."
    );
    graceful.shutdown().await;
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    first_request: Duration,
}

impl Connection {
    async fn run<S>(
        self,
        stream: S,
        watcher: hyper_util::server::graceful::Watcher,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&started);
        let app = self.app;
        let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let conn = watcher.watch(conn);
        tokio::pin!(conn);
        tokio::select! {
            result = &mut conn => return result.map_err(|e| e.to_string()),
            () = tokio::time::sleep(self.first_request) => {}
        }
        if !started.load(Ordering::Relaxed) {
            return Err("no request within the header read timeout".to_owned());
        }
        conn.await.map_err(|e| e.to_string())
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
