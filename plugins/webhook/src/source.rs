//! The `webhook` source: built from its config by [`WebhookSource::new`], it binds `listen` in
//! `run` and serves the API until the host stops it.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use alertbridge_plugin_api::{
    Health, HealthState, PluginError,
    kit::{Setup, Source, SourceContext},
};

use crate::{
    config::{Settings, WebhookConfig},
    routes::{AppState, router},
    server,
};

/// A `webhook` instance.
#[derive(Debug)]
pub struct WebhookSource {
    settings: Settings,
    bound: OnceLock<SocketAddr>,
}

impl WebhookSource {
    /// Parses and checks the config (reading the tokens and TLS files); binds nothing.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let settings = setup.config::<WebhookConfig>()?.validate()?;
        Ok(Self {
            settings,
            bound: OnceLock::new(),
        })
    }

    /// The address the server listens on, once `run` has bound it (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }
}

/// The listen address cannot be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

impl Source for WebhookSource {
    /// One: each receipt is resolved by the queue's writer thread, and every extra worker of
    /// ours is one more thread for it (and the host's) to wake and switch to; on a 2-core
    /// machine one worker took about 13 % less CPU per request (`scripts/bench-webhook`).
    const WORKER_THREADS: usize = 1;

    async fn run(self: Arc<Self>, ctx: SourceContext) -> Result<(), PluginError> {
        let listen = self.settings.listen;
        let listener = server::bind(listen)
            .and_then(|l| Ok((l.local_addr()?, l)))
            .map_err(|source| {
                PluginError::transient(&BindError {
                    addr: listen,
                    source,
                })
            });
        let (addr, listener) = listener?;
        let _ = self.bound.set(addr);
        let scheme = if self.settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(listen = %addr, scheme, "Webhook listening.");
        let app = router(AppState::new(ctx.host.clone(), self.settings.clone()));
        server::serve(listener, &self.settings, app, ctx.shutdown).await;
        tracing::info!(listen = %addr, "Webhook stopped.");
        Ok(())
    }

    fn health(&self) -> Health {
        match self.local_addr() {
            Some(addr) => Health::new(HealthState::OK, format!("listening on {addr}")),
            None => Health::new(HealthState::STARTING, "binding"),
        }
    }
}
