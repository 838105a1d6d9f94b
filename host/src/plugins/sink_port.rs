//! The dispatcher's sink port ([`crate::dispatch::port`]) for today's sink slots: the FFI calls,
//! their time-outs and the panic → restart rule, behind plain Rust. Interim, until the
//! plain-Rust sink handle of this module replaces it.

use std::{sync::Arc, time::Duration};

use alertbridge_plugin_api::{
    ErrorKind, Message, PluginError, Presence, RecipientResult,
    abi::SinkBox,
    abi_stable::std_types::{RResult, RString, RVec},
};

use super::instances::{Registry, Slot};
use crate::dispatch::port::{BoxFuture, SinkLookup, SinkPort, Sinks};

/// One running incarnation of a sink slot.
struct SlotSink {
    slot: Arc<Slot>,
    sink: Arc<SinkBox>,
}

impl SlotSink {
    /// Waits up to `timeout` for `call`; a panic in the plugin (the kit's PANICKED error) has
    /// the instance recreated.
    async fn answer<T>(
        &self,
        what: &str,
        timeout: Duration,
        call: impl Future<Output = RResult<T, alertbridge_plugin_api::FfiError>>,
    ) -> Result<T, PluginError> {
        let answer = match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(PluginError::new(
                ErrorKind::TRANSIENT,
                format!("{what}: no answer within {} ms", timeout.as_millis()),
            )),
            Ok(RResult::RErr(e)) => Err(PluginError::from(e)),
            Ok(RResult::ROk(v)) => Ok(v),
        };
        if let Err(e) = &answer
            && e.kind == ErrorKind::PANICKED
        {
            self.slot.report_failure(&e.message);
        }
        answer
    }
}

impl SinkPort for SlotSink {
    fn name(&self) -> &str {
        &self.slot.config.name
    }

    fn presence<'a>(
        &'a self,
        users: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Presence>, PluginError>> {
        Box::pin(async move {
            let ask: RVec<RString> = users.iter().map(|u| RString::from(u.as_str())).collect();
            let list = self
                .answer("presence", timeout, self.sink.presence(ask))
                .await?;
            Ok(list.iter().map(Presence::from).collect())
        })
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<RecipientResult>, PluginError>> {
        Box::pin(async move {
            let call = self.sink.deliver(message.into());
            let list = self.answer("deliver", timeout, call).await?;
            Ok(list.iter().map(RecipientResult::from).collect())
        })
    }
}

impl Sinks for Registry {
    fn lookup<'a>(&'a self, name: &'a str, wait: Duration) -> BoxFuture<'a, SinkLookup> {
        Box::pin(async move {
            let Some(slot) = self.sink(name) else {
                return SinkLookup::Unknown;
            };
            match slot.sink_within(wait).await {
                Some(sink) => SinkLookup::Running(Arc::new(SlotSink { slot, sink })),
                None => SinkLookup::NotRunning,
            }
        })
    }
}
