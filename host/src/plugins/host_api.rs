//! The host side of the boundary: what each instance's `Host` handle does — hand submitted
//! alerts to [`Ingest`] (which checks and durably queues them) and re-emit plugin log records
//! in the host's log. The FFI types stop here: [`Ingest`] is plain Rust.

use std::sync::{Arc, PoisonError, RwLock};

use alertbridge_plugin_api::{
    Alert, ErrorKind, FfiAlert, FfiError, FfiPairs, LogLevel, LogRecord, PluginError, Receipt,
    abi::{HostBox, HostFfi, HostFfi_TO},
    abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RArc, RErr, RResult, RStr, RString, Tuple2},
    },
    async_ffi::{FfiFuture, FutureExt as _},
    kit::{MAX_INBOUND_FIELD_BYTES, MAX_INBOUND_TEXT_BYTES, calls},
};

use crate::{
    incidents::{reply::InboundReply, reply_send::InboundPort},
    ingest::Ingest,
};

/// The running host's reply service; none (no incidents) answers `inbound.message/1` with
/// `UNSUPPORTED`.
static INBOUND: RwLock<Option<Arc<dyn InboundPort>>> = RwLock::new(None);

/// Installs (or with `None` removes) the service `inbound.message/1` goes to.
pub fn set_inbound_port(port: Option<Arc<dyn InboundPort>>) {
    *INBOUND.write().unwrap_or_else(PoisonError::into_inner) = port;
}

fn inbound_port() -> Option<Arc<dyn InboundPort>> {
    INBOUND
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// `inbound.message/1`'s arguments as an [`InboundReply`], or why they are unusable: the kit's
/// bounds, checked again here since a foreign sink may not use the kit.
fn inbound_args(args: &FfiPairs) -> Result<InboundReply, String> {
    let get = |key: &str| {
        args.iter()
            .rev()
            .find(|Tuple2(k, _)| k.as_str() == key)
            .map(|Tuple2(_, v)| v.to_string())
    };
    let field = |key: &str, max: usize| -> Result<Option<String>, String> {
        match get(key) {
            Some(v) if v.len() > max => {
                Err(format!("`{key}` is {} bytes, more than {max}", v.len()))
            }
            v => Ok(v),
        }
    };
    let user = field("user", MAX_INBOUND_FIELD_BYTES)?
        .map(|u| u.trim().to_lowercase())
        .filter(|u| u.starts_with("sip:") && u.len() > 4)
        .ok_or("no sender `user` (a sip: URI)")?;
    let conversation = field("conversation", MAX_INBOUND_FIELD_BYTES)?
        .filter(|c| !c.is_empty())
        .ok_or("no `conversation`")?;
    let text = field("text", MAX_INBOUND_TEXT_BYTES)?.unwrap_or_default();
    Ok(InboundReply {
        user,
        text,
        conversation,
        name: field("name", MAX_INBOUND_FIELD_BYTES)?.filter(|n| !n.trim().is_empty()),
        id: field("id", MAX_INBOUND_FIELD_BYTES)?.filter(|i| !i.is_empty()),
    })
}

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

    fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        let unsupported = |name: &str| {
            FfiError::new(
                ErrorKind::UNSUPPORTED,
                format!("`{name}` is not supported by this host"),
            )
        };
        if name.as_str() != calls::INBOUND_MESSAGE {
            let e = unsupported(name.as_str());
            return async move { RErr(e) }.into_ffi();
        }
        let Some(port) = inbound_port() else {
            let e = unsupported(name.as_str());
            return async move { RErr(e) }.into_ffi();
        };
        let message = match inbound_args(&args) {
            Ok(m) => m,
            Err(why) => {
                tracing::warn!(instance = %self.instance, why = %why, "inbound message refused");
                let e = FfiError::new(ErrorKind::PERMANENT, format!("inbound.message/1: {why}"));
                return async move { RErr(e) }.into_ffi();
            }
        };
        let answer = port.inbound(&self.instance, message);
        async move {
            match answer.await {
                Ok(()) => RResult::ROk(
                    [Tuple2(RString::from("recorded"), RString::from("1"))]
                        .into_iter()
                        .collect(),
                ),
                Err(e) => RErr(FfiError::from(e)),
            }
        }
        .into_ffi()
    }
}
