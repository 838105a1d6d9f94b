//! The simulator spoken to over raw HTTP, for the parts of the protocol the `ucma` sink does
//! not use (replay headers, `wait:false`, request validation, `skip_if`) and for the control
//! API and page the demo uses.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use super::{Availability, SimConfig, SimHandle, Simulator};

const SECRET: &str = "0123456789abcdef-sim";
const ALICE: &str = "sip:alice@contoso.com";
const BOB: &str = "sip:bob@contoso.com";

async fn start() -> (SimHandle, Client) {
    let config = SimConfig::new(SECRET)
        .user(ALICE, Availability::Online)
        .user(BOB, Availability::Offline);
    (
        Simulator::start(config).await.expect("start"),
        Client::new(),
    )
}

async fn send(
    client: &Client,
    sim: &SimHandle,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{}/v1/messages", sim.url()))
        .bearer_auth(SECRET)
        .json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("send")
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.expect("error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_replay_is_marked_and_returns_the_stored_document() {
    let (sim, client) = start().await;
    let body = json!({"to": [ALICE], "body": "hi"});
    let first = send(&client, &sim, Some("k1"), &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replay").is_none());
    let location = first.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let first: Value = first.json().await.expect("document");
    let again = send(&client, &sim, Some("k1"), &body).await;
    assert_eq!(again.headers()["idempotent-replay"], "true");
    assert_eq!(again.json::<Value>().await.expect("document"), first);
    let polled = client
        .get(format!("{}{location}", sim.url()))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("get");
    assert_eq!(polled.json::<Value>().await.expect("document"), first);
    assert_eq!(sim.received(ALICE).len(), 1);
}

#[tokio::test]
async fn wait_false_answers_202_and_the_document_completes_later() {
    let (sim, client) = start().await;
    sim.script(ALICE, [super::Outcome::delayed(200, 300)]);
    let response = send(
        &client,
        &sim,
        Some("k2"),
        &json!({"to": [ALICE], "body": "hi", "wait": false}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let doc: Value = response.json().await.expect("document");
    assert_eq!(
        (
            doc["state"].as_str(),
            doc["recipients"][0]["status"].as_str()
        ),
        (Some("running"), Some("pending"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let url = format!(
        "{}/v1/messages/{}",
        sim.url(),
        doc["id"].as_str().expect("id")
    );
    let done: Value = client
        .get(url)
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("document");
    assert_eq!(
        (
            done["state"].as_str(),
            done["recipients"][0]["status"].as_str()
        ),
        (Some("completed"), Some("delivered"))
    );
    let missing = client
        .get(format!("{}/v1/messages/m_nope", sim.url()))
        .bearer_auth(SECRET)
        .send()
        .await
        .expect("get");
    assert_eq!(
        error_code(missing).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[tokio::test]
async fn invalid_sends_are_refused_before_anything_is_sent() {
    let (sim, client) = start().await;
    let ok = json!({"to": [ALICE], "body": "hi"});
    assert_eq!(
        error_code(send(&client, &sim, None, &ok).await).await,
        (StatusCode::BAD_REQUEST, "idempotency_key_required".into())
    );
    let cases = [
        (
            json!({"to": [], "body": "hi"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"to": [ALICE, ALICE], "body": "hi"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"to": [ALICE], "body": "hi", "mode": "fax"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"to": [ALICE], "body": "hi", "timeout_ms": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            json!({"to": ALICE, "body": "hi"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let got = error_code(send(&client, &sim, Some(&format!("bad{i}")), &body).await).await;
        assert_eq!(got, (status, code.to_owned()), "for {body}");
    }
    let unauthenticated = client
        .get(format!("{}/v1/health", sim.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(
        error_code(unauthenticated).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    assert_eq!(sim.counters().calls, 0);
}

#[tokio::test]
async fn skip_if_skips_by_presence_without_a_call() {
    let (sim, client) = start().await;
    let body = json!({"to": [ALICE, BOB], "body": "hi", "skip_if": ["Offline"]});
    let doc: Value = send(&client, &sim, Some("k3"), &body)
        .await
        .json()
        .await
        .expect("document");
    assert_eq!(doc["recipients"][0]["status"], "delivered");
    assert_eq!(doc["recipients"][0]["presence_before"], "Online");
    assert_eq!(doc["recipients"][1]["status"], "skipped");
    assert_eq!(doc["recipients"][1]["error"]["code"], "skipped_presence");
    assert_eq!(sim.counters().calls, 1);
}

#[tokio::test]
async fn the_control_api_and_page_drive_and_show_the_bridge() {
    let (sim, client) = start().await;
    let base = sim.url();
    let put = client
        .put(format!("{base}/control/users/{BOB}/presence"))
        .json(&json!({"availability": "Busy"}));
    assert_eq!(
        put.send().await.expect("put").status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(sim.received(BOB).len(), 0);
    let script = client
        .post(format!("{base}/control/users/{ALICE}/outcomes"))
        .json(&json!({"outcomes": [{"sip_status": 603}]}));
    assert_eq!(
        script.send().await.expect("post").status(),
        StatusCode::NO_CONTENT
    );
    let fault = json!({"target": "messages", "action": {"kind": "status", "status": 429, "retry_after_s": 3}, "count": 1});
    client
        .post(format!("{base}/control/faults"))
        .json(&fault)
        .send()
        .await
        .expect("post");

    let limited = send(
        &client,
        &sim,
        Some("k4"),
        &json!({"to": [ALICE, BOB], "body": "<b>hi</b>"}),
    )
    .await;
    assert_eq!(limited.headers()["retry-after"], "3");
    assert_eq!(
        error_code(limited).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    let doc: Value = send(
        &client,
        &sim,
        Some("k4"),
        &json!({"to": [ALICE, BOB], "body": "<b>hi</b>"}),
    )
    .await
    .json()
    .await
    .expect("doc");
    assert_eq!(
        (
            doc["recipients"][0]["status"].as_str(),
            doc["recipients"][1]["status"].as_str()
        ),
        (Some("failed"), Some("delivered"))
    );

    let inbox: Value = client
        .get(format!("{base}/control/users/{BOB}/messages"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(inbox[0]["body"], "<b>hi</b>");
    let counters: Value = client
        .get(format!("{base}/control/counters"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (counters["sends"].as_u64(), counters["faults"].as_u64()),
        (Some(1), Some(1))
    );
    let page = client
        .get(format!("{base}/"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(
        page.contains(BOB)
            && page.contains("class=\"Busy\"")
            && page.contains("&lt;b&gt;hi&lt;/b&gt;"),
        "{page}"
    );
}

#[tokio::test]
async fn inbound_long_poll_wakes_on_a_reply_and_acks_are_bounded() {
    let (sim, client) = start().await;
    let get = |query: &str| {
        client
            .get(format!("{}/v1/inbound?{query}", sim.url()))
            .bearer_auth(SECRET)
            .send()
    };
    let ack = |up_to: u64| {
        client
            .post(format!("{}/v1/inbound/ack", sim.url()))
            .bearer_auth(SECRET)
            .json(&json!({ "up_to": up_to }))
            .send()
    };
    let waiting = get("wait_ms=5000&limit=10");
    let reply = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sim.user_says(ALICE, "ack", None, false)
            .expect("a new conversation")
    };
    let started = std::time::Instant::now();
    let (answer, said) = tokio::join!(waiting, reply);
    let doc: Value = answer.expect("poll").json().await.expect("json");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "woken, not timed out"
    );
    assert_eq!(doc["messages"][0]["id"], said.id.as_str());
    assert_eq!(doc["messages"][0]["kind"], "new");
    assert_eq!(doc["pending"], 1);
    assert_eq!(
        error_code(ack(said.cursor + 1).await.expect("ack")).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable".into()),
        "cannot ack what was never handed out"
    );
    let acked: Value = ack(said.cursor)
        .await
        .expect("ack")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (acked["acked"].as_u64(), acked["pending"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        error_code(get("wait_ms=40000").await.expect("poll")).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable".into())
    );
    sim.set_inbound(false);
    assert_eq!(
        error_code(get("").await.expect("poll")).await,
        (StatusCode::NOT_FOUND, "not_supported".into())
    );
}

#[tokio::test]
async fn the_inbound_buffer_drops_the_oldest_past_its_bound() {
    let sim = Simulator::start(SimConfig {
        max_inbound_pending: 3,
        ..SimConfig::new(SECRET).user(ALICE, Availability::Online)
    })
    .await
    .expect("start");
    for i in 0..5 {
        sim.user_says(ALICE, &format!("m{i}"), None, false)
            .expect("said");
    }
    let texts: Vec<String> = sim.pending_inbound().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);
    assert_eq!(sim.counters().inbound_dropped, 2);
}
