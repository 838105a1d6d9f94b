//! End to end, the real `alertbridge` binary with the real `ucwa` plugin file: a hostile
//! autodiscover server (named `lyncdiscover.contoso.localhost`, inside the deployment) names a
//! token endpoint on another origin. The password never reaches it, `/healthz` shows the sink
//! degraded with a message that names the foreign host, and the host's log never holds the
//! password.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use alertbridge_testbed::harness::{Host, free_port, request, wait_until};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

const PLANTED: &str = "PLANTED-host-ucwa-pw-41d2";

/// Serves `app` on a fresh loopback port of `rt`.
fn serve(rt: &tokio::runtime::Runtime, app: Router) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    })
}

/// `/`: the root document; anything else: a 401 whose challenge names `token_href`.
async fn lync(State(token_href): State<Arc<String>>, headers: HeaderMap, uri: Uri) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if uri.path() == "/" {
        let body = format!(r#"{{"_links":{{"user":{{"href":"http://{host}/user"}}}}}}"#);
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let challenge = format!("MsRtcOAuth href=\"{token_href}\",grant_type=\"password\"");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, challenge)],
        "401",
    )
        .into_response()
}

#[test]
fn a_foreign_token_endpoint_never_gets_the_password_and_healthz_names_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let contacted = Arc::new(AtomicUsize::new(0));
    let seen = contacted.clone();
    let evil = serve(
        &rt,
        Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { r#"{"access_token":"x","token_type":"Bearer"}"# }
        }),
    );
    let token_href = Arc::new(format!("http://{evil}/WebTicket/oauthtoken"));
    let lync = serve(&rt, Router::new().fallback(lync).with_state(token_href));

    let dir = tempfile::tempdir().expect("temp dir");
    let admin = free_port();
    let d = dir.path().display();
    let config = format!(
        r#"
[host]
data_dir = "{d}/data"
admin_listen = "127.0.0.1:{admin}"
stop_deadline_ms = 3000

[[sink]]
name = "lync"
plugin = "ucwa"
[sink.config]
autodiscover_url = "http://lyncdiscover.contoso.localhost:{port}"
allow_http = true
username = "alerts@contoso.localhost"
password = "{PLANTED}"
request_timeout_secs = 5

[groups]
ops = ["sip:alice@contoso.localhost"]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["lync"]
"#,
        port = lync.port()
    );
    let mut host = Host::start(dir.path(), admin, &config);
    let healthz = format!("{}/healthz", host.admin);
    let mut last = String::new();
    wait_until(
        "healthz naming the foreign host",
        Duration::from_secs(30),
        || {
            last = request("GET", &healthz, &[], "")
                .map(|(status, body)| format!("{status} {body}"))
                .unwrap_or_default();
            contacted.load(Ordering::SeqCst) > 0
                || (last.contains(&evil.to_string()) && last.contains("outside the deployment"))
        },
    );
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "the foreign token endpoint was contacted"
    );
    // Like a refused password: degraded (sign-in is retried with back-off), not restarted.
    assert!(last.contains(r#""state":"degraded""#), "{last}");
    assert!(host.stop(), "the host stops cleanly");
    let log = host.log();
    assert!(!log.contains(PLANTED), "the password is in the log:\n{log}");
    assert!(!last.contains(PLANTED), "{last}");
}
