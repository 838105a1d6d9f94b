//! The accept loop: listens while the server is up, closes the socket while it is down (the
//! `down` fault) and listens again on the same address when it comes back.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, warn};

use super::{
    session,
    state::{RunState, Shared},
};

/// Binds `addr` with SO_REUSEADDR, so the port can be taken again after a `down`.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// Accepts connections until the server is stopped.
pub(super) async fn accept_loop(first: TcpListener, addr: SocketAddr, shared: Arc<Shared>) {
    let mut run = shared.run_state();
    let mut listener = Some(first);
    loop {
        let state = *run.borrow_and_update();
        match state {
            RunState::Stopped => {
                drop(listener.take());
                shared.set_listening(false);
                return;
            }
            RunState::Down => {
                if listener.take().is_some() {
                    shared.set_listening(false);
                    debug!(%addr, "POP3 test server is down.");
                }
                if run.changed().await.is_err() {
                    return;
                }
                continue;
            }
            RunState::Up => {}
        }
        let Some(current) = listener.as_ref() else {
            match bind(addr) {
                Ok(l) => {
                    debug!(%addr, "POP3 test server is up again.");
                    listener = Some(l);
                    shared.set_listening(true);
                }
                Err(e) => {
                    warn!(%addr, error = %e, "POP3 test server cannot listen again; retrying.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        tokio::select! {
            accepted = current.accept() => match accepted {
                Ok((stream, _)) => {
                    shared.count(|c| c.sessions += 1);
                    tokio::spawn(session::serve(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    warn!(%addr, error = %e, "POP3 test server accept failed.");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = run.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}
