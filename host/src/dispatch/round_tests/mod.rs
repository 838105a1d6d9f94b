//! Unit tests of the dispatcher's rounds: a real [`Dispatcher`] driven through fake sinks
//! ([`fake`]) and an in-memory queue ([`memq`]), on tokio's paused clock, so retries, holds and
//! rate limits run in virtual time, deterministically and at once.
//!
//! The bed here: a routing config (real TOML through [`Config::parse`]), the sinks `lync` and
//! `pager`, the sources `mail` and `hook`; alerts are accepted as the ingest path hands them over
//! (stored, then sent to the dispatcher), and a test waits for their outcomes in the queue.

mod fake;
mod memq;

mod crash;
mod delivery;
mod digest;
mod handover;
mod offline;
mod order;

use std::{path::Path, sync::Arc, time::Duration};

use alertbridge_plugin_api::Alert;
use tokio::{sync::mpsc, task::JoinHandle};

use self::{fake::FakeSinks, memq::MemQueue};
use super::{Depth, Dispatcher, Plan, clock::Clock};
use crate::{
    config::Config,
    metrics::Metrics,
    model::{Outcome, RecipientRecord, StoredAlert},
    queue::Queue,
};

/// Unix ms at which every test's clock starts.
const T0: i64 = 1_800_000_000_000;

/// How long (virtual time) a test waits for an alert to finish before failing.
const SETTLE_LIMIT: Duration = Duration::from_secs(6 * 3600);

/// The config every test starts from; `delivery` and `routes` are appended.
fn config(delivery: &str, routes: &str) -> Plan {
    let text = format!(
        r#"
[host]
data_dir = "/nonexistent/alertbridge-test"

[[source]]
name = "mail"
plugin = "pop3"
[[source]]
name = "hook"
plugin = "webhook"

[[sink]]
name = "lync"
plugin = "ucwa"
[[sink]]
name = "pager"
plugin = "ucma"

[groups]
ops = ["sip:alice@x", "sip:bob@x"]
oncall = ["sip:carol@x"]

[delivery]
{delivery}

{routes}
"#
    );
    let c = Config::parse(Path::new("test.toml"), &text)
        .unwrap_or_else(|e| panic!("test config does not check: {e:?}"));
    Plan {
        router: c.router,
        settings: c.delivery,
        escalations: c.route_escalations,
    }
}

/// A running dispatcher with its fakes.
struct Bed {
    dispatcher: Arc<Dispatcher>,
    queue: Arc<MemQueue>,
    sinks: Arc<FakeSinks>,
    metrics: Arc<Metrics>,
    depth: Arc<Depth>,
    clock: Clock,
    accepted: Option<mpsc::UnboundedSender<StoredAlert>>,
    run: JoinHandle<()>,
}

impl Bed {
    /// A fresh queue, sinks `lync` and `pager` running and reporting everyone available.
    fn start(plan: Plan) -> Self {
        let clock = Clock::tokio(T0);
        let queue = Arc::new(MemQueue::default());
        let sinks = FakeSinks::new(clock, Arc::clone(&queue), &["lync", "pager"]);
        Self::resume(plan, queue, sinks, clock)
    }

    /// A dispatcher started on `queue` as a host starts after a restart: with its unfinished
    /// alerts.
    fn resume(plan: Plan, queue: Arc<MemQueue>, sinks: Arc<FakeSinks>, clock: Clock) -> Self {
        let depth = Arc::new(Depth::new(100_000, Vec::<(String, usize)>::new()));
        let metrics = Arc::new(Metrics::default());
        let dispatcher = Dispatcher::with_clock(
            Arc::clone(&queue) as Arc<dyn Queue>,
            Arc::clone(&metrics),
            plan,
            Arc::clone(&sinks) as Arc<dyn super::Sinks>,
            Arc::clone(&depth),
            clock,
        );
        let unfinished = queue.unfinished().expect("the memory queue answers");
        let (tx, rx) = mpsc::unbounded_channel();
        let run = tokio::spawn(Arc::clone(&dispatcher).run(unfinished, rx));
        Self {
            dispatcher,
            queue,
            sinks,
            metrics,
            depth,
            clock,
            accepted: Some(tx),
            run,
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Accepts `alert` from `source` as the ingest path does: stored first, then handed to the
    /// dispatcher (and counted in the queue depth). Returns its id.
    fn accept(&self, source: &str, alert: Alert) -> u64 {
        let stored = self.queue.insert(source, alert, self.now());
        let id = stored.id;
        self.metrics.queue_depth_add(1);
        self.depth.queued(source);
        self.accepted
            .as_ref()
            .expect("the bed is running")
            .send(stored)
            .expect("the dispatcher takes alerts");
        id
    }

    /// Waits (virtual time) until alert `id` is finished in the queue, and returns it.
    async fn settle(&self, id: u64) -> StoredAlert {
        self.wait_for(&format!("alert {id} to finish"), || {
            self.queue.stored(id).filter(StoredAlert::is_finished)
        })
        .await
    }

    /// Waits (virtual time, polling every 50 ms) until `probe` finds something.
    async fn wait_for<T>(&self, what: &str, probe: impl Fn() -> Option<T>) -> T {
        self.wait_within(SETTLE_LIMIT, what, probe).await
    }

    /// Waits up to `limit` (virtual time, polling every 50 ms) until `probe` finds something.
    async fn wait_within<T>(
        &self,
        limit: Duration,
        what: &str,
        probe: impl Fn() -> Option<T>,
    ) -> T {
        let until = tokio::time::Instant::now() + limit;
        loop {
            if let Some(found) = probe() {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "gave up waiting for {what}; queue: {:#?}",
                self.queue.all()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the dispatcher as the host stops it (what is unfinished stays queued), giving
    /// rounds in flight `deadline`.
    async fn stop(mut self, deadline: Duration) -> (Arc<MemQueue>, Arc<FakeSinks>) {
        self.accepted = None;
        self.dispatcher.drain(deadline).await;
        let _ = self.run.await;
        (self.queue, self.sinks)
    }
}

/// A normal alert with a subject.
fn alert(subject: &str) -> Alert {
    Alert::new(subject)
}

/// The record of `user` through `sink` in `alert`.
fn rec<'a>(alert: &'a StoredAlert, sink: &str, user: &str) -> &'a RecipientRecord {
    alert
        .recipients
        .iter()
        .find(|r| r.sink == sink && r.user == user)
        .unwrap_or_else(|| panic!("no record for {user} through {sink}: {alert:#?}"))
}

/// (sink, user, outcome) of every recipient of `alert`, sorted.
fn outcomes(alert: &StoredAlert) -> Vec<(String, String, Outcome)> {
    let mut v: Vec<_> = alert
        .recipients
        .iter()
        .map(|r| (r.sink.clone(), r.user.clone(), r.outcome))
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

fn o(sink: &str, user: &str, outcome: Outcome) -> (String, String, Outcome) {
    (sink.to_owned(), user.to_owned(), outcome)
}
