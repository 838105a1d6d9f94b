//! Replies and new conversations from users (docs/ucma-bridge-protocol.md §4.5–§4.6, §8): the
//! long poll of `/v1/inbound`, each message handed to the host (`inbound.message/1`) in cursor
//! order, and the acknowledgement to the bridge only after the host recorded it — so a crash
//! or restart before the ack offers the message again (the host dedups by conversation and id)
//! and nothing is lost.

use std::{future::Future, time::Duration};

pub use alertbridge_plugin_api::kit::calls::{CONVERSATION_SEND, INBOUND_MESSAGE};
use alertbridge_plugin_api::{
    ErrorKind, PluginError,
    kit::{Backoff, CancellationToken, Host, Inbound},
};
use tracing::{debug, info, warn};

use crate::{
    client::{BridgeClient, BridgeError},
    protocol::{InboundDoc, checked_inbound, clip},
};

/// Most messages asked for, and handled, per poll.
pub const POLL_LIMIT: usize = 50;
/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long before asking again a bridge that answered `404` (no inbound support; it may be
/// upgraded) or a host without incidents.
pub const RECHECK: Duration = Duration::from_secs(600);

/// What became of one message at the host.
enum Handed {
    /// Recorded (or refused for good, or invalid): acknowledge it.
    Done,
    /// Not recorded now: stop, acknowledge what was done, offer it again later.
    Later(PluginError),
    /// The host has no incidents.
    Unsupported,
}

/// The long-poll loop; returns when `shutdown` is cancelled.
pub async fn listen(
    client: &BridgeClient,
    host: &Host,
    wait: Duration,
    shutdown: &CancellationToken,
) {
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF).jitter(0.0);
    let mut failing = false;
    let mut told_not_supported = false;
    let mut told_no_host = false;
    loop {
        let started = tokio::time::Instant::now();
        let pause = match poll_once(client, host, wait, shutdown).await {
            Ok(true) => {
                if failing {
                    info!("Inbound messages from the bridge flow again.");
                    failing = false;
                }
                backoff.reset();
                Duration::ZERO
            }
            // Nothing usable. After an honest long poll, ask again at once; an answer that
            // came back early and empty (a bridge ignoring `wait_ms`) is not asked again in a
            // tight loop.
            Ok(false) if started.elapsed() >= wait / 2 => {
                backoff.reset();
                Duration::ZERO
            }
            Ok(false) => backoff.next(),
            Err(Stop::Shutdown) => return,
            Err(Stop::NotSupported(e)) => {
                if !told_not_supported {
                    info!(error = %e, recheck_s = RECHECK.as_secs(), "The bridge does not relay inbound messages: replies from OCS users are off (delivery is not affected).");
                    told_not_supported = true;
                }
                RECHECK
            }
            Err(Stop::NoHost) => {
                if !told_no_host {
                    warn!(
                        recheck_s = RECHECK.as_secs(),
                        "The host takes no inbound messages (no incidents): replies stay at the bridge, unacknowledged."
                    );
                    told_no_host = true;
                }
                RECHECK
            }
            Err(Stop::Failed(why)) => {
                let now = backoff.next();
                if failing {
                    debug!(error = %why, retry_ms = now.as_millis() as u64, "Inbound poll failed again.");
                } else {
                    warn!(error = %why, retry_ms = now.as_millis() as u64, "Inbound poll failed; backing off.");
                    failing = true;
                }
                now
            }
        };
        if !pause.is_zero() && !sleep(pause, shutdown).await {
            return;
        }
    }
}

/// Why a poll did not go through.
enum Stop {
    Shutdown,
    NotSupported(BridgeError),
    NoHost,
    Failed(String),
}

/// Sleeps `d` unless `shutdown` comes first; false if it did.
async fn sleep(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Races `f` against `shutdown`.
async fn or_stop<T>(f: impl Future<Output = T>, shutdown: &CancellationToken) -> Result<T, Stop> {
    tokio::select! {
        () = shutdown.cancelled() => Err(Stop::Shutdown),
        v = f => Ok(v),
    }
}

/// One poll: fetch, hand each message over in cursor order, acknowledge what the host took.
/// `Ok(true)` when messages were handled (poll again at once), `Ok(false)` when nothing usable
/// came.
async fn poll_once(
    client: &BridgeClient,
    host: &Host,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<bool, Stop> {
    let answer = match or_stop(client.inbound(wait, POLL_LIMIT), shutdown).await? {
        Ok(answer) => answer,
        Err(e @ BridgeError::Refused { status: 404, .. }) => return Err(Stop::NotSupported(e)),
        Err(e) => return Err(Stop::Failed(alertbridge_plugin_api::error_chain(&e))),
    };
    if answer.dropped > 0 {
        debug!(
            dropped = answer.dropped,
            "The bridge reports inbound messages it dropped (buffer full)."
        );
    }
    // Each entry on its own: a malformed one is skipped (and acknowledged when it has a
    // cursor), the others still go through. A bridge that sends more than asked gets the
    // first POLL_LIMIT by cursor; the rest come again.
    let mut entries: Vec<(u64, Result<InboundDoc, String>)> = answer
        .messages
        .into_iter()
        .filter_map(|v| {
            let cursor = v.get("cursor").and_then(serde_json::Value::as_u64)?;
            let doc = serde_json::from_value::<InboundDoc>(v)
                .map_err(|e| format!("malformed message: {e}"))
                .and_then(|d| checked_inbound(&d));
            Some((cursor, doc))
        })
        .collect();
    entries.sort_by_key(|(c, _)| *c);
    entries.dedup_by_key(|(c, _)| *c);
    entries.truncate(POLL_LIMIT);
    let mut done: Option<u64> = None;
    let mut outcome = Ok(!entries.is_empty());
    for (cursor, entry) in entries {
        let handed = match entry {
            Ok(doc) => or_stop(hand(host, &doc), shutdown).await?,
            Err(why) => {
                warn!(cursor, reason = %why, "Dropped an unusable inbound message from the bridge.");
                Handed::Done
            }
        };
        match handed {
            Handed::Done => done = Some(cursor),
            Handed::Later(e) => {
                outcome = Err(Stop::Failed(format!("the host did not take a reply: {e}")));
                break;
            }
            Handed::Unsupported => {
                outcome = Err(Stop::NoHost);
                break;
            }
        }
    }
    if let Some(up_to) = done {
        match or_stop(client.ack(up_to), shutdown).await? {
            Ok(_) => debug!(up_to, "Acknowledged inbound messages."),
            // Not acknowledged: they come again and the host dedups them.
            Err(e) => {
                return Err(Stop::Failed(format!(
                    "acknowledging up to {up_to}: {}",
                    alertbridge_plugin_api::error_chain(&e)
                )));
            }
        }
    }
    outcome
}

/// Hands one checked message to the host.
async fn hand(host: &Host, doc: &InboundDoc) -> Handed {
    let message = Inbound {
        user: doc.from.clone(),
        text: doc.text.clone(),
        conversation: doc.conversation.clone(),
        name: doc.name.clone(),
        id: Some(doc.id.clone()),
    };
    match host.inbound(&message).await {
        Ok(true) => {
            info!(from = %doc.from, conversation = %clip(&doc.conversation), id = %doc.id, "Handed a reply to the host.");
            Handed::Done
        }
        Ok(false) => Handed::Unsupported,
        Err(e) if matches!(e.kind, ErrorKind::PERMANENT | ErrorKind::CONFIG) => {
            warn!(from = %doc.from, id = %doc.id, error = %e, "The host refused a reply for good; dropping it.");
            Handed::Done
        }
        Err(e) => Handed::Later(e),
    }
}
