//! Presence of many users: `people/{user}/presence` reads grouped into `batch` requests when
//! the application offers them (falling back to concurrent single reads, capped), answers
//! cached for `presence_cache_ms` (at most [`MAX_CACHED`] users, expired answers pruned first).

use std::sync::{Arc, PoisonError};

use alertbridge_plugin_api::{ErrorKind, PluginError, Presence, PresenceState, error_chain};
use reqwest::{Method, Url};
use tokio::{task::JoinSet, time::Instant};
use tracing::debug;

use crate::{
    api::Body,
    error::UcwaError,
    protocol::{
        application::{parse_presence, presence_state},
        batch,
        messaging::bare_user,
    },
    shared::{Core, Live},
};

/// Reads per batch: two batches in flight stay under the server's 100 outstanding requests.
const BATCH_SIZE: usize = batch::MAX_OUTSTANDING / 2;

/// Users whose presence is cached at once: recipients may come from alerts, so the cache must
/// not grow with every address ever asked about.
pub const MAX_CACHED: usize = 10_000;

/// Caches `p` for `user`; at the cap, expired answers go first, and a full cache of fresh
/// answers takes no more.
fn remember(core: &Core, user: &str, p: &Presence) {
    let ttl = core.settings.presence_cache;
    if ttl.is_zero() {
        return;
    }
    let mut cache = core
        .presence_cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    if cache.len() >= MAX_CACHED && !cache.contains_key(user) {
        cache.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        if cache.len() >= MAX_CACHED {
            return;
        }
    }
    cache.insert(user.to_owned(), (now, p.clone()));
}

/// The presence of each of `users`, in order.
pub async fn presence(core: Arc<Core>, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
    let Some(live) = core.live(None).await else {
        return Err(PluginError::new(
            ErrorKind::TRANSIENT,
            "not signed in to UCWA",
        ));
    };
    let mut answers: Vec<Option<Presence>> = vec![None; users.len()];
    let mut missing = Vec::new();
    {
        let cache = core
            .presence_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (i, user) in users.iter().enumerate() {
            match cache.get(user) {
                Some((at, p)) if now.duration_since(*at) < core.settings.presence_cache => {
                    answers[i] = Some(p.clone())
                }
                _ => missing.push((i, user.clone())),
            }
        }
    }
    let batch_url = live
        .app
        .batch
        .clone()
        .filter(|_| core.settings.presence_batch && missing.len() > 1);
    let mut tasks = JoinSet::new();
    if let Some(url) = batch_url {
        for chunk in missing.chunks(BATCH_SIZE) {
            let (core, live, url, chunk) =
                (core.clone(), live.clone(), url.clone(), chunk.to_vec());
            tasks.spawn(async move { read_batch(&core, &live, &url, chunk).await });
        }
    } else {
        for (i, user) in missing {
            let (core, live) = (core.clone(), live.clone());
            tasks.spawn(async move { vec![(i, read(&core, &live, &user).await)] });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok(read) = joined else { continue };
        for (i, presence) in read {
            answers[i] = Some(presence);
        }
    }
    Ok(answers
        .into_iter()
        .zip(users)
        .map(|(p, user)| p.unwrap_or_else(|| Presence::new(user, PresenceState::UNKNOWN)))
        .collect())
}

/// `<people>/<user without sip:>/presence`, the pattern every documented sample shows.
fn presence_url(people: &Url, user: &str) -> Option<Url> {
    let mut url = people.clone();
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .push(bare_user(user))
        .push("presence");
    Some(url)
}

/// Turns one read's outcome into a presence, caching successes.
fn answer(core: &Core, live: &Live, user: &str, result: Result<String, UcwaError>) -> Presence {
    match result {
        Ok(availability) => {
            let mut p = Presence::new(user, presence_state(&availability));
            p.detail = availability;
            remember(core, user, &p);
            p
        }
        Err(e) => {
            if e.is_application_gone() {
                core.lost(live.generation);
            }
            let mut p = Presence::new(user, PresenceState::UNKNOWN);
            p.detail = if e.status() == Some(404) {
                "no such user".to_owned()
            } else {
                error_chain(&e)
            };
            p
        }
    }
}

/// One user's presence with its own GET.
async fn read(core: &Core, live: &Live, user: &str) -> Presence {
    let Ok(_permit) = core.presence_reads.acquire().await else {
        return Presence::new(user, PresenceState::UNKNOWN);
    };
    let Some(url) = presence_url(&live.app.people, user) else {
        return Presence::new(user, PresenceState::UNKNOWN);
    };
    let result = core
        .api
        .call(Method::GET, &url, &Body::Empty, None)
        .await
        .and_then(|reply| {
            parse_presence(&reply.body).map_err(|source| UcwaError::Body {
                url: url.to_string(),
                source,
            })
        });
    answer(core, live, user, result)
}

/// Several users' presence in one batch request; single reads if the batch fails as a whole.
async fn read_batch(
    core: &Core,
    live: &Live,
    url: &Url,
    users: Vec<(usize, String)>,
) -> Vec<(usize, Presence)> {
    let urls: Option<Vec<Url>> = users
        .iter()
        .map(|(_, u)| presence_url(&live.app.people, u))
        .collect();
    let parts = match urls {
        Some(urls) => batch_call(core, url, &urls).await,
        None => Err(UcwaError::Protocol {
            url: url.to_string(),
            what: "people link cannot take a path".into(),
        }),
    };
    match parts {
        Ok(parts) => users
            .into_iter()
            .zip(parts)
            .map(|((i, user), part)| {
                let result = if part.status == 200 {
                    parse_presence(&part.body).map_err(|source| UcwaError::Body {
                        url: url.to_string(),
                        source,
                    })
                } else {
                    let e = crate::protocol::parse_error_body(&part.body);
                    let (code, subcode, message) = (e.code, e.subcode, e.message);
                    Err(UcwaError::Status {
                        url: url.to_string(),
                        status: part.status,
                        code,
                        subcode,
                        message,
                        retry_after: None,
                    })
                };
                (i, answer(core, live, &user, result))
            })
            .collect(),
        Err(e) => {
            debug!(error = %error_chain(&e), users = users.len(), "Batch presence read failed; reading one by one.");
            let mut out = Vec::with_capacity(users.len());
            for (i, user) in users {
                out.push((i, read(core, live, &user).await));
            }
            out
        }
    }
}

async fn batch_call(core: &Core, url: &Url, urls: &[Url]) -> Result<Vec<batch::Part>, UcwaError> {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => {
            return Err(UcwaError::Protocol {
                url: url.to_string(),
                what: "batch link has no host".into(),
            });
        }
    };
    let paths: Vec<String> = urls
        .iter()
        .map(|u| {
            format!(
                "{}{}",
                u.path(),
                u.query().map(|q| format!("?{q}")).unwrap_or_default()
            )
        })
        .collect();
    let boundary = format!("{:016x}", rand::random::<u64>());
    let body = Body::Batch {
        body: batch::request_body(&boundary, &host, &paths),
        boundary,
    };
    let reply = core.api.call(Method::POST, url, &body, None).await?;
    let parts = batch::parse_response(reply.content_type.as_deref().unwrap_or(""), &reply.body)
        .map_err(|e| UcwaError::Protocol {
            url: url.to_string(),
            what: e.to_string(),
        })?;
    if parts.len() != urls.len() {
        return Err(UcwaError::Protocol {
            url: url.to_string(),
            what: format!("{} answers to {} requests", parts.len(), urls.len()),
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::{MAX_CACHED, presence_url, remember};
    use alertbridge_plugin_api::{Presence, PresenceState, kit::Setup, testing::TestHost};
    use reqwest::Url;

    fn sink(cache_ms: u64) -> crate::UcwaSink {
        crate::UcwaSink::new(Setup {
            instance: "lync".into(),
            kind: "ucwa".into(),
            config_toml: format!(
                "domain = \"contoso.com\"\nusername = \"a@contoso.com\"\npassword = \"p\"\n\
                 presence_cache_ms = {cache_ms}\n"
            ),
            host: TestHost::new("lync").host(),
        })
        .unwrap()
    }

    /// Recipients can come from alerts: asking about ever new addresses must not grow the
    /// cache without end (the old cache kept every answer forever, even with caching off).
    #[test]
    fn the_presence_cache_is_bounded_and_off_means_empty() {
        let on = sink(60_000);
        for i in 0..MAX_CACHED + 5_000 {
            let user = format!("sip:user{i}@contoso.com");
            remember(
                on.core(),
                &user,
                &Presence::new(&user, PresenceState::AVAILABLE),
            );
        }
        assert_eq!(on.core().presence_cache.lock().unwrap().len(), MAX_CACHED);
        let off = sink(0);
        remember(
            off.core(),
            "sip:a@contoso.com",
            &Presence::new("sip:a@contoso.com", PresenceState::AVAILABLE),
        );
        assert!(off.core().presence_cache.lock().unwrap().is_empty());
    }

    #[test]
    fn presence_url_appends_the_bare_user() {
        let people =
            Url::parse("https://lyncweb.contoso.com/ucwa/oauth/v1/applications/101/people")
                .unwrap();
        let url = presence_url(&people, "sip:sarad@contoso.com").unwrap();
        assert_eq!(
            url.as_str(),
            "https://lyncweb.contoso.com/ucwa/oauth/v1/applications/101/people/sarad@contoso.com/presence"
        );
    }
}
