//! Panic containment: every entry point and every future the kit hands to the host runs behind
//! these, so a panic becomes an `ErrorKind::PANICKED` error value instead of ending the host.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
};

use abi_stable::std_types::{RErr, RResult};
use async_ffi::{FfiFuture, FutureExt as _};
use tokio::{runtime::Handle, task::AbortHandle};

use crate::{ErrorKind, FfiError, PluginError};

/// Runs `f`, turning a panic into a `PANICKED` error.
pub(crate) fn guard<T>(
    what: &str,
    f: impl FnOnce() -> RResult<T, FfiError>,
) -> RResult<T, FfiError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => RErr(panicked(what, payload.as_ref()).into()),
    }
}

/// Builds the error for a panic payload.
pub(crate) fn panicked(what: &str, payload: &(dyn Any + Send)) -> PluginError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    PluginError::new(ErrorKind::PANICKED, format!("{what} panicked: {text}"))
}

/// Aborts a spawned task when the future awaiting it is dropped: dropping an `FfiFuture` is a
/// cancellation, and a dropped tokio `JoinHandle` would not cancel.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Spawns `fut` on the instance's runtime and returns a future the host may poll from its own
/// runtime: it waits only on the task's `JoinHandle` (a waker), never on this plugin's timers or
/// IO. A panic in the task resolves to a `PANICKED` error.
pub(crate) fn spawn_ffi<T, F>(
    handle: &Handle,
    what: &'static str,
    fut: F,
) -> FfiFuture<RResult<T, FfiError>>
where
    T: Send + 'static,
    F: Future<Output = Result<T, PluginError>> + Send + 'static,
{
    let task = handle.spawn(fut);
    let abort = AbortOnDrop(task.abort_handle());
    async move {
        let _abort = abort;
        match task.await {
            Ok(Ok(v)) => RResult::ROk(v),
            Ok(Err(e)) => RErr(e.into()),
            Err(e) if e.is_panic() => RErr(panicked(what, e.into_panic().as_ref()).into()),
            Err(_) => RErr(
                PluginError::new(
                    ErrorKind::SHUTTING_DOWN,
                    format!("{what} cancelled: instance stopping"),
                )
                .into(),
            ),
        }
    }
    .into_ffi()
}

/// A future that resolves at once to an error, for calls that arrive when nothing runs.
pub(crate) fn ready_err<T: Send + 'static>(e: PluginError) -> FfiFuture<RResult<T, FfiError>> {
    let e = FfiError::from(e);
    async move { RErr(e) }.into_ffi()
}
