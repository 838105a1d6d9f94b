//! Plain data that crosses the plugin boundary: `#[repr(C)]` structs and integer "enums".
//!
//! Structs here can never grow without breaking the ABI, so each carries an `attributes`
//! key/value list as its growth slot: a later 1.y puts new data there under a new key, and a
//! receiver ignores keys it does not know. Enums are `#[repr(transparent)]` integer newtypes with
//! associated constants: a receiver must accept values it does not know.

use std::fmt;

use abi_stable::{
    StableAbi,
    std_types::{RString, RVec, Tuple2},
};

/// Declares an integer newtype with named constants, `name()` and `from_name()`.
macro_rules! int_enum {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)* }) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$vmeta])* pub const $variant: Self = Self($value);)*
            /// Every value this version of the API knows, in ascending order.
            pub const KNOWN: &'static [Self] = &[$(Self::$variant),*];

            /// The lowercase name of a known value, `"unknown"` otherwise.
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $($value => $text,)*
                    _ => "unknown",
                }
            }

            /// Parses a name as written by [`Self::name`].
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// True if and only if this value is one of [`Self::KNOWN`].
            pub fn is_known(self) -> bool {
                Self::KNOWN.contains(&self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.is_known() {
                    f.write_str(self.name())
                } else {
                    write!(f, "unknown({})", self.0)
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

int_enum! {
    /// How urgent an alert is. Ordered: `INFO < LOW < NORMAL < HIGH < CRITICAL`.
    Severity(u8) {
        INFO = 10 => "info",
        LOW = 20 => "low",
        NORMAL = 30 => "normal",
        HIGH = 40 => "high",
        CRITICAL = 50 => "critical",
    }
}

impl Default for Severity {
    fn default() -> Self {
        Self::NORMAL
    }
}

int_enum! {
    /// A recipient's presence as a sink reports it.
    PresenceState(u8) {
        UNKNOWN = 0 => "unknown",
        AVAILABLE = 1 => "available",
        BUSY = 2 => "busy",
        DO_NOT_DISTURB = 3 => "do_not_disturb",
        AWAY = 4 => "away",
        OFFLINE = 5 => "offline",
    }
}

int_enum! {
    /// What happened to one recipient of a delivery.
    DeliveryStatus(u8) {
        /// The IM reached the recipient.
        DELIVERED = 1 => "delivered",
        /// The recipient is not signed in; the host applies the route's offline policy.
        OFFLINE = 2 => "offline",
        /// The recipient declined or ignored the invitation.
        DECLINED = 3 => "declined",
        /// No such user.
        NOT_FOUND = 4 => "not_found",
        /// Worth retrying later (timeouts, throttling, server busy).
        FAILED_TRANSIENT = 5 => "failed_transient",
        /// Retrying will not help.
        FAILED_PERMANENT = 6 => "failed_permanent",
    }
}

int_enum! {
    /// The class of an error, which decides what the receiver does next.
    ErrorKind(u8) {
        /// The instance's configuration is wrong; retrying will not help until it changes.
        CONFIG = 1 => "config",
        /// Try again later.
        TRANSIENT = 2 => "transient",
        /// Retrying will not help.
        PERMANENT = 3 => "permanent",
        /// Code on the other side panicked; the instance should be recreated.
        PANICKED = 4 => "panicked",
        /// The other side is stopping or not started.
        SHUTTING_DOWN = 5 => "shutting_down",
        /// The other side does not implement this.
        UNSUPPORTED = 6 => "unsupported",
    }
}

int_enum! {
    /// The level of a forwarded log record.
    LogLevel(u8) {
        OFF = 0 => "off",
        ERROR = 1 => "error",
        WARN = 2 => "warn",
        INFO = 3 => "info",
        DEBUG = 4 => "debug",
        TRACE = 5 => "trace",
    }
}

int_enum! {
    /// The state an instance reports through `health`.
    HealthState(u8) {
        STARTING = 0 => "starting",
        OK = 1 => "ok",
        DEGRADED = 2 => "degraded",
        FAILED = 3 => "failed",
        STOPPED = 4 => "stopped",
    }
}

int_enum! {
    /// Whether a plugin kind is a source or a sink.
    Role(u8) {
        SOURCE = 1 => "source",
        SINK = 2 => "sink",
    }
}

/// A key/value list, the escape hatch that lets data grow without an ABI change.
pub type FfiPairs = RVec<Tuple2<RString, RString>>;

/// An alert as a source hands it to the host.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct FfiAlert {
    pub subject: RString,
    pub body: RString,
    pub severity: Severity,
    /// Groups named inside the alert (honoured only where a route allows it).
    pub groups: RVec<RString>,
    /// Users (SIP URIs) named inside the alert (honoured only where a route allows it).
    pub users: RVec<RString>,
    pub labels: FfiPairs,
    /// Empty for none.
    pub dedup_key: RString,
    /// Unix milliseconds; 0 for none.
    pub expires_unix_ms: i64,
    pub attributes: FfiPairs,
}

/// The host's answer to a submit: the alert is durably queued.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The id the host gave the alert (the first one's, for a duplicate).
    pub alert_id: u64,
    /// True if and only if the dedup key was seen within the window and nothing new was queued.
    pub duplicate: bool,
    pub attributes: FfiPairs,
}

/// One delivery attempt of an alert to some recipients of one sink.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct FfiMessage {
    pub alert_id: u64,
    /// 1 for the first attempt; a retry of the same alert to the same recipient counts up.
    pub attempt: u32,
    /// The source instance the alert came from.
    pub source: RString,
    pub subject: RString,
    pub body: RString,
    pub severity: Severity,
    pub labels: FfiPairs,
    pub recipients: RVec<RString>,
    pub attributes: FfiPairs,
}

/// One user's presence.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiPresence {
    pub user: RString,
    pub state: PresenceState,
    pub detail: RString,
    pub attributes: FfiPairs,
}

/// The outcome of a delivery for one recipient.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiRecipientResult {
    pub user: RString,
    pub status: DeliveryStatus,
    pub detail: RString,
    /// 0 for no advice.
    pub retry_after_ms: u64,
    pub attributes: FfiPairs,
}

/// An error that crossed the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiError {
    pub kind: ErrorKind,
    pub message: RString,
    /// 0 for no advice.
    pub retry_after_ms: u64,
    /// For a `CONFIG` error about one key of the instance's config: its dotted path
    /// (`tls.ca_file`), which the host maps to a line of its file. Empty otherwise.
    pub key: RString,
    pub attributes: FfiPairs,
}

impl FfiError {
    /// An error of `kind` with `message` and nothing else.
    pub fn new(kind: ErrorKind, message: impl Into<RString>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_after_ms: 0,
            key: RString::new(),
            attributes: FfiPairs::new(),
        }
    }
}

/// An instance's health.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct FfiHealth {
    pub state: HealthState,
    pub message: RString,
    pub attributes: FfiPairs,
}

/// A plugin's `tracing` event, forwarded to the host's subscriber.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct LogRecord {
    pub level: LogLevel,
    pub target: RString,
    pub message: RString,
    /// `key=value` pairs separated by spaces, already rendered.
    pub fields: RString,
    /// Empty when unknown.
    pub file: RString,
    /// 0 when unknown.
    pub line: u32,
    pub attributes: FfiPairs,
}

/// What a plugin file provides.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct PluginInfo {
    pub name: RString,
    pub version: RString,
    /// The version of `alertbridge-plugin-api` the plugin was built against.
    pub api_version: RString,
    pub kinds: RVec<KindInfo>,
    pub attributes: FfiPairs,
}

/// One kind of instance a plugin can create.
#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct KindInfo {
    pub name: RString,
    pub role: Role,
    pub attributes: FfiPairs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_and_round_trips() {
        assert!(Severity::INFO < Severity::LOW && Severity::HIGH < Severity::CRITICAL);
        for s in Severity::KNOWN {
            assert_eq!(Severity::from_name(s.name()), Some(*s));
        }
        assert_eq!(Severity(99).to_string(), "unknown(99)");
        assert_eq!(Severity::from_name("urgent"), None);
    }
}
