//! Presence of many users: concurrent `people/{user}/presence` reads (capped), answers cached
//! for `presence_cache_ms`.

use std::sync::{Arc, PoisonError};

use alertbridge_plugin_api::{ErrorKind, PluginError, Presence, PresenceState, error_chain};
use reqwest::{Method, Url};
use tokio::{task::JoinSet, time::Instant};

use crate::{
    api::Body,
    error::UcwaError,
    protocol::application::{parse_presence, presence_state},
    sink::{Core, Live},
};

/// The presence of each of `users` (in order, duplicates answered once each).
pub async fn presence(core: Arc<Core>, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
    let Some(live) = core.live(None).await else {
        return Err(PluginError::new(ErrorKind::TRANSIENT, "not signed in to UCWA"));
    };
    let mut answers: Vec<Option<Presence>> = vec![None; users.len()];
    let mut tasks = JoinSet::new();
    {
        let cache = core.presence_cache.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (i, user) in users.iter().enumerate() {
            match cache.get(user) {
                Some((at, p)) if now.duration_since(*at) < core.settings.presence_cache => answers[i] = Some(p.clone()),
                _ => {
                    let (core, live, user) = (core.clone(), live.clone(), user.clone());
                    tasks.spawn(async move { (i, read(&core, &live, &user).await) });
                }
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, presence)) = joined else { continue };
        answers[i] = Some(presence);
    }
    Ok(answers
        .into_iter()
        .zip(users)
        .map(|(p, user)| p.unwrap_or_else(|| Presence::new(user, PresenceState::UNKNOWN)))
        .collect())
}

/// `<people>/<user without sip:>/presence`, the pattern every documented sample shows.
fn presence_url(people: &Url, user: &str) -> Option<Url> {
    let bare = user.trim();
    let bare = if bare.len() > 4 && bare[..4].eq_ignore_ascii_case("sip:") { &bare[4..] } else { bare };
    let mut url = people.clone();
    url.path_segments_mut().ok()?.pop_if_empty().push(bare).push("presence");
    Some(url)
}

async fn read(core: &Core, live: &Live, user: &str) -> Presence {
    let Ok(_permit) = core.presence_reads.acquire().await else {
        return Presence::new(user, PresenceState::UNKNOWN);
    };
    let Some(url) = presence_url(&live.app.people, user) else {
        return Presence::new(user, PresenceState::UNKNOWN);
    };
    let result = core.api.call(Method::GET, &url, &Body::Empty, None).await.and_then(|reply| {
        parse_presence(&reply.body).map_err(|source| UcwaError::Body { url: url.to_string(), source })
    });
    match result {
        Ok(availability) => {
            let mut p = Presence::new(user, presence_state(&availability));
            p.detail = availability;
            core.presence_cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(user.to_owned(), (Instant::now(), p.clone()));
            p
        }
        Err(e) => {
            if e.is_application_gone() {
                core.lost(live.generation);
            }
            let mut p = Presence::new(user, PresenceState::UNKNOWN);
            p.detail = if e.status() == Some(404) { "no such user".to_owned() } else { error_chain(&e) };
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::presence_url;
    use reqwest::Url;

    #[test]
    fn presence_url_appends_the_bare_user() {
        let people = Url::parse("https://lyncweb.contoso.com/ucwa/oauth/v1/applications/101/people").unwrap();
        let url = presence_url(&people, "sip:sarad@contoso.com").unwrap();
        assert_eq!(url.as_str(), "https://lyncweb.contoso.com/ucwa/oauth/v1/applications/101/people/sarad@contoso.com/presence");
    }
}
