//! Capabilities added after API 1.0, asked for by versioned name through `call`: the
//! plain-Rust arguments and answers ([`Args`]), [`Host::call`] for an instance asking its host,
//! and the conversions the instance adapters use for `Source::call` / `Sink::call`.
//!
//! A side that does not know a name answers `UNSUPPORTED`; the asker treats that as "this
//! capability is absent" and carries on without it. That is how a 1.1 plugin runs in a 1.0
//! host, and a 1.0 plugin in a 1.1 host, without any table of the 1.0 interface growing.

use std::collections::BTreeMap;

use abi_stable::std_types::{RResult, RStr, Tuple2};

use super::Host;
use crate::{ErrorKind, FfiPairs, PluginError};

/// The arguments of a `call`, and its answer: string keys to string values.
pub type Args = BTreeMap<String, String>;

/// The error of a side that does not know capability `name`: kind `UNSUPPORTED`.
pub fn unsupported(name: &str) -> PluginError {
    PluginError::new(
        ErrorKind::UNSUPPORTED,
        format!("`{name}` is not supported here"),
    )
}

/// `args` as they cross the boundary, in key order.
pub(crate) fn to_pairs(args: &Args) -> FfiPairs {
    args.iter()
        .map(|(k, v)| Tuple2(k.as_str().into(), v.as_str().into()))
        .collect()
}

/// Pairs that crossed the boundary, as [`Args`]; of a key given twice, the last value wins.
pub(crate) fn from_pairs(pairs: &FfiPairs) -> Args {
    pairs
        .iter()
        .map(|Tuple2(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Host {
    /// Asks the host for a capability added after API 1.0, by versioned name (`"replies/1"`).
    ///
    /// `Ok(None)` means this host does not have it (an older host, or one without the
    /// feature): carry on without it. `Ok(Some(answer))` is the host's answer; `Err` is a
    /// failure of a capability the host does have.
    pub async fn call(&self, name: &str, args: Args) -> Result<Option<Args>, PluginError> {
        match self.raw().call(RStr::from_str(name), to_pairs(&args)).await {
            RResult::ROk(answer) => Ok(Some(from_pairs(&answer))),
            RResult::RErr(e) if e.kind == ErrorKind::UNSUPPORTED => Ok(None),
            RResult::RErr(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use abi_stable::{
        sabi_trait::TD_Opaque,
        std_types::{RArc, RErr, ROk, RResult, RString},
    };
    use async_ffi::{FfiFuture, FutureExt as _};

    use super::*;
    use crate::{
        FfiAlert, FfiError, LogLevel, LogRecord, Message, Presence, Receipt, RecipientResult,
        abi::{HostBox, HostFfi, HostFfi_TO, SinkBox, SourceBox},
        kit::{Setup, Sink, Source, SourceContext, sink_box, source_box},
    };

    /// A host that knows `echo/1` (answers its arguments plus `host = yes`), fails `broken/1`
    /// and leaves every other name to the interface's default answer (`UNSUPPORTED`).
    #[derive(Clone)]
    struct CallHost {
        knows_echo: bool,
    }

    impl HostFfi for CallHost {
        fn submit(&self, _: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>> {
            async { ROk(Receipt::default()) }.into_ffi()
        }
        fn log(&self, _: LogRecord) {}
        fn max_log_level(&self) -> LogLevel {
            LogLevel::OFF
        }
        fn instance_name(&self) -> RString {
            "calls".into()
        }
        fn call(&self, name: RStr<'_>, args: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
            match name.as_str() {
                "echo/1" if self.knows_echo => {
                    let mut answer = args;
                    answer.push(Tuple2("host".into(), "yes".into()));
                    async move { ROk(answer) }.into_ffi()
                }
                "broken/1" => {
                    let e = FfiError::new(ErrorKind::TRANSIENT, "not now");
                    async move { RErr(e) }.into_ffi()
                }
                _ => crate::abi::unsupported(name, args),
            }
        }
    }

    fn host(knows_echo: bool) -> HostBox {
        HostFfi_TO::from_ptr(RArc::new(CallHost { knows_echo }), TD_Opaque)
    }

    fn args(pairs: &[(&str, &str)]) -> Args {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn host_call_answers_and_maps_unsupported_to_absent() {
        let h = Host::new(host(true));
        let answer = h.call("echo/1", args(&[("a", "1")])).await.unwrap();
        assert_eq!(answer, Some(args(&[("a", "1"), ("host", "yes")])));
        assert_eq!(h.call("replies/1", Args::new()).await.unwrap(), None);
        let e = h.call("broken/1", Args::new()).await.unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::TRANSIENT, "not now")
        );
        // A host without the capability: the same name is simply absent.
        let old = Host::new(host(false));
        assert_eq!(old.call("echo/1", args(&[("a", "1")])).await.unwrap(), None);
    }

    #[test]
    fn pairs_round_trip_and_the_last_duplicate_wins() {
        let a = args(&[("b", "2"), ("a", "1")]);
        assert_eq!(from_pairs(&to_pairs(&a)), a);
        let mut p = to_pairs(&a);
        p.push(Tuple2("a".into(), "3".into()));
        assert_eq!(from_pairs(&p)["a"], "3");
    }

    /// A sink that knows `count/1` (answers how many arguments it got) and panics on `boom/1`.
    struct Counting;

    impl Sink for Counting {
        async fn presence(&self, _: Vec<String>) -> Result<Vec<Presence>, PluginError> {
            Ok(Vec::new())
        }
        async fn deliver(&self, _: Message) -> Result<Vec<RecipientResult>, PluginError> {
            Ok(Vec::new())
        }
        async fn call(&self, name: &str, args: Args) -> Result<Args, PluginError> {
            match name {
                "count/1" => Ok(Args::from([("count".into(), args.len().to_string())])),
                "boom/1" => panic!("boom"),
                _ => Err(unsupported(name)),
            }
        }
    }

    /// A sink and a source that leave `call` to the kit's default.
    struct Plain;

    impl Sink for Plain {
        async fn presence(&self, _: Vec<String>) -> Result<Vec<Presence>, PluginError> {
            Ok(Vec::new())
        }
        async fn deliver(&self, _: Message) -> Result<Vec<RecipientResult>, PluginError> {
            Ok(Vec::new())
        }
    }

    impl Source for Plain {
        async fn run(self: Arc<Self>, ctx: SourceContext) -> Result<(), PluginError> {
            ctx.shutdown.cancelled().await;
            Ok(())
        }
    }

    fn setup() -> Setup {
        Setup {
            instance: "calls".into(),
            kind: "test".into(),
            config_toml: String::new(),
            host: Host::new(host(true)),
        }
    }

    /// Waits for an FFI future as the host does: from a runtime of its own, outside of which
    /// the instance is started and stopped (a runtime cannot be dropped inside another).
    fn wait<T>(f: FfiFuture<RResult<T, FfiError>>) -> Result<T, PluginError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(f).into_result().map_err(PluginError::from)
    }

    fn sink_call(sink: &SinkBox, name: &str, a: &Args) -> Result<Args, PluginError> {
        wait(sink.call(RStr::from_str(name), to_pairs(a))).map(|p| from_pairs(&p))
    }

    #[test]
    fn sink_call_reaches_the_plugin_guarded_like_deliver() {
        let sink = sink_box(setup(), |_| Ok(Counting)).unwrap();
        let a = args(&[("x", "1"), ("y", "2")]);
        let e = sink_call(&sink, "count/1", &a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::SHUTTING_DOWN, "not started: {e:?}");

        assert!(sink.start().is_ok());
        let answer = sink_call(&sink, "count/1", &a).unwrap();
        assert_eq!(answer, args(&[("count", "2")]));
        let e = sink_call(&sink, "nope/1", &a).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UNSUPPORTED);
        let e = sink_call(&sink, "boom/1", &a).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::PANICKED, "call panicked: boom")
        );
        // The panic was contained: the instance still answers.
        assert!(sink_call(&sink, "count/1", &Args::new()).is_ok());
        assert!(sink.stop(1000).is_ok());
    }

    #[test]
    fn default_call_is_unsupported_for_sources_and_sinks() {
        let sink = sink_box(setup(), |_| Ok(Plain)).unwrap();
        assert!(sink.start().is_ok());
        let e = sink_call(&sink, "replies/1", &Args::new()).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::UNSUPPORTED, "`replies/1` is not supported here")
        );
        assert!(sink.stop(1000).is_ok());

        let source: SourceBox = source_box(setup(), |_| Ok(Plain)).unwrap();
        assert!(source.start().is_ok());
        let e = wait(source.call(RStr::from_str("replies/1"), FfiPairs::new())).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UNSUPPORTED);
        assert!(source.stop(1000).is_ok());
    }
}
