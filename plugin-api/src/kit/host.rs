//! The plugin's view of the host: a cloneable handle to submit alerts through.

use abi_stable::std_types::RResult;

use crate::{Alert, FfiAlert, PluginError, Receipt, abi::HostBox};

/// The host, as an instance sees it. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: HostBox,
    instance: String,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Host {
    pub(crate) fn new(inner: HostBox) -> Self {
        let instance = inner.instance_name().into_string();
        Self { inner, instance }
    }

    pub(crate) fn raw(&self) -> &HostBox {
        &self.inner
    }

    /// The name of the instance this handle belongs to.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Hands an alert to the host. Resolves only after the alert is durably queued (or was a
    /// duplicate of one that is); an error of kind `TRANSIENT` means "not taken, try later".
    ///
    /// Dropping the future before it resolves leaves the outcome unknown: resubmit with the same
    /// dedup key and the host takes it at most once.
    pub async fn submit(&self, alert: &Alert) -> Result<Receipt, PluginError> {
        match self.inner.submit(FfiAlert::from(alert)).await {
            RResult::ROk(receipt) => Ok(receipt),
            RResult::RErr(e) => Err(e.into()),
        }
    }
}
