//! The running simulator: binds its listener(s), routes every path, and hands out a handle
//! with the control operations and `stop`.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    routing::{get, post},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{
    application, auth, autodiscover, batch, control, events, inbound, messaging, people,
    state::{Behaviour, ReceivedIm, Sim, SimConfig, SimOptions},
};

/// The simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Starts simulators.
#[derive(Debug)]
pub struct Simulator;

impl Simulator {
    /// Binds the listener(s) and serves until the handle is stopped or dropped.
    pub async fn start(config: SimConfig) -> Result<SimHandle, StartError> {
        Self::start_with(config, SimOptions::default()).await
    }

    /// [`Simulator::start`] with [`SimOptions`] (host names in links, HTTP redirects).
    pub async fn start_with(
        config: SimConfig,
        options: SimOptions,
    ) -> Result<SimHandle, StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let web = bind(config.listen).await?;
        let pool = match config.pool_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let web_addr = local(&web, config.listen);
        let pool_addr = pool
            .as_ref()
            .zip(config.pool_listen)
            .map(|(l, a)| local(l, a));
        let (stop_tx, stop_rx) = watch::channel(false);
        let sim = Arc::new(Sim::new(config, options, web_addr, pool_addr, stop_rx));
        let app = router(sim.clone());
        let mut tasks = vec![serve(web, app.clone(), stop_tx.subscribe())];
        if let Some(pool) = pool {
            tasks.push(serve(pool, app, stop_tx.subscribe()));
        }
        Ok(SimHandle {
            sim,
            addr: web_addr,
            pool_addr,
            stop: stop_tx,
            tasks,
        })
    }
}

fn local(listener: &TcpListener, fallback: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(fallback)
}

fn serve(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "UCWA simulator listener failed.");
        }
    })
}

/// Every route of the simulator.
fn router(sim: Arc<Sim>) -> Router {
    const APP: &str = "/ucwa/oauth/v1/applications/{app}";
    Router::new()
        .route("/", get(autodiscover::discover))
        .route(autodiscover::ROOT_PATH, get(autodiscover::root))
        .route(autodiscover::USER_PATH, get(autodiscover::user))
        .route(autodiscover::XFRAME_PATH, get(autodiscover::xframe))
        .route(auth::TOKEN_PATH, post(auth::token))
        .route(auth::GRANT_PATH, post(auth::grant))
        .route("/ucwa/oauth/v1/applications", post(application::create))
        .route(APP, get(application::get).delete(application::delete))
        .route(
            &format!("{APP}/me/makeMeAvailable"),
            post(application::make_me_available),
        )
        .route(
            &format!("{APP}/me/reportMyActivity"),
            post(application::report_my_activity),
        )
        .route(&format!("{APP}/events"), get(events::pget))
        .route(
            &format!("{APP}/people/{{user}}/presence"),
            get(people::presence),
        )
        .route(&format!("{APP}/batch"), post(batch::batch))
        .route(
            &format!("{APP}/communication/messagingInvitations"),
            post(messaging::start),
        )
        .route(
            &format!("{APP}/communication/messagingInvitations/{{inv}}"),
            get(messaging::invitation),
        )
        .route(
            &format!("{APP}/communication/messagingInvitations/{{inv}}/accept"),
            post(inbound::accept),
        )
        .route(
            &format!("{APP}/communication/conversations/{{conv}}/messaging/messages"),
            post(messaging::send),
        )
        .route(
            &format!("{APP}/communication/conversations/{{conv}}/messaging/terminate"),
            post(messaging::stop),
        )
        .route(
            "/control/users/{user}/availability",
            post(control::put_availability),
        )
        .route(
            "/control/users/{user}/behaviour",
            post(control::put_behaviour),
        )
        .route("/control/users/{user}/messages", get(control::get_messages))
        .route("/control/users/{user}/reply", post(inbound::post_reply))
        .route(
            "/control/users/{user}/reply-form",
            post(inbound::post_reply_form),
        )
        .route("/control/messages", get(control::get_all_messages))
        .route("/control/tokens/expire", post(control::post_expire))
        .route("/control/throttle", post(control::post_throttle))
        .route("/control/stats", get(control::get_stats))
        .with_state(sim)
}

/// A running simulator. Dropping it stops the listeners.
#[derive(Debug)]
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    pool_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// The web listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pool listener's address, when there is a separate one.
    pub fn pool_addr(&self) -> Option<SocketAddr> {
        self.pool_addr
    }

    /// The autodiscover URL a client starts from: `http://ADDR` (or `http://NAME:PORT` with
    /// [`SimOptions::web_host`]).
    pub fn discover_url(&self) -> String {
        self.sim.web_base.clone()
    }

    pub fn set_availability(&self, user: &str, availability: &str) -> bool {
        control::set_availability(&self.sim, user, availability)
    }

    pub fn set_behaviour(&self, user: &str, behaviour: Behaviour) -> bool {
        control::set_behaviour(&self.sim, user, behaviour)
    }

    /// `user` says `reply` to the bot: in their conversation with it, or by starting one.
    pub fn reply(
        &self,
        user: &str,
        reply: &inbound::Reply,
    ) -> Result<inbound::Replied, inbound::ReplyError> {
        inbound::reply(&self.sim, user, reply)
    }

    /// `user` says `text` to the bot in their newest Connected conversation with it, or by
    /// starting one.
    pub fn say(&self, user: &str, text: &str) -> Result<inbound::Replied, inbound::ReplyError> {
        self.reply(
            user,
            &inbound::Reply {
                text: text.to_owned(),
                ..inbound::Reply::default()
            },
        )
    }

    /// Ends a conversation from the other side (the person closed the window): the bot sees
    /// messaging Disconnected and the conversation deleted. `false` if there is none.
    pub fn hang_up(&self, conversation: &str) -> bool {
        control::hang_up(&self.sim, conversation)
    }

    pub fn received(&self, user: &str) -> Vec<ReceivedIm> {
        control::received(&self.sim, user)
    }

    pub fn all_received(&self) -> BTreeMap<String, Vec<ReceivedIm>> {
        control::all_received(&self.sim)
    }

    /// The server-relative paths of the live applications.
    pub fn applications(&self) -> Vec<String> {
        self.sim
            .lock()
            .apps
            .keys()
            .map(|id| super::application::app_base(id))
            .collect()
    }

    /// The total number of IMs received by all users.
    pub fn received_count(&self) -> usize {
        self.sim
            .lock()
            .users
            .values()
            .map(|u| u.received.len())
            .sum()
    }

    pub fn expire_tokens(&self) {
        control::expire_tokens(&self.sim)
    }

    pub fn throttle(&self, count: u32, retry_after_secs: Option<u64>) {
        control::throttle(&self.sim, count, retry_after_secs)
    }

    pub fn stats(&self) -> control::Stats {
        control::stats(&self.sim)
    }

    /// Stops the listeners (parked P-GETs are released with 503) and waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
