//! Handler tests through `Api::call` (no socket): every refusal and the shape of the answers.

use alertbridge_plugin_api::testing::{Answer, TestHost};
use serde_json::json;

use super::*;
use crate::config::WebhookConfig;

const TOKEN: &str = "route-test-token";

fn app(host: &TestHost, extra: &str) -> Api {
    let tokens = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tokens.path(), format!("{TOKEN}\n")).expect("write tokens");
    let setup = alertbridge_plugin_api::kit::Setup {
        instance: "hook".into(),
        kind: "webhook".into(),
        config_toml: format!(
            "listen = \"127.0.0.1:0\"\ntokens_file = {:?}\n{extra}",
            tokens.path()
        ),
        host: host.host(),
    };
    let settings = setup
        .config::<WebhookConfig>()
        .and_then(WebhookConfig::validate)
        .expect("valid config");
    router(AppState::new(host.host(), settings))
}

fn post(path: &str, content_type: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

async fn call(
    app: Api,
    request: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = app.call(request).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, value)
}

#[tokio::test]
async fn accepted_alerts_get_ids_and_duplicates() {
    let host = TestHost::new("hook");
    let body = r#"[{"subject":"a","dedup_key":"k"},{"subject":"b"},{"subject":"a again","dedup_key":"k"}]"#;
    let (status, _, v) = call(
        app(&host, ""),
        post("/api/v1/alerts", "application/json", body),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        v,
        json!({"ids": [1, 2, 1], "duplicates": [1], "ignored": []})
    );
    assert_eq!(host.accepted().len(), 2);
}

#[tokio::test]
async fn refusals_before_any_submit() {
    let host = TestHost::new("hook");
    let mut no_token = post("/api/v1/alerts", "application/json", "{\"subject\":\"a\"}");
    no_token.headers_mut().remove(header::AUTHORIZATION);
    let (status, headers, _) = call(app(&host, ""), no_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers
            .get(header::WWW_AUTHENTICATE)
            .map(HeaderValue::as_bytes),
        Some(&b"Bearer"[..])
    );
    let mut wrong = post("/api/v1/alerts", "application/json", "{\"subject\":\"a\"}");
    wrong.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer nope"),
    );
    assert_eq!(
        call(app(&host, ""), wrong).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, _, v) = call(app(&host, ""), post("/api/v1/alerts", "text/plain", "x")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        v["error"],
        "unsupported content type \"text/plain\": expected application/json or application/xml"
    );
    let xml = "<alert><subject>x</subject></alert>";
    let (status, _, _) = call(
        app(&host, ""),
        post("/api/v1/alertmanager", "application/xml", xml),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (status, _, v) = call(
        app(&host, "max_body_bytes = 10\n"),
        post(
            "/api/v1/alerts",
            "application/json",
            "{\"subject\":\"abc\"}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["error"], "the body is larger than 10 bytes");

    let (status, _, v) = call(
        app(&host, ""),
        post(
            "/api/v1/alerts",
            "application/json; charset=utf-8",
            "{\"subject\":1}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["error"],
        "`subject` at line 1 column 12: invalid type: integer `1`, expected a string"
    );
    assert!(host.accepted().is_empty());
}

#[tokio::test]
async fn back_pressure_is_a_503_that_names_what_was_taken() {
    let host = TestHost::new("hook");
    host.script([
        Answer::Accept,
        Answer::Refuse(
            PluginError::transient(&std::io::Error::other("queue full"))
                .retry_after(Duration::from_millis(2500)),
        ),
    ]);
    let body = r#"[{"subject":"a"},{"subject":"b"}]"#;
    let (status, headers, v) = call(
        app(&host, ""),
        post("/api/v1/alerts", "application/json", body),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(HeaderValue::as_bytes),
        Some(&b"3"[..])
    );
    assert_eq!(v["ids"], json!([1, null]));
    assert_eq!(v["refused"], json!([1]));
    assert_eq!(v["error"], "alert 1: the host refused it: queue full");

    host.script([Answer::Refuse(PluginError::new(
        ErrorKind::PERMANENT,
        "subject too long",
    ))]);
    let (status, _, v) = call(
        app(&host, ""),
        post("/api/v1/alerts", "application/json", "{\"subject\":\"c\"}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"], "alert 0: the host refused it: subject too long");
}

#[tokio::test]
async fn a_host_slower_than_the_request_timeout_is_a_503() {
    let host = TestHost::new("hook");
    host.script([Answer::Delay(Duration::from_millis(500))]);
    let (status, headers, v) = call(
        app(&host, "request_timeout_ms = 50\n"),
        post("/api/v1/alerts", "application/json", "{\"subject\":\"a\"}"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        headers.get(header::RETRY_AFTER).map(HeaderValue::as_bytes),
        Some(&b"1"[..])
    );
    assert_eq!(
        v["error"],
        "the host did not confirm within 50 ms; resend (a dedup key makes that safe)"
    );
}

#[tokio::test]
async fn alertmanager_resolved_alerts_are_ignored_or_forwarded() {
    let sample = include_str!("../tests/fixtures/alertmanager-0.25-sample.json");
    let host = TestHost::new("hook");
    let (status, _, v) = call(
        app(&host, ""),
        post("/api/v1/alertmanager", "application/json", sample),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        v,
        json!({"ids": [1, null], "duplicates": [], "ignored": [1]})
    );
    let forward = "[alertmanager]\nresolved = \"forward\"\n";
    let (status, _, v) = call(
        app(&host, forward),
        post("/api/v1/alertmanager", "application/json", sample),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(v, json!({"ids": [1, 2], "duplicates": [1], "ignored": []}));
    assert_eq!(
        host.accepted()[1].subject,
        "[RESOLVED] Disk /var/log is 92% full"
    );
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let host = TestHost::new("hook");
    let request = Request::get("/healthz")
        .body(Full::default())
        .expect("request");
    assert_eq!(call(app(&host, ""), request).await.0, StatusCode::OK);
}

#[test]
fn content_types_compare_without_case() {
    let format = |value: &str, alertmanager: bool| {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(value).expect("header"),
        );
        content_format(&headers, alertmanager).ok()
    };
    assert_eq!(
        format("Application/JSON; charset=utf-8", false),
        Some(Format::Json)
    );
    assert_eq!(
        format(" application/vnd.x+JSON ", false),
        Some(Format::Json)
    );
    assert_eq!(
        format("TEXT/XML;charset=\"UTF-8\"", false),
        Some(Format::Xml)
    );
    assert_eq!(format("application/problem+Xml", false), Some(Format::Xml));
    assert_eq!(format("APPLICATION/JSON", true), Some(Format::Alertmanager));
    assert_eq!(format("application/xml", true), None);
    assert_eq!(format("json", false), None);
    assert_eq!(format("+jso", false), None);
    assert_eq!(format("text/plain", false), None);
    assert_eq!(format("", false), None);
}

#[tokio::test]
async fn other_paths_and_methods_are_404_and_405() {
    let host = TestHost::new("hook");
    let request = |method: Method, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Full::default())
            .expect("request")
    };
    let api = app(&host, "");
    let answer = api.call(request(Method::GET, "/api/v1/alerts")).await;
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers()[header::ALLOW], "POST");
    let answer = api.call(request(Method::POST, "/healthz")).await;
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers()[header::ALLOW], "GET,HEAD");
    let answer = api.call(request(Method::HEAD, "/healthz")).await;
    assert_eq!(answer.status(), StatusCode::OK);
    let answer = api.call(request(Method::POST, "/api/v1/alert")).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    assert!(host.accepted().is_empty());
}

/// A body in several pieces (chunked, no length) is joined; one over the limit is refused
/// however it is cut.
#[tokio::test]
async fn bodies_in_pieces_are_joined_within_the_limit() {
    let pieces = |body: &'static str, cut: usize| {
        let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = body
            .as_bytes()
            .chunks(cut)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Request::post("/api/v1/alerts")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(http_body_util::StreamBody::new(stream::iter(frames)))
            .expect("request")
    };
    let host = TestHost::new("hook");
    let body = r#"{"subject":"in pieces","labels":{"a":"b"}}"#;
    let answer = app(&host, "").call(pieces(body, 5)).await;
    assert_eq!(answer.status(), StatusCode::ACCEPTED);
    assert_eq!(host.accepted()[0].subject, "in pieces");
    assert_eq!(host.accepted()[0].labels["a"], "b");
    let answer = app(&host, "max_body_bytes = 40\n")
        .call(pieces(body, 7))
        .await;
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(host.accepted().len(), 1);
}
