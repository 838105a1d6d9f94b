//! Tests of the kit's side of sinks that listen: `Host::inbound` against a host that knows
//! `inbound.message/1`, one that does not, one that refuses and one that answers wrongly; the
//! routing of `conversation.send/1` to the typed hook, its argument checks and the fallback to
//! `Sink::call`.

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROk, RResult, RStr, RString},
};
use async_ffi::{FfiFuture, FutureExt as _};

use super::*;
use crate::{
    FfiAlert, FfiError, FfiPairs, LogLevel, LogRecord, Message, Presence, Receipt, RecipientResult,
    abi::{HostFfi, HostFfi_TO, SinkBox},
    kit::{
        Setup,
        call::{from_pairs, to_pairs},
        sink_box,
    },
    testing::{Answer, TestHost},
};

fn message() -> Inbound {
    Inbound {
        user: " Alice@Contoso.COM ".into(),
        text: "ack 42".into(),
        conversation: "conv-1".into(),
        name: Some("  Alice Example ".into()),
        id: Some("m-7".into()),
    }
}

#[tokio::test]
async fn inbound_is_recorded_with_its_fields_bounded() {
    let test = TestHost::new("lync");
    test.accept_calls(calls::INBOUND_MESSAGE);
    let host = test.host();
    assert_eq!(host.inbound(&message()).await, Ok(true));

    // Over 4 KiB, ending inside a multi-byte character: cut at the character before.
    let long = Inbound {
        user: "sip:bob@contoso.com".into(),
        text: format!("{}é", "a".repeat(MAX_INBOUND_TEXT_BYTES - 1)),
        conversation: "c".repeat(MAX_CONVERSATION_BYTES),
        ..Default::default()
    };
    assert_eq!(host.inbound(&long).await, Ok(true));

    let calls = test.calls();
    assert_eq!(calls.len(), 2);
    let (name, args) = &calls[0];
    assert_eq!(name, calls::INBOUND_MESSAGE);
    let want: Args = [
        ("user", "sip:alice@contoso.com"),
        ("text", "ack 42"),
        ("conversation", "conv-1"),
        ("name", "Alice Example"),
        ("id", "m-7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(args, &want);
    let long_args = &calls[1].1;
    assert_eq!(long_args["text"], "a".repeat(MAX_INBOUND_TEXT_BYTES - 1));
    assert!(!long_args.contains_key("name") && !long_args.contains_key("id"));
    assert_eq!(test.inbound_messages().len(), 2);
    assert_eq!(test.inbound_messages()[0].user, "sip:alice@contoso.com");
}

#[tokio::test]
async fn a_host_without_incidents_is_ok_false_and_refusals_keep_their_kind() {
    let test = TestHost::new("lync");
    let host = test.host();
    assert_eq!(host.inbound(&message()).await, Ok(false), "UNSUPPORTED");

    test.accept_calls(calls::INBOUND_MESSAGE);
    test.script_calls([Answer::Refuse(PluginError::new(
        ErrorKind::TRANSIENT,
        "store busy",
    ))]);
    let e = host.inbound(&message()).await.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::TRANSIENT, "store busy")
    );
    // Offered again, it is taken.
    assert_eq!(host.inbound(&message()).await, Ok(true));
}

#[tokio::test]
async fn unusable_messages_are_refused_before_the_host_sees_them() {
    let test = TestHost::new("lync");
    test.accept_calls(calls::INBOUND_MESSAGE);
    let host = test.host();
    let cases = [
        (
            Inbound {
                user: "  ".into(),
                ..message()
            },
            "inbound message: no sender",
        ),
        (
            Inbound {
                user: "sip:a b@x".into(),
                ..message()
            },
            "inbound message: the sender \"sip:a b@x\" is not a SIP URI",
        ),
        (
            Inbound {
                conversation: String::new(),
                ..message()
            },
            "inbound message: no conversation reference",
        ),
        (
            Inbound {
                conversation: "c".repeat(MAX_CONVERSATION_BYTES + 1),
                ..message()
            },
            "inbound message: the conversation reference is 513 bytes, more than 512",
        ),
    ];
    for (m, want) in cases {
        let e = host.inbound(&m).await.unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::PERMANENT, want));
    }
    assert!(test.calls().is_empty(), "nothing reached the host");
}

/// A host that knows `inbound.message/1` but answers it without `recorded=1`.
#[derive(Clone)]
struct Forgetful;

impl HostFfi for Forgetful {
    fn submit(&self, _: FfiAlert) -> FfiFuture<RResult<Receipt, FfiError>> {
        async { ROk(Receipt::default()) }.into_ffi()
    }
    fn log(&self, _: LogRecord) {}
    fn max_log_level(&self) -> LogLevel {
        LogLevel::OFF
    }
    fn instance_name(&self) -> RString {
        "forgetful".into()
    }
    fn call(&self, _: RStr<'_>, _: FfiPairs) -> FfiFuture<RResult<FfiPairs, FfiError>> {
        async { ROk(FfiPairs::new()) }.into_ffi()
    }
}

#[tokio::test]
async fn an_answer_without_recorded_is_not_a_record() {
    let host = Host::new(HostFfi_TO::from_ptr(RArc::new(Forgetful), TD_Opaque));
    let e = host.inbound(&message()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TRANSIENT, "kept and offered again: {e}");
}

/// A sink with the typed hook: answers in `conversation`, or in a new one when it is `gone`
/// or empty; fails transiently for user `sip:down@x`.
struct Typed;

impl Sink for Typed {
    async fn presence(&self, _: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        Ok(Vec::new())
    }
    async fn deliver(&self, _: Message) -> Result<Vec<RecipientResult>, PluginError> {
        Ok(Vec::new())
    }
    async fn send_in_conversation(
        &self,
        conversation: &str,
        user: &str,
        text: &str,
    ) -> Result<String, PluginError> {
        if user == "sip:down@x" {
            return Err(PluginError::new(ErrorKind::TRANSIENT, "signed out"));
        }
        Ok(match conversation {
            "" | "gone" => format!("new-for-{user}-{}", text.len()),
            c => c.to_owned(),
        })
    }
}

/// A sink written before the typed hook: it answers `conversation.send/1` in `call`.
struct Legacy;

impl Sink for Legacy {
    async fn presence(&self, _: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        Ok(Vec::new())
    }
    async fn deliver(&self, _: Message) -> Result<Vec<RecipientResult>, PluginError> {
        Ok(Vec::new())
    }
    async fn call(&self, name: &str, args: Args) -> Result<Args, PluginError> {
        match name {
            calls::CONVERSATION_SEND => Ok(Args::from([(
                "conversation".to_owned(),
                format!("legacy-{}", args["conversation"]),
            )])),
            _ => Err(unsupported(name)),
        }
    }
}

/// A sink that hears nothing.
struct Deaf;

impl Sink for Deaf {
    async fn presence(&self, _: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        Ok(Vec::new())
    }
    async fn deliver(&self, _: Message) -> Result<Vec<RecipientResult>, PluginError> {
        Ok(Vec::new())
    }
}

fn setup() -> Setup {
    Setup {
        instance: "lync".into(),
        kind: "test".into(),
        config_toml: String::new(),
        host: TestHost::new("lync").host(),
    }
}

/// Calls `conversation.send/1` through the boundary, from a runtime of the caller's own.
fn send(sink: &SinkBox, pairs: &[(&str, &str)]) -> Result<Args, PluginError> {
    let args: Args = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(sink.call(RStr::from_str(calls::CONVERSATION_SEND), to_pairs(&args)))
        .into_result()
        .map(|p| from_pairs(&p))
        .map_err(PluginError::from)
}

#[test]
fn conversation_send_reaches_the_typed_hook_with_checked_arguments() {
    let sink = sink_box(setup(), |_| Ok(Typed)).unwrap();
    assert!(sink.start().is_ok());
    let user = ("user", "sip:bob@x");
    let answer = send(&sink, &[("conversation", "c-9"), user, ("text", "hi")]).unwrap();
    assert_eq!(answer["conversation"], "c-9");
    let answer = send(&sink, &[("conversation", "gone"), user, ("text", "hi")]).unwrap();
    assert_eq!(answer["conversation"], "new-for-sip:bob@x-2");
    let answer = send(&sink, &[user, ("text", "")]).unwrap();
    assert_eq!(
        answer["conversation"], "new-for-sip:bob@x-0",
        "no reference: new"
    );

    let e = send(&sink, &[("conversation", "c-9"), ("text", "hi")]).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::PERMANENT,
            "conversation.send/1: missing argument `user`"
        )
    );
    let e = send(&sink, &[("conversation", "c-9"), user]).unwrap_err();
    assert_eq!(e.message, "conversation.send/1: missing argument `text`");
    let e = send(&sink, &[("user", "sip:down@x"), ("text", "hi")]).unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (ErrorKind::TRANSIENT, "signed out")
    );
    assert!(sink.stop(1000).is_ok());
}

#[test]
fn a_sink_answering_in_call_still_gets_it_and_a_deaf_one_is_unsupported() {
    let legacy = sink_box(setup(), |_| Ok(Legacy)).unwrap();
    assert!(legacy.start().is_ok());
    let answer = send(
        &legacy,
        &[("conversation", "c-1"), ("user", "sip:a@x"), ("text", "t")],
    )
    .unwrap();
    assert_eq!(answer["conversation"], "legacy-c-1");
    assert!(legacy.stop(1000).is_ok());

    let deaf = sink_box(setup(), |_| Ok(Deaf)).unwrap();
    assert!(deaf.start().is_ok());
    let e = send(
        &deaf,
        &[("conversation", "c-1"), ("user", "sip:a@x"), ("text", "t")],
    )
    .unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (
            ErrorKind::UNSUPPORTED,
            "`conversation.send/1` is not supported here"
        )
    );
    assert!(deaf.stop(1000).is_ok());
}
