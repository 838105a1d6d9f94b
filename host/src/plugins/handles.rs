//! Plain-Rust handles on running plugin instances: what the rest of the host calls instead of
//! the FFI tables. A handle converts to and from the FFI types, enforces the time-out it is
//! given, and has its instance recreated when a call panicked in the plugin.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use alertbridge_plugin_api::{
    ErrorKind, FfiMessage, Health, Message, PluginError, Presence, RecipientResult,
    abi::{SinkBox, SourceBox},
    abi_stable::std_types::{RResult, RString, RVec},
};

use futures::future::BoxFuture;

use crate::dispatch::SinkPort;

/// Told when a call into a sink panicked, with the sink's incarnation and the message; the
/// supervisor then recreates that incarnation (if it is still the running one).
pub(super) type OnPanic = Box<dyn Fn(&Weak<SinkBox>, &str) + Send + Sync>;

/// The error of a call that did not answer within `timeout` (the call is dropped).
fn no_answer(timeout: Duration) -> PluginError {
    PluginError::new(
        ErrorKind::TRANSIENT,
        format!("no answer within {} ms", timeout.as_millis()),
    )
}

/// One incarnation of a sink instance.
#[derive(Clone)]
pub struct SinkHandle {
    name: Arc<str>,
    sink: Arc<SinkBox>,
    /// Told when a call panicked.
    on_panic: Arc<OnPanic>,
}

impl SinkHandle {
    pub(super) fn new(name: &str, sink: Arc<SinkBox>, on_panic: OnPanic) -> Self {
        Self {
            name: name.into(),
            sink,
            on_panic: Arc::new(on_panic),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A call answered `e`: if the plugin panicked, this incarnation is recreated (a later
    /// incarnation is left alone).
    fn check(&self, e: PluginError) -> PluginError {
        if e.kind == ErrorKind::PANICKED {
            (self.on_panic)(&Arc::downgrade(&self.sink), &e.message);
        }
        e
    }

    /// The presence of `users`; users the sink could not tell about are left out. Waits at
    /// most `timeout`.
    pub async fn presence(
        &self,
        users: &[String],
        timeout: Duration,
    ) -> Result<Vec<Presence>, PluginError> {
        let ask: RVec<RString> = users.iter().map(|u| RString::from(u.as_str())).collect();
        match tokio::time::timeout(timeout, self.sink.presence(ask)).await {
            Err(_) => Err(no_answer(timeout)),
            Ok(RResult::RErr(e)) => Err(self.check(e.into())),
            Ok(RResult::ROk(list)) => Ok(list.iter().map(Presence::from).collect()),
        }
    }

    /// Sends `message`; one result per recipient the sink reports. Waits at most `timeout`.
    pub async fn deliver(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> Result<Vec<RecipientResult>, PluginError> {
        let call = self.sink.deliver(FfiMessage::from(message));
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(no_answer(timeout)),
            Ok(RResult::RErr(e)) => Err(self.check(e.into())),
            Ok(RResult::ROk(list)) => Ok(list.iter().map(RecipientResult::from).collect()),
        }
    }

    pub fn health(&self) -> Health {
        Health::from(&self.sink.health())
    }

    /// Says `text` to `user` in `conversation` (`conversation.send/1`; the sink starts a new
    /// conversation when that one is gone) and answers the conversation actually used. A sink
    /// without the capability answers `UNSUPPORTED`. Waits at most `timeout`.
    pub async fn send_in_conversation(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
        timeout: Duration,
    ) -> Result<String, PluginError> {
        use alertbridge_plugin_api::{abi_stable::std_types::Tuple2, kit::calls};
        let args: alertbridge_plugin_api::FfiPairs = [
            ("conversation", conversation),
            ("user", user),
            ("text", text),
        ]
        .into_iter()
        .map(|(k, v)| Tuple2(RString::from(k), RString::from(v)))
        .collect();
        let call = self.sink.call(calls::CONVERSATION_SEND.into(), args);
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(no_answer(timeout)),
            Ok(RResult::RErr(e)) => Err(self.check(e.into())),
            Ok(RResult::ROk(answer)) => Ok(answer
                .iter()
                .rev()
                .find(|Tuple2(k, _)| k.as_str() == "conversation")
                .map_or_else(|| conversation.to_owned(), |Tuple2(_, v)| v.to_string())),
        }
    }

    /// True if this handle is on incarnation `sink`.
    pub(super) fn is(&self, sink: &Weak<SinkBox>) -> bool {
        std::ptr::eq(Arc::as_ptr(&self.sink), sink.as_ptr())
    }
}

impl SinkPort for SinkHandle {
    fn name(&self) -> &str {
        &self.name
    }

    fn presence<'a>(
        &'a self,
        users: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Presence>, PluginError>> {
        Box::pin(SinkHandle::presence(self, users, timeout))
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<RecipientResult>, PluginError>> {
        Box::pin(SinkHandle::deliver(self, message, timeout))
    }
}

/// One incarnation of a source instance.
#[derive(Clone)]
pub struct SourceHandle {
    source: Arc<SourceBox>,
}

impl SourceHandle {
    pub(super) fn new(source: Arc<SourceBox>) -> Self {
        Self { source }
    }

    pub fn health(&self) -> Health {
        Health::from(&self.source.health())
    }
}

/// A live incarnation of either role, as the supervisor drives it.
#[derive(Clone)]
pub(super) enum Live {
    Source(SourceHandle),
    Sink(SinkHandle),
}

impl Live {
    pub(super) fn health(&self) -> Health {
        match self {
            Self::Source(s) => s.health(),
            Self::Sink(s) => s.health(),
        }
    }

    pub(super) fn start(&self) -> Result<(), PluginError> {
        let r = match self {
            Self::Source(s) => s.source.start(),
            Self::Sink(s) => s.sink.start(),
        };
        r.into_result().map_err(PluginError::from)
    }

    /// Stops the instance on a blocking thread, giving it `deadline`.
    pub(super) async fn stop(self, deadline: Duration) {
        let ms = deadline.as_millis() as u64;
        let job = tokio::task::spawn_blocking(move || match &self {
            Self::Source(s) => s.source.stop(ms),
            Self::Sink(s) => s.sink.stop(ms),
        });
        match tokio::time::timeout(deadline + Duration::from_secs(1), job).await {
            Ok(Ok(RResult::RErr(e))) => {
                tracing::warn!(error = %e.message, "Instance stop reported an error.")
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("Instance did not stop within its deadline."),
        }
    }
}
