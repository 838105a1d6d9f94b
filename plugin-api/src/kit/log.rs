//! Log forwarding: this plugin's `tracing` events reach the host's subscriber through
//! `HostFfi::log`, attributed to the instance whose thread emitted them.
//!
//! Each plugin file has its own copy of `tracing`, so without this its events would vanish. One
//! subscriber is installed per plugin file; each instance's runtime threads (and the host
//! threads while they are inside an entry point of that instance) carry the instance's host
//! handle in a thread-local, which decides where an event goes.

use std::{
    cell::RefCell,
    fmt::Write as _,
    sync::{Mutex, OnceLock},
};

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{Layer, filter::LevelFilter, layer::Context, prelude::*};

use crate::{LogLevel, LogRecord, abi::HostBox};

thread_local! {
    static CURRENT: RefCell<Option<HostBox>> = const { RefCell::new(None) };
}

/// The host of the first instance created, for events emitted on threads of no instance.
static FALLBACK: OnceLock<Mutex<HostBox>> = OnceLock::new();

/// Installs the forwarding subscriber and panic hook, once per plugin file.
pub(crate) fn install(host: &HostBox) {
    let mut first = false;
    FALLBACK.get_or_init(|| {
        first = true;
        Mutex::new(host.clone())
    });
    if !first {
        return;
    }
    let filter = match host.max_log_level() {
        LogLevel::OFF => LevelFilter::OFF,
        LogLevel::ERROR => LevelFilter::ERROR,
        LogLevel::WARN => LevelFilter::WARN,
        LogLevel::INFO => LevelFilter::INFO,
        LogLevel::DEBUG => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // Fails only if the plugin installed its own subscriber first; then its choice stands.
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(ForwardLayer.with_filter(filter)),
    );
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(target: "panic", thread = thread.name().unwrap_or("unnamed"), %location, "{}", panic_text(info));
    }));
}

fn panic_text(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Makes this thread's events belong to `host`'s instance for as long as it lives.
pub(crate) fn set_thread_host(host: HostBox) {
    CURRENT.with(|c| *c.borrow_mut() = Some(host));
}

/// Runs `f` with this thread's events attributed to `host`'s instance.
pub(crate) fn with_host<R>(host: &HostBox, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.borrow_mut().replace(host.clone()));
    struct Restore(Option<HostBox>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(previous);
    f()
}

struct ForwardLayer;

impl<S: Subscriber> Layer<S> for ForwardLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut visitor = Visitor::default();
        event.record(&mut visitor);
        let record = LogRecord {
            level: match *meta.level() {
                Level::ERROR => LogLevel::ERROR,
                Level::WARN => LogLevel::WARN,
                Level::INFO => LogLevel::INFO,
                Level::DEBUG => LogLevel::DEBUG,
                Level::TRACE => LogLevel::TRACE,
            },
            target: meta.target().into(),
            message: visitor.message.into(),
            fields: visitor.fields.into(),
            file: meta.file().unwrap_or_default().into(),
            line: meta.line().unwrap_or(0),
            attributes: Default::default(),
        };
        let sent = CURRENT.with(|c| match c.try_borrow() {
            Ok(current) => current
                .as_ref()
                .map(|host| host.log(record.clone()))
                .is_some(),
            Err(_) => false,
        });
        if !sent && let Some(Ok(host)) = FALLBACK.get().map(Mutex::lock) {
            host.log(record);
        }
    }
}

#[derive(Default)]
struct Visitor {
    message: String,
    fields: String,
}

impl tracing::field::Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.push_field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.push_field(field, format_args!("{value:?}"));
        }
    }
}

impl Visitor {
    fn push_field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={}", field.name(), value);
    }
}
