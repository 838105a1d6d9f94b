//! Issue 11 §1: the password and tokens go only to hosts inside the deployment. Hostile servers
//! on loopback (named under `localhost`, which the sink resolves to loopback itself) try to
//! draw the password away: a token href on a foreign origin, a 307 from https to plain http,
//! autodiscover hops to a foreign domain, a redirect loop. Each asserts on what the hostile
//! server saw. Legitimate hops inside the domain (redirects, a pool host) still work.

mod common;
mod hostile;

use alertbridge_plugin_api::{DeliveryStatus, kit::Sink as _};
use alertbridge_testbed::ucwa_sim::{SimOptions, Simulator, UserSpec};
use serde_json::json;

use common::{message, start_sink_config, users, wait_health_text};
use hostile::{Answer, Hostile, Pki, Request};

/// Recognisable, so a leak anywhere shows.
const PASSWORD: &str = "PLANTED-ucwa-pw-7c1e";
const USER: &str = "alerts@contoso.localhost";

fn config(autodiscover_url: &str, allow_http: bool, extra: &str) -> String {
    format!(
        "autodiscover_url = \"{autodiscover_url}\"\nallow_http = {allow_http}\n\
         username = \"{USER}\"\npassword = \"{PASSWORD}\"\nrequest_timeout_secs = 5\n{extra}"
    )
}

/// The root document pointing at `/user` on the same host.
fn root(scheme: &str, r: &Request) -> Answer {
    Answer::json(
        200,
        json!({"_links": {"user": {"href": format!("{scheme}://{}/user", r.host)}}}),
    )
}

/// Waits until the sink refuses (its health names `needle`), failing at once if `foreign` is
/// contacted meanwhile; then checks that `foreign` never saw a connection.
async fn refused_untouched(running: &common::Running, needle: &str, foreign: &Hostile) -> String {
    let start = std::time::Instant::now();
    loop {
        if foreign.connections() > 0 {
            // Give a leak a moment to complete, to report it plainly.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            panic!(
                "the foreign host was contacted (password sent: {}): {:?}",
                foreign.saw(PASSWORD),
                foreign
                    .requests()
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect::<Vec<_>>()
            );
        }
        let health = running.sink.health();
        if health.message.contains(needle) {
            return health.message;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "health never mentioned `{needle}`: {health}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_href_on_a_foreign_origin_never_gets_the_password() {
    let evil =
        Hostile::start(|_| Answer::json(200, json!({"access_token": "x", "token_type": "Bearer"})))
            .await;
    for (foreign, named) in [
        (
            format!("http://evil.localhost:{}/WebTicket/oauthtoken", evil.port()),
            "evil.localhost".to_owned(),
        ),
        // The same machine, another port: another origin.
        (
            format!("http://127.0.0.1:{}/WebTicket/oauthtoken", evil.port()),
            format!("127.0.0.1:{}", evil.port()),
        ),
    ] {
        let href = foreign.clone();
        let lync = Hostile::start(move |r| match r.path.as_str() {
            "/" => root("http", r),
            _ => Answer::challenge(&href),
        })
        .await;
        let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
        let running = start_sink_config(config(&url, true, ""));
        let message = refused_untouched(&running, &named, &evil).await;
        assert!(
            message.contains("outside the deployment"),
            "{foreign}: {message}"
        );
        running.stop().await;
        assert_eq!(evil.connections(), 0, "{foreign}");
        assert!(!lync.saw(PASSWORD), "the password went out");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_307_from_https_to_plain_http_is_not_followed() {
    let catcher =
        Hostile::start(|_| Answer::json(200, json!({"access_token": "x", "token_type": "Bearer"})))
            .await;
    let pki = Pki::new(&["lyncdiscover.contoso.localhost"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = pki.write_ca(dir.path());
    let plain = format!(
        "http://lyncdiscover.contoso.localhost:{}/WebTicket/oauthtoken",
        catcher.port()
    );
    let lync = Hostile::start_tls(&pki, move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/") => root("https", r),
        ("GET", _) => Answer::challenge(&format!("https://{}/WebTicket/oauthtoken", r.host)),
        _ => Answer::redirect(307, &plain),
    })
    .await;
    let url = format!("https://lyncdiscover.contoso.localhost:{}", lync.port());
    // With allow_http or without it: a downgrade is never followed.
    for allow_http in [false, true] {
        let extra = format!("ca_file = \"{}\"\n", ca_file.display());
        let running = start_sink_config(config(&url, allow_http, &extra));
        let message = refused_untouched(&running, "downgrade", &catcher).await;
        assert!(
            message.contains("lyncdiscover.contoso.localhost"),
            "{message}"
        );
        running.stop().await;
        assert_eq!(catcher.connections(), 0);
    }
    // The https token endpoint itself is inside the deployment and got the grant.
    assert!(
        lync.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/WebTicket/oauthtoken")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autodiscover_hops_to_a_foreign_domain_are_refused() {
    // A foreign autodiscover that would happily take the password.
    let evil = Hostile::start(|r| match r.method.as_str() {
        "GET" => Answer::challenge(&format!("http://{}/WebTicket/oauthtoken", r.host)),
        _ => Answer::json(200, json!({"access_token": "x", "token_type": "Bearer"})),
    })
    .await;
    let foreign = format!(
        "http://lyncweb.fabrikam.localhost:{}/Autodiscover/AutodiscoverService.svc/root/oauth/user",
        evil.port()
    );
    for hop in ["user", "redirect", "302"] {
        let (hop_name, foreign) = (hop.to_owned(), foreign.clone());
        let lync = Hostile::start(move |_| match hop_name.as_str() {
            "302" => Answer::redirect(302, &foreign),
            rel => Answer::json(200, json!({"_links": {rel: {"href": foreign}}})),
        })
        .await;
        let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
        let running = start_sink_config(config(&url, true, ""));
        let message = refused_untouched(&running, "lyncweb.fabrikam.localhost", &evil).await;
        assert!(
            message.contains("outside the deployment"),
            "{hop}: {message}"
        );
        running.stop().await;
        assert_eq!(evil.connections(), 0, "{hop}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_ends_after_a_few_hops() {
    let lync = Hostile::start(|r| Answer::redirect(302, &format!("http://{}/", r.host))).await;
    let url = format!("http://lyncdiscover.contoso.localhost:{}", lync.port());
    let running = start_sink_config(config(&url, true, ""));
    let message = wait_health_text(&running, "redirects").await;
    running.stop().await;
    assert!(message.contains("more than 3 redirects"), "{message}");
    // Each sign-in try: the first request and 3 redirects (reqwest alone would follow 10).
    let requests = lync.requests().len();
    assert!(
        requests > 0 && requests % 4 == 0 && requests <= 8,
        "{requests} requests"
    );
}

/// Users of the simulator plus the sending account in the `contoso.localhost` domain.
fn localhost_users() -> Vec<UserSpec> {
    let mut users = users();
    users.push(UserSpec::new(USER, PASSWORD, "Online"));
    users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hops_inside_the_domain_still_work_redirects_and_a_pool_host() {
    let sim = Simulator::start_with(
        alertbridge_testbed::ucwa_sim::SimConfig {
            users: localhost_users(),
            redirect_hop: true,
            user_hop: true,
            pool_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Default::default()
        },
        SimOptions {
            web_host: Some("lyncweb.contoso.localhost".into()),
            pool_host: Some("lyncpool.contoso.localhost".into()),
            http_redirects: true,
        },
    )
    .await
    .expect("simulator");
    let running = start_sink_config(config(&sim.discover_url(), true, ""));
    let results = running
        .sink
        .deliver(message("pool", "inside the domain", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    assert_eq!(
        sim.received("alice@contoso.com")[0].text,
        "inside the domain"
    );
    assert_eq!(sim.stats().live_tokens, 2, "a token from each host");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_in_another_domain_needs_trusted_hosts() {
    let start = || {
        Simulator::start_with(
            alertbridge_testbed::ucwa_sim::SimConfig {
                users: localhost_users(),
                pool_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
                ..Default::default()
            },
            SimOptions {
                web_host: Some("lyncweb.contoso.localhost".into()),
                pool_host: Some("lyncpool.fabrikam.localhost".into()),
                http_redirects: false,
            },
        )
    };
    let sim = start().await.expect("simulator");
    let running = start_sink_config(config(&sim.discover_url(), true, ""));
    let refused = wait_health_text(&running, "lyncpool.fabrikam.localhost").await;
    assert!(refused.contains("trusted_hosts"), "{refused}");
    running.stop().await;
    assert_eq!(sim.stats().live_tokens, 1, "only the web host's token");
    assert_eq!(sim.stats().applications, 0, "the pool was never asked");

    let sim = start().await.expect("simulator");
    let running = start_sink_config(config(
        &sim.discover_url(),
        true,
        "trusted_hosts = [\"lyncpool.fabrikam.localhost\"]\n",
    ));
    let results = running
        .sink
        .deliver(message("pool", "listed", &["alice@contoso.com"]))
        .await
        .unwrap();
    assert_eq!(results[0].status, DeliveryStatus::DELIVERED, "{results:?}");
    running.stop().await;
}
