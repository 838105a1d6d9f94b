//! The host side of the boundary: what each instance's `Host` handle does — hand submitted
//! alerts to [`Ingest`] (which checks and durably queues them) and re-emit plugin log records
//! in the host's log. The FFI types stop here: [`Ingest`] is plain Rust.

use std::sync::Arc;

use alertbridge_plugin_api::{
    Alert, ErrorKind, FfiAlert, FfiError, LogLevel, LogRecord, PluginError, Receipt,
    abi::{HostBox, HostFfi, HostFfi_TO},
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RArc, RErr, RResult, RString},
    },
    async_ffi::{FfiFuture, FutureExt as _},
};

use crate::ingest::Ingest;

/// One instance's handle on the host.
#[derive(Clone)]
pub struct HostHandle {
    instance: Arc<str>,
    ingest: Option<Arc<Ingest>>,
    level: LogLevel,
}

impl HostHandle {
    /// A handle for `instance`; without `ingest` (as for `check`) submits are refused.
    pub fn boxed(instance: &str, ingest: Option<Arc<Ingest>>) -> HostBox {
        let level = match tracing::level_filters::LevelFilter::current().into_level() {
            None => LogLevel::OFF,
            Some(tracing::Level::ERROR) => LogLevel::ERROR,
            Some(tracing::Level::WARN) => LogLevel::WARN,
            Some(tracing::Level::INFO) => LogLevel::INFO,
            Some(tracing::Level::DEBUG) => LogLevel::DEBUG,
            Some(tracing::Level::TRACE) => LogLevel::TRACE,
        };
        HostFfi_TO::from_ptr(
            RArc::new(Self {
                instance: instance.into(),
                ingest,
                level,
            }),
            TD_Opaque,
        )
    }
}

impl HostFfi for HostHandle {
    fn submit(&self, alert: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>> {
        match &self.ingest {
            Some(ingest) => {
                let submit = ingest.submit(&self.instance, Alert::from(&alert));
                async move {
                    match submit.await {
                        Ok(a) => RResult::ROk(Receipt {
                            alert_id: a.alert_id,
                            duplicate: a.duplicate,
                            attributes: Default::default(),
                        }),
                        Err(e) => RErr(FfiError::from(PluginError::from(e))),
                    }
                }
                .into_ffi()
            }
            None => {
                let e = FfiError::new(ErrorKind::SHUTTING_DOWN, "not running (config check)");
                async move { RErr(e) }.into_ffi()
            }
        }
    }

    fn log(&self, record: LogRecord) {
        let level = match record.level {
            LogLevel::ERROR => log::Level::Error,
            LogLevel::WARN => log::Level::Warn,
            LogLevel::INFO => log::Level::Info,
            LogLevel::DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        let target = format!("plugin::{}::{}", self.instance, record.target);
        let message = if record.fields.is_empty() {
            record.message.to_string()
        } else {
            format!("{} {}", record.message, record.fields)
        };
        let file = (!record.file.is_empty()).then(|| record.file.as_str());
        let line = (record.line != 0).then_some(record.line);
        tracing_log::format_trace(
            &log::Record::builder()
                .level(level)
                .target(&target)
                .args(format_args!("{message}"))
                .file(file)
                .line(line)
                .module_path(None)
                .build(),
        )
        .ok();
    }

    fn max_log_level(&self) -> LogLevel {
        self.level
    }

    fn instance_name(&self) -> RString {
        RString::from(&*self.instance)
    }
}
