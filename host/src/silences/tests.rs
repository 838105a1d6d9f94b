//! Silences: matching in the route vocabulary, expiry by the clock and early, validation with
//! clear errors and bounds, the limit, durability in the redb file, pruning.

use std::sync::Arc;

use alertbridge_plugin_api::{Alert, Severity};
use serde_json::json;

use super::*;
use crate::model::StoredAlert;

const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn alert(source: &str, subject: &str, severity: Severity, labels: &[(&str, &str)]) -> StoredAlert {
    let mut a = Alert::new(subject);
    a.severity = severity;
    for (k, v) in labels {
        a.labels.insert((*k).into(), (*v).into());
    }
    StoredAlert::new(1, source, a, T0)
}

fn req(v: serde_json::Value) -> NewSilence {
    serde_json::from_value(v).expect("a request")
}

fn new(matchers: serde_json::Value, duration: &str) -> NewSilence {
    req(
        json!({"matchers": matchers, "duration": duration, "author": "alice", "comment": "maintenance"}),
    )
}

fn refused(r: &NewSilence) -> String {
    r.check(T0).unwrap_err().to_string()
}

#[test]
fn matchers_use_the_route_vocabulary() {
    let r = new(
        json!({"source": "monitoring", "severity": ">=high", "labels": {"cluster": "eu-1"},
               "labels_regex": {"host": "^web\\d+$"}, "subject": "(?i)cpu"}),
        "2h",
    );
    let (_, m) = r.check(T0).unwrap();
    let hit = alert(
        "monitoring",
        "High CPU",
        Severity::CRITICAL,
        &[("cluster", "eu-1"), ("host", "web01")],
    );
    assert!(m.matches(&hit));
    for miss in [
        alert(
            "mail",
            "High CPU",
            Severity::CRITICAL,
            &[("cluster", "eu-1"), ("host", "web01")],
        ),
        alert(
            "monitoring",
            "High CPU",
            Severity::NORMAL,
            &[("cluster", "eu-1"), ("host", "web01")],
        ),
        alert(
            "monitoring",
            "High CPU",
            Severity::HIGH,
            &[("cluster", "us-1"), ("host", "web01")],
        ),
        alert(
            "monitoring",
            "High CPU",
            Severity::HIGH,
            &[("cluster", "eu-1"), ("host", "db01")],
        ),
        alert(
            "monitoring",
            "Disk full",
            Severity::HIGH,
            &[("cluster", "eu-1"), ("host", "web01")],
        ),
        alert(
            "monitoring",
            "High CPU",
            Severity::HIGH,
            &[("host", "web01")],
        ),
    ] {
        assert!(!m.matches(&miss), "{:?}", miss.alert);
    }
    assert_eq!(
        m.describe(),
        "source monitoring, severity >= high, cluster = eu-1, host ~ /^web\\d+$/, subject ~ /(?i)cpu/"
    );
    // A list of sources, as in a route.
    let (_, m) = new(json!({"source": ["a", "b"]}), "1h").check(T0).unwrap();
    assert!(m.matches(&alert("b", "x", Severity::LOW, &[])));
    assert!(!m.matches(&alert("c", "x", Severity::LOW, &[])));
}

#[test]
fn times_durations_and_bounds() {
    let (s, _) = new(json!({"labels": {"a": "b"}}), "1h30m")
        .check(T0)
        .unwrap();
    assert_eq!(
        (s.starts_ms, s.ends_ms, s.created_ms),
        (T0, T0 + 90 * MIN, T0)
    );
    assert_eq!(parse_duration("2h"), Ok(2 * 60 * MIN));
    assert_eq!(parse_duration(" 1d 2h "), Ok(26 * 60 * MIN));
    assert_eq!(parse_duration("45s"), Ok(45_000));
    assert_eq!(parse_duration("1W"), Ok(7 * 24 * 60 * MIN));
    for (bad, why) in [
        ("", "empty duration"),
        ("2", "a unit (s, m, h, d, w) goes after each number"),
        ("h", "a number goes before each unit"),
        ("2x", "units are s, m, h, d, w"),
        ("0m", "is zero"),
        ("400d", "longer than a year"),
        ("99999999999999999999h", "a number goes before each unit"),
    ] {
        let e = parse_duration(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
    // Absolute times; a start in the past counts as now.
    let mut r = new(json!({"severity": "critical"}), "1h");
    r.duration = None;
    r.starts_at = Some("2027-01-15T08:00:00Z".into());
    r.ends_at = Some("2027-01-15T10:00:00Z".into());
    let (s, _) = r.check(T0).unwrap();
    assert_eq!(s.ends_ms - s.starts_ms, 2 * 60 * MIN);
    assert_eq!(s.state(s.starts_ms - 1), SilenceState::Pending);
    assert_eq!(s.state(s.starts_ms), SilenceState::Active);
    assert_eq!(s.state(s.ends_ms), SilenceState::Expired);
    r.starts_at = Some("2020-01-01T00:00:00Z".into());
    assert_eq!(r.check(T0).unwrap().0.starts_ms, T0);

    for (change, message) in [
        (
            json!({"duration": "1h", "ends_at": "2027-01-15T10:00:00Z"}),
            "duration: give ends_at or duration, not both",
        ),
        (
            json!({}),
            "ends_at: required: give ends_at (RFC 3339) or duration (e.g. 2h)",
        ),
        (
            json!({"ends_at": "2020-01-01T00:00:00Z"}),
            "ends_at: already past: a silence must end in the future",
        ),
        (
            json!({"starts_at": "2027-01-15T10:00:00Z", "ends_at": "2027-01-15T09:00:00Z"}),
            "ends_at: not after starts_at",
        ),
        (
            json!({"ends_at": "tomorrow"}),
            "ends_at: \"tomorrow\" is not an RFC 3339 timestamp",
        ),
        (
            json!({"starts_at": "2099-01-01T00:00:00Z", "duration": "1h"}),
            "starts_at: more than a year ahead",
        ),
        (
            json!({"duration": "1h", "ends_at": null, "starts_at": "x".repeat(500)}),
            "starts_at: not an RFC 3339 timestamp (too long)",
        ),
        (
            json!({"ends_at": "2099-01-01T00:00:00Z"}),
            "ends_at: the silence would last more than a year",
        ),
    ] {
        let mut v = json!({"matchers": {"severity": "critical"}, "author": "a", "comment": "c"});
        for (k, x) in change.as_object().unwrap() {
            v[k] = x.clone();
        }
        let e = refused(&req(v));
        assert!(e.starts_with(message), "{e} (wanted {message})");
    }
}

#[test]
fn every_field_is_checked_and_bounded() {
    let long = "x".repeat(5000);
    for (matchers, author, comment, message) in [
        (json!({}), "a", "c", "matchers: no condition"),
        (
            json!({"severity": ">=urgent"}),
            "a",
            "c",
            "matchers.severity: unknown severity",
        ),
        (
            json!({"subject": "("}),
            "a",
            "c",
            "matchers.subject: invalid regex",
        ),
        (
            json!({"labels_regex": {"host": "a{100000}{100000}"}}),
            "a",
            "c",
            "matchers.labels_regex.host: invalid regex",
        ),
        (
            json!({"labels": {"": "x"}}),
            "a",
            "c",
            "matchers.labels: a name is empty",
        ),
        (
            json!({"labels": {"bad name": "x"}}),
            "a",
            "c",
            "matchers.labels: a name contains a control or space",
        ),
        (
            json!({"labels": {"host": long}}),
            "a",
            "c",
            "matchers.labels.host: longer than 1024 bytes",
        ),
        (
            json!({"source": ["a\u{1b}[2J"]}),
            "a",
            "c",
            "matchers.source: a name contains a control",
        ),
        (json!({"labels": {"a": "b"}}), " ", "c", "author: required"),
        (json!({"labels": {"a": "b"}}), "a", "", "comment: required"),
        (
            json!({"labels": {"a": "b"}}),
            &long,
            "c",
            "author: longer than 128 bytes",
        ),
        (
            json!({"labels": {"a": "b"}}),
            "a\nb",
            "c",
            "author: contains a control character",
        ),
        (
            json!({"labels": {"a": "b"}}),
            "a",
            &long,
            "comment: longer than 2048 bytes",
        ),
    ] {
        let r = req(
            json!({"matchers": matchers, "duration": "1h", "author": author, "comment": comment}),
        );
        let e = refused(&r);
        assert!(e.starts_with(message), "{e} (wanted {message})");
    }
    let many: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("l{i}"), json!("v"))).collect();
    let e = refused(&new(json!({ "labels": many }), "1h"));
    assert_eq!(e, "matchers.labels: 33 entries; at most 32");
    let patterns: serde_json::Map<String, serde_json::Value> =
        (0..9).map(|i| (format!("l{i}"), json!("^x"))).collect();
    let e = refused(&new(json!({ "labels_regex": patterns }), "1h"));
    assert_eq!(e, "matchers.labels_regex: 9 entries; at most 8");
    let big: serde_json::Map<String, serde_json::Value> = (0..9)
        .map(|i| (format!("l{i}"), json!("v".repeat(1000))))
        .collect();
    let e = refused(&new(json!({ "labels": big }), "1h"));
    assert_eq!(e, "matchers: 9018 bytes in all; at most 8192");
    // Unknown keys are refused, not ignored (a typo would silence more than meant).
    let e = serde_json::from_value::<NewSilence>(
        json!({"matchers": {"label": {"a": "b"}}, "duration": "1h", "author": "a", "comment": "c"}),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `label`"), "{e}");
    // A multi-line comment is fine.
    assert!(
        req(json!({"matchers": {"severity": "low"}, "duration": "1h", "author": "a", "comment": "line 1\nline 2"}))
            .check(T0)
            .is_ok()
    );
}

#[tokio::test]
async fn active_silences_match_until_they_expire_on_their_own_or_early() {
    let store = MemorySilences::default();
    let silences = Silences::open(Arc::new(store.clone())).unwrap();
    let db = alert(
        "monitoring",
        "Disk full",
        Severity::HIGH,
        &[("host", "db01")],
    );
    let web = alert(
        "monitoring",
        "Disk full",
        Severity::HIGH,
        &[("host", "web01")],
    );
    let mut later = new(json!({"labels": {"host": "db01"}}), "10m");
    later.starts_at = Some(alertbridge_plugin_api::kit::format::unix_ms_rfc3339(
        T0 + 5 * MIN,
    ));
    let pending = silences.create(&later, T0).await.unwrap();
    let short = silences
        .create(&new(json!({"labels": {"host": "db01"}}), "2m"), T0)
        .await
        .unwrap();
    assert_eq!((pending.id, short.id), (1, 2));
    assert_eq!(silences.silencing(&web, T0), None);
    assert_eq!(
        silences.silencing(&db, T0),
        Some(Silenced {
            id: 2,
            ends_ms: T0 + 2 * MIN
        })
    );
    // Between the short one's end and the pending one's start: nothing.
    assert_eq!(silences.silencing(&db, T0 + 3 * MIN), None);
    // The pending one starts; of two active, the one that ends last is named.
    let long = silences
        .create(&new(json!({"source": "monitoring"}), "1h"), T0 + 5 * MIN)
        .await
        .unwrap();
    assert_eq!(
        silences.silencing(&db, T0 + 6 * MIN).map(|s| s.id),
        Some(long.id)
    );
    assert_eq!(
        silences.silencing(&web, T0 + 6 * MIN).map(|s| s.id),
        Some(long.id)
    );
    // Expired early: gone at once, recorded, and cannot be expired twice.
    let gone = silences.expire(long.id, T0 + 7 * MIN).await.unwrap();
    assert_eq!(
        (gone.ends_ms, gone.expired_ms),
        (T0 + 7 * MIN, Some(T0 + 7 * MIN))
    );
    assert_eq!(
        silences.silencing(&db, T0 + 7 * MIN).map(|s| s.id),
        Some(pending.id)
    );
    assert_eq!(silences.silencing(&web, T0 + 7 * MIN), None);
    assert!(matches!(
        silences.expire(long.id, T0 + 8 * MIN).await,
        Err(SilenceError::AlreadyExpired(3))
    ));
    assert!(matches!(
        silences.expire(99, T0).await,
        Err(SilenceError::Unknown(99))
    ));
    // A restart (a new registry on the same store) keeps every one, with its state.
    let again = Silences::open(Arc::new(store)).unwrap();
    assert_eq!(again.list(), silences.list());
    assert_eq!(
        again.list().iter().map(|s| s.id).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert_eq!(
        again.silencing(&db, T0 + 7 * MIN).map(|s| s.id),
        Some(pending.id)
    );
}

#[tokio::test]
async fn at_most_max_silences_live_and_expired_ones_are_pruned() {
    let silences = Silences::open(Arc::new(MemorySilences::default())).unwrap();
    let r = new(json!({"labels": {"a": "b"}}), "1h");
    for _ in 0..MAX_SILENCES {
        silences.create(&r, T0).await.unwrap();
    }
    let e = silences.create(&r, T0).await.unwrap_err();
    assert!(
        matches!(
            e,
            SilenceError::TooMany {
                limit: MAX_SILENCES
            }
        ),
        "{e}"
    );
    silences.expire(1, T0 + 1).await.unwrap();
    let made = silences.create(&r, T0 + 2).await.unwrap();
    assert_eq!(made.id, MAX_SILENCES as u64 + 1, "ids are never reused");
    // Expired for less than KEEP_EXPIRED_MS: kept; after: pruned.
    let after_end = T0 + 60 * MIN;
    assert_eq!(silences.prune(after_end + 1).await.unwrap(), 0);
    assert_eq!(silences.list().len(), MAX_SILENCES + 1);
    assert_eq!(
        silences
            .prune(after_end + KEEP_EXPIRED_MS + MIN)
            .await
            .unwrap(),
        MAX_SILENCES + 1
    );
    assert!(silences.list().is_empty());
}

#[tokio::test]
async fn the_redb_store_keeps_silences_and_ids_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let r = new(json!({"labels": {"host": "db01"}}), "1h");
    {
        let silences = Silences::open(Arc::new(RedbSilences::open(dir.path()).unwrap())).unwrap();
        for _ in 0..3 {
            silences.create(&r, T0).await.unwrap();
        }
        silences.expire(2, T0 + MIN).await.unwrap();
        silences.expire(3, T0 + MIN).await.unwrap();
        assert_eq!(
            silences
                .prune(T0 + MIN + KEEP_EXPIRED_MS + 1)
                .await
                .unwrap(),
            2
        );
    }
    let store = RedbSilences::open(dir.path()).unwrap();
    assert_eq!(store.path(), dir.path().join("silences.redb"));
    let silences = Silences::open(Arc::new(store)).unwrap();
    let listed = silences.list();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].author.as_str()), (1, "alice"));
    assert_eq!(listed[0].matchers.labels["host"], "db01");
    let next = silences.create(&r, T0 + 2 * MIN).await.unwrap();
    assert_eq!(next.id, 4, "pruned ids are not given again");
}

#[test]
fn alerts_like_one_are_its_labels_or_its_source_and_exact_subject() {
    let labelled = alert(
        "monitoring",
        "Disk full",
        Severity::HIGH,
        &[("host", "db01")],
    );
    let spec = like::like(&labelled);
    assert_eq!(
        spec,
        MatcherSpec {
            labels: [("host".to_string(), "db01".to_string())].into(),
            ..MatcherSpec::default()
        }
    );
    let bare = alert("helpdesk-mail", "Disk (var) full?", Severity::LOW, &[]);
    let m = like::like(&bare).compile().unwrap();
    assert_eq!(
        m.describe(),
        "source helpdesk-mail, subject ~ /^Disk \\(var\\) full\\?$/"
    );
    assert!(m.matches(&bare));
    assert!(!m.matches(&alert(
        "helpdesk-mail",
        "Disk (var) full? again",
        Severity::LOW,
        &[]
    )));
    assert!(!m.matches(&alert("monitoring", "Disk (var) full?", Severity::LOW, &[])));
}

#[tokio::test]
async fn a_shared_store_shows_other_hosts_silences_on_refresh() {
    let store = MemorySilences::shared();
    assert!(store.shared() && !MemorySilences::default().shared());
    let a = Silences::open(Arc::new(store.clone())).unwrap();
    let b = Silences::open(Arc::new(store)).unwrap();
    let db = alert(
        "monitoring",
        "Disk full",
        Severity::HIGH,
        &[("host", "db01")],
    );
    let made = a
        .create(&new(json!({"labels": {"host": "db01"}}), "1h"), T0)
        .await
        .unwrap();
    assert_eq!(b.silencing(&db, T0), None, "not seen before a refresh");
    b.refresh().await.unwrap();
    assert_eq!(b.silencing(&db, T0).map(|s| s.id), Some(made.id));
    b.expire(made.id, T0 + MIN).await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(a.silencing(&db, T0 + MIN), None);
    assert_eq!(a.get(made.id).unwrap().expired_ms, Some(T0 + MIN));
}

#[tokio::test]
async fn patterns_of_live_silences_have_a_budget() {
    let silences = Silences::open(Arc::new(MemorySilences::default())).unwrap();
    let patterns: serde_json::Map<String, serde_json::Value> =
        (0..8).map(|i| (format!("l{i}"), json!("^x"))).collect();
    let ten = new(
        json!({"labels_regex": patterns, "subject": "a", "body": "b"}),
        "1h",
    );
    assert_eq!(ten.matchers.patterns(), 10);
    for _ in 0..MAX_LIVE_PATTERNS / 10 {
        silences.create(&ten, T0).await.unwrap();
    }
    let e = silences.create(&ten, T0).await.unwrap_err();
    assert!(
        matches!(
            e,
            SilenceError::TooManyPatterns {
                live: 1000,
                more: 10,
                limit: 1000
            }
        ),
        "{e}"
    );
    // Exact labels cost no pattern; an expired silence's patterns are free again.
    silences
        .create(&new(json!({"labels": {"a": "b"}}), "1h"), T0)
        .await
        .unwrap();
    silences.expire(1, T0 + 1).await.unwrap();
    silences.create(&ten, T0 + 2).await.unwrap();
}
