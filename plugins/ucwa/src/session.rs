//! Signing in: autodiscover (candidates in order, `redirect` hops, a `user` link on another
//! host), the token that the `user` and `applications` hosts each demand, creating the
//! application and `makeMeAvailable`; then the keep-alive and sign-out of a live application.

use std::time::Duration;

use reqwest::{Method, Url};
use tracing::{debug, info, warn};

use crate::{
    api::{Api, Body},
    config::Settings,
    error::UcwaError,
    protocol::{
        application::{AppLinks, create_request, make_me_available_request, parse_application},
        discover::{Discovery, parse_discovery},
    },
};

/// Redirect and user hops followed before giving up (loops).
const MAX_HOPS: usize = 8;

/// A live application's links, resolved to absolute URLs.
#[derive(Clone, Debug)]
pub struct Application {
    pub url: Url,
    pub events: Url,
    pub people: Url,
    pub start_messaging: Url,
    pub report_my_activity: Option<Url>,
    pub batch: Option<Url>,
}

fn body_error(url: &Url) -> impl FnOnce(serde_json::Error) -> UcwaError + '_ {
    move |source| UcwaError::Body {
        url: url.to_string(),
        source,
    }
}

/// Finds the `applications` URL, trying each autodiscover candidate in order.
pub async fn discover(api: &Api, settings: &Settings) -> Result<Url, UcwaError> {
    let mut last = None;
    for candidate in &settings.discover {
        match discover_from(api, candidate).await {
            Ok(url) => return Ok(url),
            Err(e) => {
                warn!(url = %candidate, error = %alertbridge_plugin_api::error_chain(&e), "Autodiscover failed here.");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| UcwaError::Protocol {
        url: String::new(),
        what: "no autodiscover URL".into(),
    }))
}

async fn discover_from(api: &Api, start: &Url) -> Result<Url, UcwaError> {
    let mut url = start.clone();
    for _ in 0..MAX_HOPS {
        let reply = api.call(Method::GET, &url, &Body::Empty, None).await?;
        let next = parse_discovery(&reply.body).map_err(body_error(&reply.url))?;
        match next {
            Some(Discovery::Applications(href)) => return api.resolve(&reply.url, &href),
            Some(Discovery::Redirect(href) | Discovery::User(href)) => {
                // Each hop is checked: https only (http to loopback with allow_http), never
                // a downgrade, only hosts inside the deployment.
                let next = api.resolve(&reply.url, &href)?;
                if next == url {
                    break;
                }
                debug!(from = %url, to = %next, "Following autodiscover link.");
                url = next;
            }
            None => break,
        }
    }
    Err(UcwaError::Protocol {
        url: url.to_string(),
        what: "autodiscover gave no applications link".into(),
    })
}

/// Creates the application (one per sink instance, `endpoint_id` fixed for its life) and
/// makes it available.
pub async fn create(
    api: &Api,
    settings: &Settings,
    applications: &Url,
    endpoint_id: &str,
) -> Result<Application, UcwaError> {
    let request = create_request(&settings.user_agent, endpoint_id, &settings.culture);
    let reply = api
        .call(Method::POST, applications, &Body::json(&request), None)
        .await?;
    // Links are relative to where the answer came from (after any checked redirect).
    let base = reply.url;
    let links = links_of(&base, &reply.body)?;
    let mut app = resolve(api, &base, &links)?;
    info!(application = %app.url, "Application created.");
    if let Some(href) = &links.make_me_available {
        let url = api.resolve(&base, href)?;
        match api
            .call(
                Method::POST,
                &url,
                &Body::json(&make_me_available_request()),
                None,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => debug!("Already available."),
            Err(e) => return Err(e),
        }
        // reportMyActivity appears on `me` only once the application is available.
        let reply = api.call(Method::GET, &app.url, &Body::Empty, None).await?;
        app = resolve(api, &base, &links_of(&reply.url, &reply.body)?)?;
    }
    Ok(app)
}

fn links_of(url: &Url, body: &[u8]) -> Result<AppLinks, UcwaError> {
    parse_application(body)
        .map_err(body_error(url))?
        .map_err(|what| UcwaError::Protocol {
            url: url.to_string(),
            what: what.into(),
        })
}

fn resolve(api: &Api, base: &Url, links: &AppLinks) -> Result<Application, UcwaError> {
    Ok(Application {
        url: api.resolve(base, &links.self_href)?,
        events: api.resolve(base, &links.events)?,
        people: api.resolve(base, &links.people)?,
        start_messaging: api.resolve(base, &links.start_messaging)?,
        report_my_activity: links
            .report_my_activity
            .as_deref()
            .map(|h| api.resolve(base, h))
            .transpose()?,
        batch: links
            .batch
            .as_deref()
            .map(|h| api.resolve(base, h))
            .transpose()?,
    })
}

/// Reports activity every `interval` so the server keeps the endpoint available. Returns when
/// the application is gone.
pub async fn keep_alive(api: &Api, app: &Application, interval: Duration) -> UcwaError {
    loop {
        tokio::time::sleep(interval).await;
        let Some(url) = &app.report_my_activity else {
            continue;
        };
        match api.call(Method::POST, url, &Body::Empty, None).await {
            Ok(_) => debug!("Reported activity."),
            Err(e) if e.is_application_gone() => return e,
            Err(e) => {
                warn!(error = %alertbridge_plugin_api::error_chain(&e), "reportMyActivity failed.")
            }
        }
    }
}

/// Deletes the application (signs out).
pub async fn delete(api: &Api, app: &Application) {
    match api
        .call(
            Method::DELETE,
            &app.url,
            &Body::Empty,
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(_) => info!(application = %app.url, "Application deleted."),
        Err(e) => {
            warn!(error = %alertbridge_plugin_api::error_chain(&e), "Could not delete the application.")
        }
    }
}
