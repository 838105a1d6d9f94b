//! The UCWA simulator speaks the published protocol: raw HTTP against it, no client of ours.

use std::time::Duration;

use alertbridge_testbed::ucwa_sim::{SimConfig, SimHandle, Simulator, UserSpec};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};

async fn sim() -> SimHandle {
    let users = vec![
        UserSpec::new("alerts@contoso.com", "pw", "Online"),
        UserSpec::new("alice@contoso.com", "a", "Away"),
    ];
    Simulator::start(SimConfig {
        users,
        ..SimConfig::default()
    })
    .await
    .expect("start the simulator")
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("JSON body")
}

/// A token for alerts@contoso.com and the application it created: (token, base URL, application).
async fn sign_in(http: &Client, sim: &SimHandle) -> (String, String, Value) {
    let base = sim.discover_url();
    let grant = http
        .post(format!("{base}/WebTicket/oauthtoken"))
        .header(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded;charset='utf-8'",
        )
        .body("grant_type=password&username=alerts%40contoso.com&password=pw")
        .send()
        .await
        .unwrap();
    let token = json_of(grant).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = http
        .post(format!("{base}/ucwa/oauth/v1/applications"))
        .bearer_auth(&token)
        .json(&json!({"UserAgent":"test","EndpointId":"a917c6f4","Culture":"en-US"}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), StatusCode::CREATED);
    (token, base, json_of(app).await)
}

#[tokio::test]
async fn challenge_token_and_user_document() {
    let sim = sim().await;
    let http = Client::new();
    let base = sim.discover_url();
    let root = json_of(
        http.get(&base)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let user = root["_links"]["user"]["href"].as_str().unwrap().to_owned();
    let challenge = http.get(&user).send().await.unwrap();
    assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
    let schemes: Vec<String> = challenge
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(schemes.len(), 2);
    assert!(schemes[0].starts_with("Bearer "));
    assert_eq!(
        schemes[1],
        format!(
            "MsRtcOAuth href=\"{base}/WebTicket/oauthtoken\",grant_type=\"urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password\""
        )
    );
    let refused = http
        .post(format!("{base}/WebTicket/oauthtoken"))
        .body("grant_type=password&username=alerts@contoso.com&password=no")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(refused).await, json!({"error":"invalid_grant"}));
    let (token, _, app) = sign_in(&http, &sim).await;
    assert!(token.starts_with("cwt="));
    let doc = json_of(http.get(&user).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(
        doc["_links"]["applications"]["href"],
        format!("{base}/ucwa/oauth/v1/applications")
    );
    assert!(app["_embedded"]["communication"]["_links"]["startMessaging"]["href"].is_string());

    sim.expire_tokens();
    let expired = http.get(&user).bearer_auth(&token).send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn event_channel_replaces_parked_pgets_and_resyncs_bad_acks() {
    let sim = sim().await;
    let http = Client::new();
    let (token, base, app) = sign_in(&http, &sim).await;
    let events = format!(
        "{base}{}",
        app["_links"]["events"]["href"].as_str().unwrap()
    );
    let first = tokio::spawn({
        let (http, events, token) = (http.clone(), events.clone(), token.clone());
        async move { http.get(events).bearer_auth(token).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn({
        let (http, events, token) = (http.clone(), events.clone(), token.clone());
        async move { http.get(events).bearer_auth(token).send().await.unwrap() }
    });
    let replaced = first.await.unwrap();
    assert_eq!(replaced.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(replaced).await["subcode"], "PGetReplaced");

    let available = format!(
        "{base}{}",
        app["_embedded"]["me"]["_links"]["makeMeAvailable"]["href"]
            .as_str()
            .unwrap()
    );
    let ok = http
        .post(&available)
        .bearer_auth(&token)
        .json(&json!({"SupportedModalities":["Messaging"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let page = json_of(second.await.unwrap()).await;
    assert!(
        page["_links"]["next"]["href"]
            .as_str()
            .unwrap()
            .ends_with("events?ack=2"),
        "{page}"
    );
    assert_eq!(page["sender"][0]["rel"], "me");
    let again = http
        .post(&available)
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(again).await["subcode"], "AlreadyExists");

    let resync = json_of(
        http.get(events.replace("ack=1", "ack=9"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        resync["_links"]["resync"]["href"]
            .as_str()
            .unwrap()
            .ends_with("ack=2"),
        "{resync}"
    );

    let self_url = format!("{base}{}", app["_links"]["self"]["href"].as_str().unwrap());
    assert_eq!(
        http.delete(&self_url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        http.get(&self_url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::GONE
    );
    let unknown = http
        .get(format!("{base}/ucwa/oauth/v1/applications/nope"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(unknown).await["subcode"], "ApplicationNotFound");
}

#[tokio::test]
async fn throttling_presence_and_control_api() {
    let sim = sim().await;
    let http = Client::new();
    let (token, base, app) = sign_in(&http, &sim).await;
    let people = format!(
        "{base}{}",
        app["_embedded"]["people"]["_links"]["self"]["href"]
            .as_str()
            .unwrap()
    );
    let presence = json_of(
        http.get(format!("{people}/alice@contoso.com/presence"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(presence["availability"], "Away");
    let set = http
        .post(format!(
            "{base}/control/users/alice@contoso.com/availability"
        ))
        .json(&json!({"availability":"Online"}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let presence = json_of(
        http.get(format!("{people}/alice@contoso.com/presence"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(presence["availability"], "Online");

    http.post(format!("{base}/control/throttle"))
        .json(&json!({"count":1,"retry_after_secs":2}))
        .send()
        .await
        .unwrap();
    let throttled = http
        .get(format!("{people}/alice@contoso.com/presence"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()[header::RETRY_AFTER], "2");
    let page = http
        .get(&base)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("alice@contoso.com") && page.contains("Online"),
        "{page}"
    );
    let messages = json_of(
        http.get(format!("{base}/control/messages"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(messages["alice@contoso.com"], json!([]));
}

#[tokio::test]
async fn batch_answers_in_request_order_and_rejects_over_the_limit() {
    let sim = sim().await;
    let http = Client::new();
    let (token, base, app) = sign_in(&http, &sim).await;
    let batch = format!("{base}{}", app["_links"]["batch"]["href"].as_str().unwrap());
    let people = app["_embedded"]["people"]["_links"]["self"]["href"]
        .as_str()
        .unwrap()
        .to_owned();
    let part = |user: &str| {
        format!(
            "--77f2569d\r\nContent-Type: application/http; msgtype=request\r\n\r\nGET {people}/{user}/presence HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n"
        )
    };
    let body = format!(
        "{}{}--77f2569d--\r\n",
        part("alice@contoso.com"),
        part("nobody@contoso.com")
    );
    let reply = http
        .post(&batch)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "multipart/batching;boundary=77f2569d")
        .header(header::ACCEPT, "multipart/batching")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert!(
        reply.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("multipart/batching; boundary=")
    );
    let text = reply.text().await.unwrap();
    let alice = text.find("HTTP/1.1 200 OK").expect("alice answered");
    let nobody = text
        .find("HTTP/1.1 404 Not Found")
        .expect("nobody answered");
    assert!(
        alice < nobody && text.contains("\"availability\":\"Away\""),
        "{text}"
    );

    let many: String = (0..101).map(|_| part("alice@contoso.com")).collect();
    let rejected = http
        .post(&batch)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "multipart/batching;boundary=77f2569d")
        .body(format!("{many}--77f2569d--\r\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Every event of a P-GET page, flattened: (sender href, event).
fn events_of(page: &Value) -> Vec<(String, Value)> {
    page["sender"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let href = s["href"].as_str().unwrap_or_default().to_owned();
            s["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |e| (href.clone(), e.clone()))
        })
        .collect()
}

/// A person starts a conversation with the bot (incoming messagingInvitation, as UCWA 2.0's
/// "Receive an IM" shows it), the bot accepts, reads the first message as an Incoming message
/// event, answers, and a second reply comes in the same conversation.
#[tokio::test]
async fn a_person_starts_a_conversation_the_bot_accepts_reads_and_answers() {
    let sim = sim().await;
    let http = Client::new();
    let (token, base, app) = sign_in(&http, &sim).await;
    let link = |v: &Value, path: &str| {
        format!("{base}{}", v.pointer(path).and_then(Value::as_str).unwrap())
    };
    let control = |path: &str| format!("{base}/control/users/alice@contoso.com/{path}");
    // Not available yet: nobody can reach the bot.
    let refused = http
        .post(control("reply"))
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    http.post(link(&app, "/_embedded/me/_links/makeMeAvailable/href"))
        .bearer_auth(&token)
        .json(&json!({"SupportedModalities":["Messaging"]}))
        .send()
        .await
        .unwrap();
    let replied = json_of(
        http.post(control("reply"))
            .json(&json!({"text": "hello bot"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(replied["invited"], true);
    let conversation = replied["conversation"].as_str().unwrap().to_owned();

    let mut next = link(&app, "/_links/events/href");
    let pget = async |next: &mut String| {
        let page = json_of(
            http.get(next.as_str())
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        *next = link(&page, "/_links/next/href");
        events_of(&page)
    };
    let events = pget(&mut next).await;
    let (_, invitation) = events
        .iter()
        .find(|(_, e)| e["link"]["rel"] == "messagingInvitation")
        .expect("an invitation");
    let inv = &invitation["_embedded"]["messagingInvitation"];
    assert_eq!(invitation["type"], "started");
    assert_eq!(inv["direction"], "Incoming");
    assert_eq!(inv["_links"]["conversation"]["href"], conversation.as_str());
    assert_eq!(inv["_embedded"]["from"]["uri"], "sip:alice@contoso.com");
    assert_eq!(
        alertbridge_testbed::ucwa_sim::decode_data_url(
            inv["_links"]["message"]["href"].as_str().unwrap()
        ),
        Some(("text/plain".to_owned(), "hello bot".to_owned()))
    );
    let accepted = http
        .post(link(inv, "/_links/accept/href"))
        .bearer_auth(&token)
        .header(header::CONTENT_LENGTH, "0")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::NO_CONTENT);

    let events = pget(&mut next).await;
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|(_, e)| {
            (
                e["link"]["rel"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("messagingInvitation".into(), "completed".into())),
        "{kinds:?}"
    );
    let (_, messaging) = events
        .iter()
        .find(|(_, e)| e["link"]["rel"] == "messaging")
        .unwrap();
    assert_eq!(messaging["_embedded"]["messaging"]["state"], "Connected");
    let (sender, message) = events
        .iter()
        .find(|(_, e)| e["link"]["rel"] == "message")
        .unwrap();
    assert_eq!(
        sender, &conversation,
        "the message comes from its conversation"
    );
    let m = &message["_embedded"]["message"];
    assert_eq!(
        (message["status"].as_str(), m["direction"].as_str()),
        (Some("Success"), Some("Incoming"))
    );
    assert!(
        m["_links"]["contact"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/people/alice@contoso.com")
    );
    assert_eq!(m["_links"]["participant"]["title"], "Alice");
    assert_eq!(
        alertbridge_testbed::ucwa_sim::decode_data_url(
            m["_links"]["plainMessage"]["href"].as_str().unwrap()
        )
        .unwrap()
        .1,
        "hello bot"
    );

    // The bot answers; the simulator records it in that conversation.
    let sent = http
        .post(format!(
            "{}?operationId=op-1",
            link(messaging, "/_embedded/messaging/_links/sendMessage/href")
        ))
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("hi Alice")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::CREATED);
    let said = sim.received("alice@contoso.com");
    assert_eq!(
        (said[0].text.as_str(), said[0].conversation.as_str()),
        ("hi Alice", conversation.as_str())
    );

    // A second reply (from the status page's box) comes in the same conversation.
    let form = http
        .post(control("reply-form"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("text=ack+42")
        .send()
        .await
        .unwrap();
    assert!(
        form.url().path() == "/" || form.status().is_redirection(),
        "{}",
        form.status()
    );
    let events = pget(&mut next).await;
    let (sender, message) = events
        .iter()
        .rfind(|(_, e)| e["link"]["rel"] == "message")
        .unwrap();
    assert_eq!(sender, &conversation);
    assert_eq!(
        alertbridge_testbed::ucwa_sim::decode_data_url(
            message["_embedded"]["message"]["_links"]["plainMessage"]["href"]
                .as_str()
                .unwrap()
        )
        .unwrap()
        .1,
        "ack 42"
    );
    // The status page has a reply box per user.
    let page = http
        .get(&base)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/control/users/alice@contoso.com/reply-form"),
        "{html}"
    );
}
