//! Through real sockets (HTTP/1.1): every answer of the API, both alert formats and the
//! captured Alertmanager payload.

mod common;

use std::time::Duration;

use alertbridge_plugin_api::{AlertStatus, Severity};
use common::{TOKEN, client, start};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

const SAMPLE: &str = include_str!("fixtures/alertmanager-0.25-sample.json");

async fn post(
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = client()
        .post(url)
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("response");
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_xml_alerts_are_taken_with_202() {
    let s = start("").await;
    let body = r#"{"subject": "Disk full on db01", "body": "/var is at 98%", "severity": "critical",
 "recipients": {"groups": ["ops"], "users": ["sip:carol@contoso.com"]},
 "labels": {"host": "db01"}, "dedup_key": "db01-disk", "expires": "2026-12-01T10:00:00Z"}"#;
    let (status, _, v) = post(&s.url("/api/v1/alerts"), "application/json", body).await;
    assert_eq!(
        (status, v),
        (
            StatusCode::ACCEPTED,
            json!({"ids": [1], "duplicates": [], "ignored": []})
        )
    );
    let xml = r#"<alerts xmlns="urn:alertbridge:alert:1"><alert><subject>Disk full on db01</subject><dedup-key>db01-disk</dedup-key></alert>
<alert><subject>Backup failed</subject><severity>high</severity><labels><label name="job">backup</label></labels></alert></alerts>"#;
    let (status, _, v) = post(&s.url("/api/v1/alerts"), "application/xml", xml).await;
    assert_eq!(
        (status, v),
        (
            StatusCode::ACCEPTED,
            json!({"ids": [1, 2], "duplicates": [1], "ignored": []})
        )
    );
    let accepted = s.host.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        (accepted[0].severity, accepted[0].groups.clone()),
        (Severity::CRITICAL, vec!["ops".to_owned()])
    );
    assert_eq!(accepted[1].subject, "Backup failed");
    assert_eq!(
        accepted[1].labels.get("job").map(String::as_str),
        Some("backup")
    );
    s.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_captured_alertmanager_payload_is_taken() {
    let s = start("[alertmanager]\nresolved = \"forward\"\n").await;
    let r = client()
        .post(s.url("/api/v1/alertmanager"))
        .bearer_auth(TOKEN)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "Alertmanager/0.25.0")
        .body(SAMPLE)
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"ids": [1, 2], "duplicates": [], "ignored": []})
    );
    let accepted = s.host.accepted();
    assert_eq!(accepted[0].subject, "Disk /var/lib/postgresql is 97% full");
    assert_eq!(
        accepted[0].dedup_key.as_deref(),
        Some("am:48560f432796ad7e:2026-11-29T14:19:23Z:firing")
    );
    assert_eq!(accepted[1].severity, Severity::INFO);
    s.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status() {
    let s = start("max_body_bytes = 2048\n").await;
    let url = s.url("/api/v1/alerts");
    // 401: no token, a wrong token, another scheme.
    let r = client()
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"subject\":\"a\"}")
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let r = client()
        .post(&url)
        .bearer_auth("wrong")
        .header(header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .post(&url)
        .basic_auth("u", Some(TOKEN))
        .body("{}")
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // 415
    let (status, _, v) = post(&url, "application/x-www-form-urlencoded", "subject=a").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("expected application/json or application/xml")),
        "{v}"
    );
    // 413, with a Content-Length and streamed without one.
    let big = format!("{{\"subject\":\"{}\"}}", "x".repeat(4096));
    let (status, _, v) = post(&url, "application/json", big.clone()).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("the body is larger than 2048 bytes")
        )
    );
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _, _) = post(&url, "application/json", reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // 400 with field, line and column, for JSON and XML.
    let (status, _, v) = post(
        &url,
        "application/json",
        "[{\"subject\":\"a\"},\n {\"subject\":\"b\",\"severity\":\"urgent\"}]",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"],
        "`[1].severity` at line 2 column 36: unknown severity \"urgent\", expected info, low, normal, high or critical"
    );
    let (status, _, v) = post(&url, "text/xml", "<alert>\n<subject>x</subjet>\n</alert>").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid XML at line 2 column 11:")),
        "{v}"
    );
    let (status, _, v) = post(
        &s.url("/api/v1/alertmanager"),
        "application/json",
        "{\"version\":\"4\",\"alerts\":[]}",
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("`alerts`: the notification holds no alert")
        )
    );
    // 503 + Retry-After on back-pressure; the ids say what was taken.
    s.host.refuse_next(1);
    let (status, headers, v) = post(
        &url,
        "application/json",
        "[{\"subject\":\"first\"},{\"subject\":\"second\"}]",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(
        (v["ids"].clone(), v["refused"].clone()),
        (json!([null, 1]), json!([0]))
    );
    assert_eq!(
        s.host
            .accepted()
            .iter()
            .map(|a| a.subject.as_str())
            .collect::<Vec<_>>(),
        ["second"]
    );
    // The healthz probe needs no token.
    let r = client()
        .get(s.url("/healthz"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    s.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_posts_all_get_their_own_id() {
    let s = start("").await;
    let c = client();
    let posts = (0..200).map(|i| {
        let (c, url) = (c.clone(), s.url("/api/v1/alerts"));
        async move {
            let r = c
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({"subject": format!("alert {i}")}))
                .send()
                .await
                .expect("response");
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            r.json::<Value>().await.expect("json")["ids"][0]
                .as_u64()
                .expect("id")
        }
    });
    let mut ids = futures_util::future::join_all(posts).await;
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(s.host.accepted().len(), 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.shutdown().await.expect("clean stop");
}

/// Issue 12 §5: an XML alert in ISO-8859-1 — named by the `charset` parameter, or only by its
/// XML declaration — is taken with its text intact instead of a 400; an unknown charset is a
/// 400 that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_in_iso_8859_1_is_taken() {
    let s = start("").await;
    let url = s.url("/api/v1/alerts");
    let by_charset =
        b"<alert xmlns=\"urn:alertbridge:alert:1\"><subject>Stau in K\xf6ln</subject></alert>";
    let (status, _, v) = post(&url, "application/xml; charset=iso-8859-1", &by_charset[..]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let by_declaration = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<alert><subject>Br\xfccke in K\xf6ln</subject></alert>";
    let (status, _, v) = post(&url, "text/xml", &by_declaration[..]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let subjects: Vec<String> = s.host.accepted().into_iter().map(|a| a.subject).collect();
    assert_eq!(subjects, ["Stau in Köln", "Brücke in Köln"]);
    let (status, _, v) = post(&url, "application/xml; charset=x-klingon", &by_charset[..]).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("unsupported charset \"x-klingon\"")
        )
    );
    s.shutdown().await.expect("clean stop");
}

/// One alert format for every reader (docs/alert-format.md): an empty group or user name is
/// refused with its place, in JSON and in XML, and nothing is submitted. Before, the webhook
/// took `"groups": [""]` and `<user/>` and queued an alert naming a recipient "".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_recipient_names_are_refused_in_both_forms() {
    let s = start("").await;
    let url = s.url("/api/v1/alerts");
    let (status, _, v) = post(
        &url,
        "application/json",
        "{\"subject\":\"a\",\n \"recipients\":{\"groups\":[\"ops\",\"\"]}}",
    )
    .await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("`recipients.groups` at line 2 column 35: group names must not be empty")
        )
    );
    let xml = "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>a</subject>\n<recipients><user> </user></recipients></alert>";
    let (status, _, v) = post(&url, "application/xml", xml).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("`user` at line 2 column 27: user names must not be empty")
        )
    );
    assert!(s.host.accepted().is_empty());
    s.shutdown().await.expect("clean stop");
}

/// A resolved alert in both forms (`"status": "resolved"`, `<status>resolved</status>`) is
/// handed on as resolved with the dedup key it names, after a firing one with that key: the
/// host gets two alerts, the second resolved. An unknown status is a 400 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolved_alerts_are_taken_in_json_and_xml() {
    let s = start("").await;
    let url = s.url("/api/v1/alerts");
    let bodies = [
        (
            "application/json",
            r#"{"subject":"Disk full","dedup_key":"db01-disk"}"#,
        ),
        (
            "application/json",
            r#"{"subject":"Disk ok","dedup_key":"db01-disk","status":"resolved"}"#,
        ),
        (
            "application/xml",
            "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>Load high</subject><dedup-key>db01-load</dedup-key></alert>",
        ),
        (
            "application/xml",
            "<alert xmlns=\"urn:alertbridge:alert:1\"><subject>Load ok</subject><status>resolved</status><dedup-key>db01-load</dedup-key></alert>",
        ),
    ];
    for (content_type, body) in bodies {
        let (status, _, v) = post(&url, content_type, body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}: {v}");
        assert_eq!(v["duplicates"], json!([]), "{body}: a resolve is no repeat");
    }
    let got: Vec<(String, Option<String>, AlertStatus)> = s
        .host
        .accepted()
        .into_iter()
        .map(|a| (a.subject.clone(), a.dedup_key.clone(), a.status()))
        .collect();
    let want = [
        ("Disk full", "db01-disk", AlertStatus::Firing),
        ("Disk ok", "db01-disk", AlertStatus::Resolved),
        ("Load high", "db01-load", AlertStatus::Firing),
        ("Load ok", "db01-load", AlertStatus::Resolved),
    ]
    .map(|(s, k, st)| (s.to_owned(), Some(k.to_owned()), st));
    assert_eq!(got, want);
    let (status, _, v) = post(&url, "application/json", r#"{"subject":"x","status":"ok"}"#).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some(
                "`status` at line 1 column 29: unknown status \"ok\", expected firing or resolved"
            )
        )
    );
    assert_eq!(s.host.accepted().len(), 4, "nothing more submitted");
    s.shutdown().await.expect("clean stop");
}
