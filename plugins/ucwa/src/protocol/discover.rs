//! Autodiscover and authentication bodies: the root / user documents (`redirect`, `user`,
//! `applications` links), the `WWW-Authenticate: MsRtcOAuth` challenge, the password grant
//! request and the token response.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::link;

/// What an autodiscover document tells the client to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// Done: the UCWA `applications` URL.
    Applications(String),
    /// Ask again at this URL (hybrid / another pool).
    Redirect(String),
    /// Follow the `user` link (authenticated).
    User(String),
}

/// Reads a root or user document. `applications` wins over `redirect`, which wins over `user`.
pub fn parse_discovery(body: &[u8]) -> Result<Option<Discovery>, serde_json::Error> {
    let v: Value = serde_json::from_slice(body)?;
    Ok(if let Some(h) = link(&v, "applications") {
        Some(Discovery::Applications(h.to_owned()))
    } else if let Some(h) = link(&v, "redirect") {
        Some(Discovery::Redirect(h.to_owned()))
    } else {
        link(&v, "user").map(|h| Discovery::User(h.to_owned()))
    })
}

/// The `MsRtcOAuth` challenge: where to get a token and which grants it takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub href: String,
    pub grant_types: Vec<String>,
}

impl Challenge {
    /// Whether the password grant is offered (an empty list is taken as "not said").
    pub fn offers_password(&self) -> bool {
        self.grant_types.is_empty() || self.grant_types.iter().any(|g| g == "password")
    }
}

/// Finds and parses the `MsRtcOAuth` one among a response's `WWW-Authenticate` values. The
/// `href` may be quoted or not; `grant_type` is a quoted comma-separated list.
pub fn parse_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
    values.into_iter().find_map(|value| {
        let value = value.trim();
        let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("MsRtcOAuth") {
            return None;
        }
        let params = auth_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let href = get("href").filter(|h| !h.is_empty())?;
        let grant_types = get("grant_type")
            .map(|g| {
                g.split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(Challenge { href, grant_types })
    })
}

/// Splits `k=v, k="v,w"` auth parameters, honouring quotes.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value.trim().to_owned()));
    }
}

/// Characters escaped in form values: everything but `A-Z a-z 0-9 - . _ ~`.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The body of the password grant (`application/x-www-form-urlencoded`).
pub fn password_grant(username: &str, password: &str) -> String {
    format!(
        "grant_type=password&username={}&password={}",
        utf8_percent_encode(username, FORM),
        utf8_percent_encode(password, FORM)
    )
}

/// A granted token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct TokenGrant {
    pub access_token: String,
    #[serde(default = "default_token_type")]
    pub token_type: String,
    /// Seconds; the docs' generic example says 3600 when absent.
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_token_type() -> String {
    "Bearer".into()
}

fn default_expires_in() -> u64 {
    3600
}

impl TokenGrant {
    /// The `Authorization` header value: `<token_type> <access_token>`.
    pub fn authorization(&self) -> String {
        format!("{} {}", self.token_type, self.access_token)
    }
}

/// A token endpoint's answer: the grant, or its `error` field.
pub fn parse_token(body: &[u8]) -> Result<Result<TokenGrant, String>, serde_json::Error> {
    let v: Value = serde_json::from_slice(body)?;
    if let Some(error) = v.get("error").and_then(Value::as_str) {
        return Ok(Err(super::clip(error)));
    }
    serde_json::from_value(v).map(Ok)
}

/// Whether a 403 says the token was rejected (`Warning: 120 .. "InvalidToken"` or
/// `X-Ms-diagnostics: 28055`).
pub fn is_invalid_token<'a>(
    warning: impl IntoIterator<Item = &'a str>,
    diagnostics: Option<&str>,
) -> bool {
    warning.into_iter().any(|w| w.contains("InvalidToken"))
        || diagnostics.is_some_and(|d| d.trim_start().starts_with("28055"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_user_and_redirect_documents() {
        let root = br#"{"_links":{
 "self":{"href":"https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root?originalDomain=contoso.com"},
 "user":{"href":"https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user?originalDomain=contoso.com"},
 "xframe":{"href":"https://lyncweb.contoso.com/Autodiscover/XFrame/XFrame.html"}}}"#;
        assert_eq!(
            parse_discovery(root).unwrap(),
            Some(Discovery::User(
                "https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/oauth/user?originalDomain=contoso.com".into()
            ))
        );
        let user = br#"{"_links":{
 "self":{"href":"https://lyncweb.contoso.com/Autodiscover/AutodiscoverService.svc/root/user"},
 "applications":{"href":"https://lyncweb.contoso.com/ucwa/oauth/v1/applications"},
 "xframe":{"href":"https://lyncweb.contoso.com/Autodiscover/XFrame/XFrame.html"}}}"#;
        assert_eq!(
            parse_discovery(user).unwrap(),
            Some(Discovery::Applications(
                "https://lyncweb.contoso.com/ucwa/oauth/v1/applications".into()
            ))
        );
        let redirect = br#"{"_links":{"redirect":{"href":"https://contoso.com/Autodiscover/AutodiscoverService.svc/root"}}}"#;
        assert!(matches!(
            parse_discovery(redirect).unwrap(),
            Some(Discovery::Redirect(_))
        ));
        assert_eq!(parse_discovery(b"{}").unwrap(), None);
        assert!(parse_discovery(b"<html/>").is_err());
    }

    #[test]
    fn challenge_is_found_among_both_headers_quoted_or_not() {
        let bearer = r#"Bearer trusted_issuers="00000002-0000-0ff1-ce00-000000000000@contoso.com", client_id="00000004-0000-0ff1-ce00-000000000000""#;
        let quoted = r#"MsRtcOAuth href="https://lyncweb.contoso.com/WebTicket/oauthtoken",grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password""#;
        let c = parse_challenge([bearer, quoted]).unwrap();
        assert_eq!(c.href, "https://lyncweb.contoso.com/WebTicket/oauthtoken");
        assert_eq!(
            c.grant_types,
            [
                "urn:microsoft.rtc:windows",
                "urn:microsoft.rtc:anonmeeting",
                "password"
            ]
        );
        assert!(c.offers_password());
        let online = r#"MsRtcOAuth href="https://x/WebTicket/oauthtoken",grant_type="urn:microsoft.rtc:passive,urn:microsoft.rtc:anonmeeting""#;
        assert!(!parse_challenge([online]).unwrap().offers_password());
        let unquoted = r#"MsRtcOAuth href=https://contoso.com/WebTicket/oauthtoken,grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password""#;
        assert_eq!(
            parse_challenge([unquoted]).unwrap().href,
            "https://contoso.com/WebTicket/oauthtoken"
        );
        assert_eq!(parse_challenge([bearer]), None);
    }

    #[test]
    fn token_response_and_grant_body() {
        let ok = br#"{"access_token":"cwt=AAEB...buHc","expires_in":28289,"ms_rtc_identityscope":"local","token_type":"Bearer"}"#;
        let grant = parse_token(ok).unwrap().unwrap();
        assert_eq!(grant.authorization(), "Bearer cwt=AAEB...buHc");
        assert_eq!(grant.expires_in, 28289);
        let generic = parse_token(br#"{"access_token":"x","token_type":"Bearer"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(generic.expires_in, 3600);
        assert_eq!(
            parse_token(br#"{"error":"invalid_grant"}"#).unwrap(),
            Err("invalid_grant".to_owned())
        );
        assert_eq!(
            password_grant("lenea@contoso.com", "pass@word1&x y"),
            "grant_type=password&username=lenea%40contoso.com&password=pass%40word1%26x%20y"
        );
    }

    #[test]
    fn invalid_token_warning_is_recognized() {
        assert!(is_invalid_token(
            [r#"120 lyncweb.contoso.com "InvalidToken""#],
            None
        ));
        assert!(is_invalid_token(
            [],
            Some("28055;source=\"x\";reason=\"The OAuth token is invalid.\"")
        ));
        assert!(!is_invalid_token([], Some("28070;reason=\"origin\"")));
    }
}
