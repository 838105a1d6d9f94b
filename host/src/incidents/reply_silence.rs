//! `silence [N] 2h` (issue 16 §3): a person paged for an incident (or a responder) silences
//! alerts like the incident's first alert — its labels, or its source and subject — for that
//! long. The silence is committed before the answer; the incident itself is not changed (`ack`
//! stops its escalation). The others paged are told who silenced what until when.

use std::sync::Arc;

use alertbridge_plugin_api::kit::format::unix_ms_rfc3339;

use super::{Handled, InboundReply, Incident, Replies, ReplyError};
use crate::{
    incidents::IncidentError,
    silences::{SilenceError, like::SilenceLike, spec::MAX_AUTHOR_BYTES},
};

/// The most of the incident's title quoted in the silence's comment.
const TITLE_CHARS: usize = 200;

/// `text` without control characters, cut to at most `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

impl Replies {
    /// Has `silence 2h` replies create silences through `silencer` from now on.
    pub fn set_silencer(&self, silencer: Arc<dyn SilenceLike>) {
        let _ = self.silencer.set(silencer);
    }

    /// Silences alerts like `inc`'s first alert for `duration_ms`, on behalf of `who`.
    pub(super) async fn silence(
        &self,
        msg: &InboundReply,
        inc: &Incident,
        who: &str,
        duration_ms: i64,
    ) -> Result<Handled, ReplyError> {
        let id = inc.id;
        let Some(silencer) = self.silencer.get() else {
            return Ok(self.answer(msg, Some(id), "this bridge keeps no silences".into()));
        };
        let Some(&first) = inc.alert_ids.first() else {
            return Ok(self.answer(msg, Some(id), format!("{id} has no alert to silence")));
        };
        let title: String = inc.title.chars().take(TITLE_CHARS).collect();
        let comment = format!("from a reply to {id} ({})", bounded(&title, 1024));
        let author = match bounded(who, MAX_AUTHOR_BYTES) {
            a if a.trim().is_empty() => bounded(&msg.user, MAX_AUTHOR_BYTES),
            a => a,
        };
        let made = match silencer
            .silence_like(first, duration_ms, author, comment)
            .await
        {
            Ok(s) => s,
            Err(
                e @ (SilenceError::Invalid(_)
                | SilenceError::TooMany { .. }
                | SilenceError::TooManyPatterns { .. }),
            ) => {
                return Ok(self.answer(msg, Some(id), format!("not silenced: {e}")));
            }
            Err(e) => {
                // Not recorded: the sink offers the reply again.
                tracing::warn!(incident = id.0, error = %crate::error_chain(&e), "A silence from a reply could not be stored.");
                return Err(ReplyError(IncidentError::storage(e)));
            }
        };
        let what = made
            .matchers
            .compile()
            .map_or_else(|e| e.to_string(), |m| m.describe());
        let news = format!(
            "{who} silenced alerts like {id} until {} (silence {}: {what}); {id} itself stays {} — `ack` stops its escalation",
            unix_ms_rfc3339(made.ends_ms),
            made.id,
            inc.state.name(),
        );
        tracing::info!(incident = id.0, silence = made.id, user = %msg.user, "Silence from a reply.");
        Ok(self.news(msg, inc, news))
    }
}
