//! Tests of the pure protocol mappings, over documents as the bridge writes them.

use alertbridge_plugin_api::{DeliveryStatus, Message, PresenceState, Severity};

use super::*;

fn doc(json: &str) -> RecipientDoc {
    serde_json::from_str(json).expect("recipient document")
}

fn message() -> Message {
    Message {
        alert_id: 42,
        attempt: 1,
        source: "monitoring".into(),
        subject: "Disk full on db01".into(),
        body: "/var is at 98%\n".into(),
        severity: Severity::CRITICAL,
        recipients: vec!["sip:alice@contoso.com".into()],
        ..Message::default()
    }
}

#[test]
fn each_recipient_outcome_maps_to_a_delivery_status() {
    let cases = [
        (
            r#"{"to":"u","status":"delivered","sip_status":200}"#,
            DeliveryStatus::DELIVERED,
            "",
        ),
        (
            r#"{"to":"u","status":"sent"}"#,
            DeliveryStatus::DELIVERED,
            "page mode: sent, receipt not confirmed",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"unavailable","sip_status":480,"reason":"Temporarily Unavailable","retryable":true}}"#,
            DeliveryStatus::OFFLINE,
            "480 Temporarily Unavailable (unavailable)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"busy","sip_status":486,"reason":"Busy Here","retryable":true}}"#,
            DeliveryStatus::FAILED_TRANSIENT,
            "486 Busy Here (busy)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"declined","sip_status":603,"reason":"Decline","retryable":false}}"#,
            DeliveryStatus::DECLINED,
            "603 Decline (declined)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"not_found","sip_status":404,"reason":"Not Found","retryable":false}}"#,
            DeliveryStatus::NOT_FOUND,
            "404 Not Found (not_found)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"timeout","sip_status":408,"reason":"Request Timeout","retryable":true}}"#,
            DeliveryStatus::FAILED_TRANSIENT,
            "408 Request Timeout (timeout)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"forbidden","sip_status":403,"reason":"Forbidden","retryable":false}}"#,
            DeliveryStatus::FAILED_PERMANENT,
            "403 Forbidden (forbidden)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"invalid_uri","reason":"bad","retryable":false}}"#,
            DeliveryStatus::FAILED_PERMANENT,
            "bad (invalid_uri)",
        ),
        (
            r#"{"to":"u","status":"skipped","error":{"code":"skipped_presence","reason":"recipient is Offline","retryable":false}}"#,
            DeliveryStatus::OFFLINE,
            "skipped by the bridge: recipient is Offline (skipped_presence)",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"new_thing","retryable":true}}"#,
            DeliveryStatus::FAILED_TRANSIENT,
            "new_thing",
        ),
        (
            r#"{"to":"u","status":"failed","error":{"code":"new_thing","retryable":false}}"#,
            DeliveryStatus::FAILED_PERMANENT,
            "new_thing",
        ),
    ];
    for (json, status, detail) in cases {
        let r = recipient_result(&doc(json));
        assert_eq!(
            (r.status, r.detail.as_str()),
            (status, detail),
            "for {json}"
        );
    }
    let pending = recipient_result(&doc(r#"{"to":"u","status":"pending"}"#));
    assert_eq!(
        (pending.status, pending.retry_after),
        (DeliveryStatus::FAILED_TRANSIENT, Some(PENDING_RETRY))
    );
}

#[test]
fn presence_maps_by_name_and_else_by_range() {
    assert_eq!(presence_state("Online", 3500), PresenceState::AVAILABLE);
    assert_eq!(presence_state("IdleOnline", 5000), PresenceState::AVAILABLE);
    assert_eq!(presence_state("BeRightBack", 12500), PresenceState::AWAY);
    assert_eq!(presence_state("Busy", 6500), PresenceState::BUSY);
    assert_eq!(
        presence_state("DoNotDisturb", 9500),
        PresenceState::DO_NOT_DISTURB
    );
    assert_eq!(presence_state("Offline", 18000), PresenceState::OFFLINE);
    assert_eq!(presence_state("Unknown", -1), PresenceState::UNKNOWN);
    // A name this version does not know: the value decides, by range.
    assert_eq!(presence_state("InACall", 6600), PresenceState::BUSY);
    assert_eq!(presence_state("", 3000), PresenceState::AVAILABLE);
    assert_eq!(presence_state("", 5000), PresenceState::AVAILABLE);
    assert_eq!(presence_state("", 15500), PresenceState::AWAY);
    assert_eq!(presence_state("", 18500), PresenceState::OFFLINE);
    assert_eq!(presence_state("", -1), PresenceState::UNKNOWN);
}

#[test]
fn idempotency_key_ignores_the_attempt_but_not_the_content() {
    let to = vec!["sip:alice@contoso.com".to_owned()];
    let first = message();
    let key = idempotency_key("ocs", &first, &to);
    assert!(key.starts_with("ab1-") && key.len() == 36, "{key}");
    let retry = Message {
        attempt: 7,
        ..message()
    };
    assert_eq!(idempotency_key("ocs", &retry, &to), key);
    let reused_id = Message {
        subject: "Other alert".into(),
        ..message()
    };
    assert_ne!(idempotency_key("ocs", &reused_id, &to), key);
    assert_ne!(idempotency_key("lync", &first, &to), key);
    assert_ne!(
        idempotency_key("ocs", &first, &["sip:bob@contoso.com".to_owned()]),
        key
    );
}

#[test]
fn idempotency_key_rests_on_the_alert_uid_not_the_queue_id() {
    let to = vec!["sip:alice@contoso.com".to_owned()];
    let with_uid = |uid: &str, id: u64| {
        let mut m = message();
        m.alert_id = id;
        m.attributes.insert("alert_uid".into(), uid.into());
        m
    };
    // The same alert id in a new data directory (or on another host) is another alert.
    assert_ne!(
        idempotency_key("ocs", &with_uid("aaaa", 1), &to),
        idempotency_key("ocs", &with_uid("bbbb", 1), &to)
    );
    // The same alert is the same send, whatever its queue id.
    assert_eq!(
        idempotency_key("ocs", &with_uid("aaaa", 1), &to),
        idempotency_key("ocs", &with_uid("aaaa", 9), &to)
    );
}

#[test]
fn send_body_is_the_same_bytes_on_every_attempt() {
    let to = vec!["sip:alice@contoso.com".to_owned()];
    let first = message();
    let retry = Message {
        attempt: 2,
        ..message()
    };
    let a = serde_json::to_string(&SendBody::new(&first, &to, "session", 30_000)).expect("json");
    let b = serde_json::to_vec(&SendBody::new(&retry, &to, "session", 30_000)).expect("json");
    assert_eq!(a.as_bytes(), b.as_slice());
    assert_eq!(
        a,
        r#"{"to":["sip:alice@contoso.com"],"subject":"Disk full on db01","importance":"urgent","content_type":"text/plain","body":"Disk full on db01\n/var is at 98%","toast":"Disk full on db01","mode":"session","timeout_ms":30000,"wait":true}"#
    );
}

#[test]
fn long_bodies_are_cut_on_a_character_boundary_and_marked() {
    let long = "é".repeat(MAX_BODY_BYTES);
    let cut = truncate_bytes(long.clone(), MAX_BODY_BYTES - 1);
    assert!(cut.len() < MAX_BODY_BYTES && cut.chars().all(|c| c == 'é'));
    let marked = mark_cut_bytes(long, MAX_BODY_BYTES);
    assert!(marked.len() <= MAX_BODY_BYTES, "{}", marked.len());
    assert!(marked.ends_with("é\n[truncated]"));
    assert_eq!(mark_cut_bytes("short".into(), MAX_BODY_BYTES), "short");
}

#[test]
fn toasts_count_utf16_code_units_and_are_marked_when_cut() {
    let fits = "a".repeat(MAX_TOAST_UTF16);
    assert_eq!(toast(&fits), fits);
    // 200 emoji are 200 chars but 400 UTF-16 code units, as a .NET bridge counts them.
    let emoji = "\u{1F525}".repeat(200);
    let t = toast(&emoji);
    assert_eq!(t.encode_utf16().count(), 255, "127 pairs and the mark");
    assert!(t.ends_with('\u{2026}') && t.starts_with('\u{1F525}'));
    assert_eq!(t.chars().filter(|c| *c == '\u{1F525}').count(), 127);
}

#[test]
fn text_from_the_bridge_is_clipped() {
    let reason = "x".repeat(10_000);
    let e = WireError {
        code: "busy".into(),
        sip_status: Some(486),
        reason,
        retryable: true,
    };
    let d = describe(&e);
    assert!(d.chars().count() < 320, "{}", d.len());
    assert!(
        d.starts_with("486 xxx") && d.ends_with("\u{2026} (busy)"),
        "{d}"
    );
}

#[test]
fn signature_matches_the_bridge_side() {
    // Computed independently with Python's hmac module over the string to sign of §2.3 (v2).
    let send = signature(
        b"0123456789abcdef",
        1_796_119_200,
        &Signed {
            method: "POST",
            path_and_query: "/v1/messages",
            idempotency_key: "ab1-0123456789abcdef0123456789abcdef",
            body: b"{}",
        },
    );
    assert_eq!(
        send,
        "v2=fcbd5b44bd735d66d5ac77df85c9d8dc64a4694aab7e672f6eab5c50ad57439d"
    );
    let health = signature(
        b"0123456789abcdef",
        1_796_119_200,
        &Signed {
            method: "GET",
            path_and_query: "/v1/health",
            idempotency_key: "",
            body: b"",
        },
    );
    assert_eq!(
        health,
        "v2=63fcebc85688d1441173e71bac0e9a61e0dd85f3baa3a3002819d91de4562bb5"
    );
}
