//! Conversations kept open for replies: a page's conversation after its invitation succeeded,
//! and one a person started with the bot. Keyed by the conversation's href (the reference the
//! host answers into), with the messaging links the event channel last gave; bounded in count
//! (the least recently used is evicted) and in age (expired after `conversation_keep_secs`
//! without a message).

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

/// One kept conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptConversation {
    /// The person at the other end (`sip:` URI, lower-cased).
    pub user: String,
    /// The messaging modality's `sendMessage` link while Connected.
    pub send: Option<String>,
    /// Its `stopMessaging` link.
    pub stop: Option<String>,
    pub last_used: Instant,
}

/// The kept conversations of one application.
#[derive(Debug)]
pub struct Kept {
    map: HashMap<String, KeptConversation>,
    cap: usize,
}

/// A conversation that left the set and should be stopped: its href and `stopMessaging` link.
pub type Leaving = (String, Option<String>);

impl Kept {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Keeps `conversation` (or refreshes it), with links where known. Returns the conversation
    /// evicted to make room, if any.
    pub fn keep(
        &mut self,
        conversation: &str,
        user: &str,
        send: Option<String>,
        stop: Option<String>,
        now: Instant,
    ) -> Option<Leaving> {
        if let Some(c) = self.map.get_mut(conversation) {
            c.user = user.to_owned();
            c.send = send.or(c.send.take());
            c.stop = stop.or(c.stop.take());
            c.last_used = now;
            return None;
        }
        let evicted = if self.map.len() >= self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone());
            oldest.and_then(|k| self.map.remove(&k).map(|c| (k, c.stop)))
        } else {
            None
        };
        self.map.insert(
            conversation.to_owned(),
            KeptConversation {
                user: user.to_owned(),
                send,
                stop,
                last_used: now,
            },
        );
        evicted
    }

    /// The conversation, marked as used now.
    pub fn use_now(&mut self, conversation: &str, now: Instant) -> Option<KeptConversation> {
        let c = self.map.get_mut(conversation)?;
        c.last_used = now;
        Some(c.clone())
    }

    /// Takes new messaging links of a kept conversation; `disconnected` drops its send link
    /// (the modality ended: the next answer starts a new conversation).
    pub fn links(
        &mut self,
        conversation: &str,
        send: Option<&str>,
        stop: Option<&str>,
        disconnected: bool,
    ) {
        let Some(c) = self.map.get_mut(conversation) else {
            return;
        };
        if let Some(s) = send {
            c.send = Some(s.to_owned());
        }
        if let Some(s) = stop {
            c.stop = Some(s.to_owned());
        }
        if disconnected {
            c.send = None;
        }
    }

    /// Forgets a conversation (the server deleted it, or sending in it failed).
    pub fn forget(&mut self, conversation: &str) -> Option<KeptConversation> {
        self.map.remove(conversation)
    }

    /// Removes and returns the conversations unused for `keep` or longer.
    pub fn expired(&mut self, keep: Duration, now: Instant) -> Vec<Leaving> {
        let old: Vec<String> = self
            .map
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last_used) >= keep)
            .map(|(k, _)| k.clone())
            .collect();
        old.into_iter()
            .filter_map(|k| self.map.remove(&k).map(|c| (k, c.stop)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_count_and_age_and_links_follow_the_channel() {
        let t0 = Instant::now();
        let mut kept = Kept::new(2);
        assert_eq!(
            kept.keep("/c/1", "sip:a@x.com", None, Some("/c/1/stop".into()), t0),
            None
        );
        assert_eq!(
            kept.keep(
                "/c/2",
                "sip:b@x.com",
                None,
                None,
                t0 + Duration::from_secs(1)
            ),
            None
        );
        kept.use_now("/c/1", t0 + Duration::from_secs(2));
        // /c/2 is now the least recently used.
        let evicted = kept.keep(
            "/c/3",
            "sip:c@x.com",
            None,
            None,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(evicted, Some(("/c/2".into(), None)));
        assert_eq!(kept.len(), 2);
        kept.links("/c/1", Some("/c/1/send"), None, false);
        assert_eq!(
            kept.use_now("/c/1", t0 + Duration::from_secs(4))
                .unwrap()
                .send
                .as_deref(),
            Some("/c/1/send")
        );
        kept.links("/c/1", None, None, true);
        assert_eq!(
            kept.use_now("/c/1", t0 + Duration::from_secs(4))
                .unwrap()
                .send,
            None
        );
        let gone = kept.expired(Duration::from_secs(5), t0 + Duration::from_secs(8));
        assert_eq!(gone, vec![("/c/3".to_owned(), None)]);
        assert!(kept.forget("/c/1").is_some());
        assert_eq!(kept.len(), 0);
    }
}
