//! Fake sinks for the round tests: presence and per-recipient outcomes set by the test, every
//! call recorded with the (virtual) time it came and what the queue said at that moment.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use alertbridge_plugin_api::{
    DeliveryStatus, Message, PluginError, Presence, PresenceState, RecipientResult,
};
use tokio::sync::Semaphore;

use super::memq::MemQueue;
use crate::dispatch::{
    clock::Clock,
    port::{BoxFuture, SinkLookup, SinkPort, Sinks},
};

/// One deliver call as the sink saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub at_ms: i64,
    pub message: Message,
    /// For each recipient of the message: was its send recorded (`sending`) in the queue when
    /// the sink was called?
    pub recorded: Vec<bool>,
}

#[derive(Default)]
struct State {
    running: bool,
    /// What presence reports; a user not in here is left out of the answer.
    presence: HashMap<String, PresenceState>,
    /// When set, every presence call fails with it.
    presence_error: Option<PluginError>,
    presence_calls: Vec<Vec<String>>,
    /// Per user, the next outcomes to report (`None`: leave the user out of the answer); once
    /// used up, the user is delivered.
    script: HashMap<String, VecDeque<Option<RecipientResult>>>,
    /// The next deliver calls fail whole with these.
    call_errors: VecDeque<PluginError>,
    /// When a call fails with PANICKED, the sink is down (restarting) for this long.
    restart_for: Duration,
    /// Down (being recreated) until then.
    down_until: Option<tokio::time::Instant>,
    calls: Vec<Call>,
}

pub struct FakeSink {
    name: String,
    clock: Clock,
    queue: Arc<MemQueue>,
    state: Mutex<State>,
    /// When set, each deliver call waits for a permit before answering (`release`).
    gate: Mutex<Option<Arc<Semaphore>>>,
}

impl FakeSink {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_running(&self) -> bool {
        let s = self.lock();
        s.running
            && s.down_until
                .is_none_or(|t| tokio::time::Instant::now() >= t)
    }

    /// Sets `users`' presence (everyone not set is left out of presence answers).
    pub fn presence(&self, users: &[&str], state: PresenceState) {
        let mut s = self.lock();
        for u in users {
            s.presence.insert((*u).to_owned(), state);
        }
    }

    /// Makes every presence call fail with `error` (`None`: answer again).
    pub fn presence_fails(&self, error: Option<PluginError>) {
        self.lock().presence_error = error;
    }

    pub fn presence_calls(&self) -> Vec<Vec<String>> {
        self.lock().presence_calls.clone()
    }

    /// `user`'s next outcomes, one per deliver call that includes them (`None`: left out).
    pub fn script(&self, user: &str, outcomes: impl IntoIterator<Item = Option<DeliveryStatus>>) {
        let mut s = self.lock();
        let q = s.script.entry(user.to_owned()).or_default();
        for o in outcomes {
            q.push_back(o.map(|status| RecipientResult::new(user, status, "scripted")));
        }
    }

    /// `user`'s next outcome, as a full result (detail, retry advice).
    pub fn script_result(&self, result: RecipientResult) {
        let mut s = self.lock();
        s.script
            .entry(result.user.clone())
            .or_default()
            .push_back(Some(result));
    }

    /// The next deliver calls fail whole with `errors`, in order.
    pub fn fail_calls(&self, errors: impl IntoIterator<Item = PluginError>) {
        self.lock().call_errors.extend(errors);
    }

    /// After a PANICKED call the sink is down (being recreated) for `d`, as a handle makes it.
    pub fn restart_for(&self, d: Duration) {
        self.lock().restart_for = d;
    }

    pub fn set_running(&self, running: bool) {
        self.lock().running = running;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Deliver calls from now on wait for [`FakeSink::release`].
    pub fn hold_calls(&self) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::new(Semaphore::new(0)));
    }

    /// Lets `n` held deliver calls answer.
    pub fn release(&self, n: usize) {
        if let Some(g) = &*self.gate.lock().unwrap_or_else(PoisonError::into_inner) {
            g.add_permits(n);
        }
    }

    /// Who received which subjects, in order: user → subjects.
    pub fn received(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for call in self.calls() {
            for user in &call.message.recipients {
                out.entry(user.clone())
                    .or_default()
                    .push(call.message.subject.clone());
            }
        }
        out
    }

    /// The answer to a deliver call of `message`, as scripted.
    fn answer(&self, message: &Message) -> Result<Vec<RecipientResult>, PluginError> {
        let mut s = self.lock();
        if let Some(e) = s.call_errors.pop_front() {
            if e.kind == alertbridge_plugin_api::ErrorKind::PANICKED {
                // The handle has the instance recreated: down until then.
                s.down_until = Some(tokio::time::Instant::now() + s.restart_for);
            }
            return Err(e);
        }
        Ok(message
            .recipients
            .iter()
            .filter_map(
                |u| match s.script.get_mut(u).and_then(VecDeque::pop_front) {
                    Some(scripted) => scripted,
                    None => Some(RecipientResult::delivered(u.as_str())),
                },
            )
            .collect())
    }
}

impl SinkPort for FakeSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn presence<'a>(
        &'a self,
        users: &'a [String],
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Presence>, PluginError>> {
        let mut s = self.lock();
        s.presence_calls.push(users.to_vec());
        let answer = match &s.presence_error {
            Some(e) => Err(e.clone()),
            None => Ok(users
                .iter()
                .filter_map(|u| s.presence.get(u).map(|p| Presence::new(u.as_str(), *p)))
                .collect()),
        };
        Box::pin(std::future::ready(answer))
    }

    fn deliver<'a>(
        &'a self,
        message: &'a Message,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<RecipientResult>, PluginError>> {
        Box::pin(async move {
            let stored = self.queue.stored(message.alert_id);
            let recorded = message
                .recipients
                .iter()
                .map(|u| {
                    stored.as_ref().is_some_and(|a| {
                        a.recipients
                            .iter()
                            .any(|r| r.sink == self.name && &r.user == u && r.sending)
                    })
                })
                .collect();
            self.lock().calls.push(Call {
                at_ms: self.clock.now_ms(),
                message: message.clone(),
                recorded,
            });
            let gate = self
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(gate) = gate {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            self.answer(message)
        })
    }
}

/// The sinks by name.
pub struct FakeSinks {
    sinks: Mutex<BTreeMap<String, Arc<FakeSink>>>,
}

impl FakeSinks {
    /// Running sinks named `names`, everyone's presence unset (left out).
    pub fn new(clock: Clock, queue: Arc<MemQueue>, names: &[&str]) -> Arc<Self> {
        let sinks = names
            .iter()
            .map(|n| {
                let sink = FakeSink {
                    name: (*n).to_owned(),
                    clock,
                    queue: Arc::clone(&queue),
                    state: Mutex::new(State {
                        running: true,
                        ..State::default()
                    }),
                    gate: Mutex::new(None),
                };
                ((*n).to_owned(), Arc::new(sink))
            })
            .collect();
        Arc::new(Self {
            sinks: Mutex::new(sinks),
        })
    }

    pub fn get(&self, name: &str) -> Arc<FakeSink> {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&sinks[name])
    }

    /// Takes sink `name` out of the configuration, as a reload that drops it.
    pub fn remove(&self, name: &str) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }
}

impl Sinks for FakeSinks {
    fn lookup<'a>(&'a self, name: &'a str, wait: Duration) -> BoxFuture<'a, SinkLookup> {
        Box::pin(async move {
            let found = self
                .sinks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(name)
                .cloned();
            let Some(sink) = found else {
                return SinkLookup::Unknown;
            };
            if !sink.is_running() {
                tokio::time::sleep(wait).await;
            }
            if sink.is_running() {
                SinkLookup::Running(sink as Arc<dyn SinkPort>)
            } else {
                SinkLookup::NotRunning
            }
        })
    }
}
