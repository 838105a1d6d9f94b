//! A UCMA bridge simulator: the server side of `docs/ucma-bridge-protocol.md` on loopback, with
//! a control API and a status page, for the `ucma` sink's tests and the demo.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use alertbridge_testbed::ucma_sim::{Availability, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig::new("0123456789abcdef").user("sip:alice@contoso.com", Availability::Online)).await?;
//! println!("bridge at {}", sim.url());
//! # Ok(()) }
//! ```
//!
//! - `config.rs`: what it starts with; `wire.rs`: the JSON documents; `auth.rs`: bearer and HMAC.
//! - `state.rs`: users, presence, scripts, inboxes, faults, counters; `messages.rs`: sends and
//!   the idempotency store.
//! - `inbound.rs`: conversations kept open after a page, what users say, the inbound buffer.
//! - `api.rs`: the `/v1` endpoints; `checks.rs`: request validation and request-level errors; `control.rs`: `/control/...` and the page `/`.
//! - `conn.rs`: connections a handler can cut, for "lost response" faults.

mod api;
mod auth;
mod checks;
mod config;
mod conn;
mod control;
mod inbound;
mod messages;
mod state;
#[cfg(test)]
mod tests;
mod wire;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::oneshot};

pub use self::{
    auth::signature,
    config::{Limits, SimConfig, UsersFileError, parse_users},
    inbound::{Conversation, Line},
    state::{Counters, Fault, FaultAction, FaultTarget, HealthStatus, Outcome, ReceivedIm},
    wire::{Availability, InboundMessage},
};

/// Starts simulated bridges.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds `config.listen` and serves on the current tokio runtime until the handle is dropped.
    pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let body_limit = config.limits.max_body_bytes.saturating_add(1 << 20);
        let state = Arc::new(state::State::new(config));
        let app = api::router()
            .merge(control::router())
            .layer(axum::extract::DefaultBodyLimit::max(body_limit))
            .with_state(Arc::clone(&state));
        let (stop, stopped) = oneshot::channel::<()>();
        let service = app.into_make_service_with_connect_info::<conn::Conn>();
        tokio::spawn(async move {
            let serve = axum::serve(conn::CuttableListener(listener), service)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "UCMA simulator stopped serving.");
            }
        });
        Ok(SimHandle {
            addr,
            state,
            _stop: stop,
        })
    }
}

/// A running simulator. Dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<state::State>,
    _stop: oneshot::Sender<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the `endpoint` to configure the sink with.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets a user's presence, adding the user if unknown.
    pub fn set_presence(&self, uri: &str, availability: Availability) {
        self.state.set_presence(uri, availability);
    }

    /// Queues outcomes for a user's next calls.
    pub fn script(&self, uri: &str, outcomes: impl IntoIterator<Item = Outcome>) {
        self.state.script(uri, outcomes);
    }

    /// Every IM the user received, oldest first.
    pub fn received(&self, uri: &str) -> Vec<ReceivedIm> {
        self.state.received(uri)
    }

    pub fn counters(&self) -> Counters {
        self.state.counters()
    }

    pub fn set_health(&self, status: HealthStatus) {
        self.state.set_health(status);
    }

    /// Changes the advertised and enforced limits while running.
    pub fn set_limits(&self, limits: Limits) {
        self.state.set_limits(limits);
    }

    /// Injects a fault for the next `fault.count` matching requests.
    pub fn inject(&self, fault: Fault) {
        self.state.inject(fault);
    }

    /// `user` says `text` to the bot: in `conversation` (`None` if that one is gone), else in
    /// the user's latest open conversation, else in a new one (`new` forces a new one).
    pub fn user_says(
        &self,
        user: &str,
        text: &str,
        conversation: Option<&str>,
        new: bool,
    ) -> Option<InboundMessage> {
        self.state.user_says(user, text, None, conversation, new)
    }

    /// Every conversation with `user`, oldest first, with what each side said.
    pub fn conversations_of(&self, user: &str) -> Vec<Conversation> {
        self.state.conversations_of(user)
    }

    /// Ends a conversation, as a user closing the window does.
    pub fn end_conversation(&self, id: &str) -> bool {
        self.state.end_conversation(id)
    }

    /// Inbound messages not acknowledged yet, oldest first.
    pub fn pending_inbound(&self) -> Vec<InboundMessage> {
        self.state.pending_inbound()
    }

    /// Turns inbound support (§4.5–§4.8) on or off while running.
    pub fn set_inbound(&self, supported: bool) {
        self.state.set_inbound(supported);
    }
}
