//! An in-process stand-in for the host, for plugin unit tests: records what a source submits
//! and what an instance asks through `call`, and answers as scripted, without loading any
//! plugin file.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RErr, ROk, RResult, RStr, RString, Tuple2},
};
use async_ffi::{FfiFuture, FutureExt as _};

use crate::{
    Alert, ErrorKind, FfiAlert, FfiError, FfiPairs, LogLevel, LogRecord, PluginError, Receipt,
    abi::{HostBox, HostFfi, HostFfi_TO},
    kit::{Args, CancellationToken, Host, Inbound, SourceContext, calls, unsupported},
};

/// How the test host answers a submit.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Accept (with a new id; a repeated dedup key of the same status is reported as a
    /// duplicate, so a resolved alert with its firing alert's key is recorded too).
    Accept,
    /// Refuse with this error.
    Refuse(PluginError),
    /// Wait this long, then accept.
    Delay(Duration),
}

#[derive(Default)]
struct State {
    accepted: Vec<Alert>,
    logs: Vec<(LogLevel, String, String)>,
    script: Vec<Answer>,
    /// Capability names this host knows (others answer `UNSUPPORTED`).
    known_calls: Vec<String>,
    /// Every `call` seen, known or not, in order: name and arguments.
    calls: Vec<(String, Args)>,
    call_script: Vec<Answer>,
}

/// A fake host. Clone it to keep a view of what the instance did.
#[derive(Clone, Default)]
pub struct TestHost {
    instance: String,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl TestHost {
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers for the next submits, in order; after they run out every submit is accepted.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().script.extend(answers);
    }

    /// Refuses the next `n` submits with a transient "queue full".
    pub fn refuse_next(&self, n: usize) {
        let e = PluginError::new(ErrorKind::TRANSIENT, "queue full");
        self.script((0..n).map(|_| Answer::Refuse(e.clone())));
    }

    /// Every alert accepted so far (duplicates not repeated).
    pub fn accepted(&self) -> Vec<Alert> {
        self.lock().accepted.clone()
    }

    /// Every log record forwarded so far: level, target, message.
    pub fn logs(&self) -> Vec<(LogLevel, String, String)> {
        self.lock().logs.clone()
    }

    /// Makes this host know capability `name` (e.g. `inbound.message/1`): its calls are
    /// answered by the call script, then `Ok` with `recorded=1`. Unknown names answer
    /// `UNSUPPORTED`, as a host without the capability does.
    pub fn accept_calls(&self, name: &str) {
        self.lock().known_calls.push(name.to_owned());
    }

    /// Answers for the next calls of known names, in order (`Accept`: `Ok`, `Refuse(e)`: that
    /// error, `Delay(d)`: `Ok` after `d`).
    pub fn script_calls(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().call_script.extend(answers);
    }

    /// Every `call` the instance made so far (known names or not), oldest first, recorded when
    /// it arrives (before its answer).
    pub fn calls(&self) -> Vec<(String, Args)> {
        self.lock().calls.clone()
    }

    /// The inbound messages (`inbound.message/1` calls) the instance handed over so far, as
    /// they crossed (after the kit's checks and bounds), oldest first; known to the host or not.
    pub fn inbound_messages(&self) -> Vec<Inbound> {
        self.lock()
            .calls
            .iter()
            .filter(|(name, _)| name == calls::INBOUND_MESSAGE)
            .map(|(_, args)| {
                let get = |k: &str| args.get(k).cloned().unwrap_or_default();
                Inbound {
                    user: get("user"),
                    text: get("text"),
                    conversation: get("conversation"),
                    name: args.get("name").cloned(),
                    id: args.get("id").cloned(),
                }
            })
            .collect()
    }

    /// The handle as it crosses the boundary.
    pub fn boxed(&self) -> HostBox {
        HostFfi_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// The handle as plugin code sees it.
    pub fn host(&self) -> Host {
        Host::new(self.boxed())
    }

    /// A context to call `Source::run` with directly, and the token that stops it.
    pub fn source_context(&self) -> (SourceContext, CancellationToken) {
        let shutdown = CancellationToken::new();
        (
            SourceContext {
                host: self.host(),
                shutdown: shutdown.clone(),
            },
            shutdown,
        )
    }
}

impl HostFfi for TestHost {
    fn submit(&self, alert: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>> {
        let this = self.clone();
        let answer = {
            let mut state = self.lock();
            if state.script.is_empty() {
                Answer::Accept
            } else {
                state.script.remove(0)
            }
        };
        async move {
            let delay = match answer {
                Answer::Refuse(e) => return RErr(e.into()),
                Answer::Delay(d) => Some(d),
                Answer::Accept => None,
            };
            if let Some(d) = delay {
                // Only a waker crosses: the sleep runs on a thread of its own.
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    std::thread::sleep(d);
                    let _ = tx.send(());
                });
                let _ = rx.await;
            }
            let alert = Alert::from(&alert);
            let mut state = this.lock();
            // A resolved alert carries the key of the firing one it ends: an event of its own.
            let existing = alert.dedup_key.as_ref().and_then(|k| {
                state
                    .accepted
                    .iter()
                    .position(|a| a.dedup_key.as_ref() == Some(k) && a.status() == alert.status())
            });
            match existing {
                Some(i) => ROk(Receipt {
                    alert_id: i as u64 + 1,
                    duplicate: true,
                    attributes: Default::default(),
                }),
                None => {
                    state.accepted.push(alert);
                    ROk(Receipt {
                        alert_id: state.accepted.len() as u64,
                        duplicate: false,
                        attributes: Default::default(),
                    })
                }
            }
        }
        .into_ffi()
    }

    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        let name = name.as_str().to_owned();
        let answer = {
            let mut state = self.lock();
            let args: Args = args
                .iter()
                .map(|Tuple2(k, v)| (k.to_string(), v.to_string()))
                .collect();
            state.calls.push((name.clone(), args));
            if !state.known_calls.contains(&name) {
                None
            } else if state.call_script.is_empty() {
                Some(Answer::Accept)
            } else {
                Some(state.call_script.remove(0))
            }
        };
        async move {
            let delay = match answer {
                None => return RErr(unsupported(&name).into()),
                Some(Answer::Refuse(e)) => return RErr(e.into()),
                Some(Answer::Delay(d)) => d,
                Some(Answer::Accept) => Duration::ZERO,
            };
            if !delay.is_zero() {
                // Only a waker crosses: the sleep runs on a thread of its own.
                let (tx, rx) = tokio::sync::oneshot::channel();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = tx.send(());
                });
                let _ = rx.await;
            }
            ROk(FfiPairs::from(vec![Tuple2("recorded".into(), "1".into())]))
        }
        .into_ffi()
    }

    fn log(&self, record: LogRecord) {
        let mut message = record.message.to_string();
        if !record.fields.is_empty() {
            message.push(' ');
            message.push_str(&record.fields);
        }
        self.lock()
            .logs
            .push((record.level, record.target.to_string(), message));
    }

    fn max_log_level(&self) -> LogLevel {
        LogLevel::DEBUG
    }

    fn instance_name(&self) -> RString {
        self.instance.as_str().into()
    }
}
