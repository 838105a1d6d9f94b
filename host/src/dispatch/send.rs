//! Sending: the deliver calls of one round for one sink — the message (marked when it is a
//! repeat after a restart), the sink's fair slots and message rate, and what the sink's answer
//! says about each recipient. A job owns its data, so a round records one sink's outcomes while
//! another sink's call is still out.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{
    ErrorKind, HTML_BODY_ATTRIBUTE, Message, PluginError, REPEAT_ATTRIBUTE, REPEAT_MARK,
    RecipientResult,
};

use super::{Dispatcher, Finding, Plan, fair::FairSlots, port::SinkPort, prepare::Send};
use crate::{
    config::DeliverySettings,
    model::StoredAlert,
    template::{Context, Templates},
};

impl Dispatcher {
    fn limit(&self, sink: &str, permits: usize) -> Arc<FairSlots> {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(limit) = limits.get(sink) {
            return Arc::clone(limit);
        }
        let limit = FairSlots::new(permits);
        limits.insert(sink.to_owned(), Arc::clone(&limit));
        limit
    }

    /// The calls that deliver `send` (its `sending` marks recorded): one message per route
    /// (each route may have its own template), two when some of the recipients get it again
    /// after an uncertain send (that one marked as a repeat). Owned, so the calls run while the
    /// round records other sinks' outcomes; the text is rendered when the call is made. The
    /// templates' context is only made when a template applies to one of the calls (`plan`'s):
    /// without one, a message is the alert's own subject and text.
    pub(super) fn job(plan: &Plan, alert: &StoredAlert, send: Send) -> Job {
        let mut calls: Vec<Call> = Vec::new();
        for &i in &send.idx {
            let r = &alert.recipients[i];
            match calls
                .iter_mut()
                .find(|c| c.route == r.route && c.marked == r.repeat)
            {
                Some(call) => call.idx.push(i),
                None => calls.push(Call {
                    idx: vec![i],
                    route: r.route.clone(),
                    marked: r.repeat,
                    message: Message::default(),
                }),
            }
        }
        for call in &mut calls {
            call.message = message(alert, &call.idx);
        }
        let templates = &plan.router.templates;
        let context = calls
            .iter()
            .any(|c| templates.applies(&c.route, &send.sink).is_some())
            .then(|| Context::alert(alert));
        Job {
            sink: send.sink,
            port: send.port,
            context,
            calls,
        }
    }

    /// Makes `job`'s calls one after the other; what was found about each recipient.
    pub(super) async fn run_job(
        &self,
        settings: &DeliverySettings,
        job: Job,
    ) -> Vec<(usize, Finding)> {
        let plan = self.plan();
        let mut findings = Vec::new();
        for mut call in job.calls {
            // A template put in force by a reload since the job was made applies from the
            // next alert on.
            if let Some(context) = &job.context {
                render(
                    &plan.router.templates,
                    &call.route,
                    &job.sink,
                    context,
                    &mut call.message,
                );
            }
            if call.marked {
                mark_repeat(&mut call.message);
            }
            findings.extend(
                self.deliver(
                    settings,
                    &job.sink,
                    job.port.as_ref(),
                    call.idx,
                    &call.message,
                )
                .await,
            );
        }
        findings
    }

    /// One deliver call of `message` to `sink`; `idx` are its recipients' records, in the
    /// order of `message.recipients`.
    pub(super) async fn deliver(
        &self,
        settings: &DeliverySettings,
        sink: &str,
        port: &dyn SinkPort,
        idx: Vec<usize>,
        message: &Message,
    ) -> Vec<(usize, Finding)> {
        let _slot = self
            .limit(sink, settings.sink_concurrency)
            .acquire(&message.source)
            .await;
        if let Some(at) = self.pace(sink, settings.per_sink_per_second, self.clock.now_ms()) {
            tokio::time::sleep(Duration::from_millis(
                at.saturating_sub(self.clock.now_ms()).max(0) as u64,
            ))
            .await;
        }
        // The handle enforces the time-out and has a sink that panicked recreated.
        match port.deliver(message, settings.deliver_timeout).await {
            Err(e) => {
                tracing::debug!(alert = message.alert_id, sink, kind = %e.kind, error = %e.message, "Deliver call failed.");
                idx.iter()
                    .map(|&i| (i, Finding::CallError(e.clone())))
                    .collect()
            }
            Ok(list) => {
                let mut by_user: HashMap<String, RecipientResult> =
                    list.into_iter().map(|r| (r.user.clone(), r)).collect();
                idx.into_iter()
                    .zip(&message.recipients)
                    .map(|(i, user)| {
                        let finding = match by_user.remove(user) {
                            Some(r) => Finding::Result(r),
                            None => Finding::CallError(PluginError::new(
                                ErrorKind::TRANSIENT,
                                "the sink reported no outcome for this recipient",
                            )),
                        };
                        (i, finding)
                    })
                    .collect()
            }
        }
    }

    /// Reserves the next slot of `sink`'s message rate; returns when it is, if not now.
    fn pace(&self, sink: &str, per_second: u32, now: i64) -> Option<i64> {
        if per_second == 0 {
            return None;
        }
        let mut paced = self.paced.lock().unwrap_or_else(PoisonError::into_inner);
        reserve(paced.entry(sink.to_owned()).or_insert(now), per_second, now)
    }
}

/// The deliver calls for one sink's recipients in a round.
pub(super) struct Job {
    sink: String,
    port: Arc<dyn SinkPort>,
    /// What the templates render the messages from, when one applies.
    context: Option<Context>,
    calls: Vec<Call>,
}

/// One deliver call: its recipients (record indexes, in the message's order), their route,
/// whether they get it as a repeat, and the message before rendering and marking.
struct Call {
    idx: Vec<usize>,
    route: String,
    marked: bool,
    message: Message,
}

/// Puts the text of `route`'s template (or `sink`'s) into `message`: the plain text as the
/// body and, when a template made one, the HTML form as [`HTML_BODY_ATTRIBUTE`]. Without a template
/// the message keeps the alert's own subject and text.
pub(super) fn render(
    templates: &Templates,
    route: &str,
    sink: &str,
    ctx: &Context,
    message: &mut Message,
) {
    let rendered = templates.render(route, sink, ctx);
    message.subject = rendered.subject;
    message.body = rendered.text;
    if let Some(html) = rendered.html {
        message
            .attributes
            .insert(HTML_BODY_ATTRIBUTE.to_owned(), html);
    }
}

/// The message of `alert` to its recipients `idx`, before rendering.
fn message(alert: &StoredAlert, idx: &[usize]) -> Message {
    let recipients = &alert.recipients;
    Message {
        alert_id: alert.id,
        attempt: idx
            .iter()
            .map(|&i| recipients[i].attempts)
            .max()
            .unwrap_or(0)
            + 1,
        source: alert.source.clone(),
        subject: alert.alert.subject.clone(),
        body: alert.alert.body.clone(),
        severity: alert.alert.severity,
        labels: alert.alert.labels.clone(),
        recipients: idx.iter().map(|&i| recipients[i].user.clone()).collect(),
        attributes: [("alert_uid".to_owned(), alert.uid.clone())].into(),
    }
}

/// Marks a message that the recipients may already have: [`REPEAT_MARK`] before the subject
/// and before the text (sinks show one or both), and the attribute `repeat = after_restart`.
pub(super) fn mark_repeat(message: &mut Message) {
    message.subject = format!("{REPEAT_MARK} {}", message.subject);
    if !message.body.is_empty() {
        message.body = format!("{REPEAT_MARK} {}", message.body);
    }
    if let Some(html) = message.attributes.get_mut(HTML_BODY_ATTRIBUTE) {
        *html = format!("{REPEAT_MARK} {html}");
    }
    message
        .attributes
        .insert(REPEAT_ATTRIBUTE.to_owned(), "after_restart".to_owned());
}

/// Reserves the next slot at `per_second` (> 0) given when the next one is free; returns the
/// slot if it is later than `now`.
fn reserve(next: &mut i64, per_second: u32, now: i64) -> Option<i64> {
    let slot = (*next).max(now);
    *next = slot + (1000 / i64::from(per_second)).max(1);
    (slot > now).then_some(slot)
}

#[cfg(test)]
mod tests {
    use alertbridge_plugin_api::Message;

    use super::{mark_repeat, reserve};

    #[test]
    fn a_repeat_is_marked_in_subject_and_text_and_a_sink_can_take_the_mark_off() {
        let first = Message {
            subject: "Disk full".into(),
            body: "/var at 98%".into(),
            ..Message::default()
        };
        let mut repeat = first.clone();
        mark_repeat(&mut repeat);
        assert_eq!(repeat.subject, "(repeat after restart) Disk full");
        assert_eq!(repeat.body, "(repeat after restart) /var at 98%");
        assert!(repeat.is_repeat());
        repeat.unmark_repeat();
        assert_eq!(
            repeat, first,
            "an idempotent sink sends it as the first time"
        );

        let mut no_body = Message {
            subject: "Disk full".into(),
            ..Message::default()
        };
        mark_repeat(&mut no_body);
        assert_eq!(
            (no_body.subject.as_str(), no_body.body.as_str()),
            ("(repeat after restart) Disk full", "")
        );
    }

    #[test]
    fn the_sink_rate_spaces_messages_and_forgets_idle_time() {
        let mut next = 0;
        assert_eq!(
            reserve(&mut next, 4, 1_000),
            None,
            "the first message goes now"
        );
        assert_eq!(reserve(&mut next, 4, 1_000), Some(1_250));
        assert_eq!(reserve(&mut next, 4, 1_100), Some(1_500));
        assert_eq!(
            reserve(&mut next, 4, 9_000),
            None,
            "idle time is not saved up"
        );
        assert_eq!(next, 9_250);
    }
}
