//! The running sinks as the incidents' [`Speaker`]: a message said in a conversation goes out
//! through the sink instance's `conversation.send/1`.

use std::sync::Arc;

use alertbridge_plugin_api::{ErrorKind, PluginError};
use futures::future::BoxFuture;

use super::instances::Registry;
use crate::incidents::{
    reply::Say,
    reply_send::{SEND_TIMEOUT, Speaker},
};

/// The host's sinks as a [`Speaker`].
pub struct SinkSpeaker(pub Arc<Registry>);

impl Speaker for SinkSpeaker {
    fn say(&self, instance: &str, say: &Say) -> BoxFuture<'static, Result<String, PluginError>> {
        let handle = self.0.sink(instance).and_then(|slot| slot.sink());
        let say = say.clone();
        Box::pin(async move {
            let Some(handle) = handle else {
                return Err(PluginError::new(
                    ErrorKind::TRANSIENT,
                    "the sink is not running",
                ));
            };
            let conversation = say.conversation.as_deref().unwrap_or("");
            handle
                .send_in_conversation(conversation, &say.user, &say.text, SEND_TIMEOUT)
                .await
        })
    }
}
