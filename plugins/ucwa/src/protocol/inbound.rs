//! What people say to the bot, read from event channel events (UCWA 2.0 "Receive an IM"): an
//! incoming `messagingInvitation` (direction `Incoming`: `accept` link, `conversation`, the
//! sender in `_embedded.from`), and a completed `message` with direction `Incoming` in a
//! conversation (text in a `plainMessage` or `htmlMessage` data URL, the sender in its
//! `contact` / `participant` links). Text is decoded, HTML turned into plain text and bounded.

use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::{events::Event, link};

/// The most of a message's text handed on, in bytes (longer is cut at a character boundary).
pub const MAX_TEXT_BYTES: usize = alertbridge_plugin_api::kit::MAX_INBOUND_TEXT_BYTES;
/// The most of a data URL that is decoded; longer ones are cut before decoding.
pub const MAX_DATA_URL_BYTES: usize = 64 * 1024;
/// The longest conversation reference, sender URI or message id taken from the server.
pub const MAX_REF_BYTES: usize = 512;
/// The longest display name kept.
pub const MAX_NAME_BYTES: usize = 256;

/// A message someone sent in a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessage {
    /// The conversation's href (the reference the host answers into).
    pub conversation: String,
    /// `sip:user@domain`, lower-cased.
    pub user: String,
    pub name: Option<String>,
    /// Plain text, at most [`MAX_TEXT_BYTES`].
    pub text: String,
    /// The message's href (unique per conversation).
    pub id: String,
}

/// Someone started a conversation with the bot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingInvitation {
    pub conversation: String,
    /// The `accept` href.
    pub accept: String,
    pub user: String,
    pub name: Option<String>,
}

/// An inbound event worth acting on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    Invitation(IncomingInvitation),
    Message(IncomingMessage),
}

/// Why an incoming event was dropped (for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// No sender URI that looks like `user@domain`.
    UnknownUser,
    /// An href longer than [`MAX_REF_BYTES`] or missing.
    BadReference,
    /// No readable text.
    NoText,
}

/// Reads an inbound event: `None` for every event that is not one, `Some(Err)` for one that
/// is but cannot be used.
pub fn parse_incoming(event: &Event) -> Option<Result<Incoming, Dropped>> {
    let incoming = event.property("direction") == Some("Incoming");
    match (event.rel.as_str(), event.kind.as_str()) {
        ("messagingInvitation", "started") if incoming => Some(invitation(event)),
        ("message", "completed") if incoming && event.status.as_deref() != Some("Failure") => {
            Some(message(event))
        }
        _ => None,
    }
}

fn reference(href: Option<&str>) -> Result<String, Dropped> {
    match href {
        Some(h) if !h.is_empty() && h.len() <= MAX_REF_BYTES => Ok(h.to_owned()),
        _ => Err(Dropped::BadReference),
    }
}

fn invitation(event: &Event) -> Result<Incoming, Dropped> {
    let resource = event.resource.as_ref().ok_or(Dropped::BadReference)?;
    let from = resource.get("_embedded").and_then(|e| e.get("from"));
    let user = from
        .and_then(|f| f.get("uri"))
        .and_then(Value::as_str)
        .and_then(sip_user)
        .or_else(|| {
            from.and_then(|f| link(f, "contact"))
                .and_then(user_from_href)
        })
        .ok_or(Dropped::UnknownUser)?;
    let name = from
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .and_then(display_name);
    Ok(Incoming::Invitation(IncomingInvitation {
        conversation: reference(link(resource, "conversation"))?,
        accept: reference(link(resource, "accept"))?,
        user,
        name,
    }))
}

fn message(event: &Event) -> Result<Incoming, Dropped> {
    let resource = event.resource.as_ref().ok_or(Dropped::NoText)?;
    let user = link(resource, "contact")
        .and_then(user_from_href)
        .or_else(|| link(resource, "participant").and_then(user_from_href))
        .ok_or(Dropped::UnknownUser)?;
    let name = participant_title(resource).and_then(display_name);
    let text = if let Some(html) = link(resource, "htmlMessage").and_then(decode_data_url) {
        html_to_text(&html)
    } else if let Some(plain) = link(resource, "plainMessage").and_then(decode_data_url) {
        plain
    } else {
        return Err(Dropped::NoText);
    };
    let text = bound_text(&text);
    if text.is_empty() {
        return Err(Dropped::NoText);
    }
    Ok(Incoming::Message(IncomingMessage {
        conversation: reference(Some(event.sender_href.as_str()))?,
        user,
        name,
        text,
        id: reference(Some(event.href.as_str()))?,
    }))
}

fn participant_title(resource: &Value) -> Option<&str> {
    let l = resource.get("_links")?.get("participant")?;
    l.get("title")?.as_str()
}

fn display_name(name: &str) -> Option<String> {
    let name: String = name.chars().filter(|c| !c.is_control()).collect();
    let name = clip_bytes(name.trim(), MAX_NAME_BYTES);
    (!name.is_empty()).then_some(name)
}

/// `sip:alice@contoso.com` for `sip:Alice@Contoso.com` or `alice@contoso.com`; `None` unless it
/// is one `user@domain` of sane characters and length.
pub fn sip_user(uri: &str) -> Option<String> {
    let uri = uri.trim();
    let bare = match uri.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("sip:") => &uri[4..],
        _ => uri,
    };
    let (user, domain) = bare.split_once('@')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+'".contains(c))
    };
    if bare.len() > 254 || !ok(user) || !ok(domain) || !domain.contains('.') {
        return None;
    }
    Some(format!("sip:{}", bare.to_ascii_lowercase()))
}

/// The user named by the last path segment of a `people/{user}` or `participants/{user}` href.
pub fn user_from_href(href: &str) -> Option<String> {
    let path = href.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = percent_decode_str(last).decode_utf8().ok()?;
    sip_user(&last)
}

/// Decodes a `data:` URL (percent-encoded, `+` as space, or base64) to text; `None` if it is not
/// one or not UTF-8. At most [`MAX_DATA_URL_BYTES`] of it is read.
pub fn decode_data_url(url: &str) -> Option<String> {
    let rest = url.trim_start().strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let data = &data[..floor_boundary(data, MAX_DATA_URL_BYTES)];
    if meta
        .split(';')
        .any(|p| p.trim().eq_ignore_ascii_case("base64"))
    {
        let clean: String = data.chars().filter(|c| !c.is_whitespace()).collect();
        let clean = &clean[..clean.len() - clean.len() % 4];
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(clean)
            .ok()?;
        String::from_utf8(bytes).ok()
    } else {
        Some(
            percent_decode_str(&data.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        )
    }
}

fn floor_boundary(s: &str, max: usize) -> usize {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

fn clip_bytes(s: &str, max: usize) -> String {
    s[..floor_boundary(s, max)].to_owned()
}

/// Plain text of an IM: control characters other than line breaks and tabs removed, line
/// breaks normalized, trimmed, and cut to [`MAX_TEXT_BYTES`].
pub fn bound_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    clip_bytes(clean.trim(), MAX_TEXT_BYTES)
        .trim_end()
        .to_owned()
}

/// The text of an HTML fragment: tags dropped (`<br>`, `<p>`, `<div>` become line breaks), the
/// content of `script` / `style` dropped, entities decoded. Linear in the input; never renders.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len().min(MAX_TEXT_BYTES * 2));
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                decode_entities(rest, &mut out);
            }
            break;
        };
        if skip_until.is_none() {
            decode_entities(&rest[..lt], &mut out);
        }
        let tag_and_more = &rest[lt + 1..];
        let Some(gt) = tag_and_more.find('>') else {
            break; // an unterminated tag: the rest is not text
        };
        let tag = tag_and_more[..gt].trim().to_ascii_lowercase();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let closing = tag.starts_with('/');
        match skip_until {
            Some(end) if closing && name == end => skip_until = None,
            Some(_) => {}
            None => match name.as_str() {
                "script" | "style" | "head" | "title" if !closing && !tag.ends_with('/') => {
                    skip_until = Some(match name.as_str() {
                        "script" => "script",
                        "style" => "style",
                        "head" => "head",
                        _ => "title",
                    });
                }
                "br" | "p" | "div" | "li" | "tr" if !out.is_empty() && !out.ends_with('\n') => {
                    out.push('\n');
                }
                _ => {}
            },
        }
        rest = &tag_and_more[gt + 1..];
        if out.len() > MAX_TEXT_BYTES * 2 {
            break;
        }
    }
    out
}

fn decode_entities(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| entity(&after[..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            _ => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

fn entity(name: &str) -> Option<char> {
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => {
            let n = name.strip_prefix('#')?;
            let code = match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => n.parse().ok()?,
            };
            return char::from_u32(code).filter(|c| !c.is_control() || *c == '\n');
        }
    };
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::parse_events;

    /// The invitation of ReceiveAnIM.md step 8 and the message of step 16, abbreviated.
    const PAGE: &str = r#"{"_links":{"next":{"href":"/e?ack=3"}},"sender":[
 {"rel":"communication","href":"/ucwa/oauth/v1/applications/104/communication","events":[
  {"link":{"rel":"messagingInvitation","href":"/ucwa/oauth/v1/applications/104/communication/messagingInvitations/6408"},
   "_embedded":{"messagingInvitation":{"direction":"Incoming","importance":"Normal","state":"Connecting","subject":"",
    "_links":{"self":{"href":"/ucwa/oauth/v1/applications/104/communication/messagingInvitations/6408"},
     "conversation":{"href":"/ucwa/oauth/v1/applications/104/communication/conversations/eee0"},
     "accept":{"href":"/ucwa/oauth/v1/applications/104/communication/messagingInvitations/6408/accept"},
     "message":{"href":"data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"}},
    "_embedded":{"from":{"name":"Lene Aaling","uri":"sip:LeneA@contoso.com","rel":"participant"}}}},
   "type":"started"}]},
 {"rel":"conversation","href":"/ucwa/oauth/v1/applications/104/communication/conversations/eee0","events":[
  {"link":{"rel":"message","href":"/ucwa/oauth/v1/applications/104/communication/conversations/eee0/messaging/messages/2"},
   "status":"Success","_embedded":{"message":{"direction":"Incoming","timeStamp":"\/Date(1383784870271)\/","_links":{
    "contact":{"href":"/ucwa/oauth/v1/applications/104/people/lenea@contoso.com"},
    "participant":{"href":"/ucwa/oauth/v1/applications/104/communication/conversations/eee0/participants/lenea@contoso.com","title":"Lene Aaling"},
    "plainMessage":{"href":"data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"}}}},"type":"completed"},
  {"link":{"rel":"message","href":"/c/eee0/messaging/messages/3"},"status":"Success",
   "_embedded":{"message":{"direction":"Outgoing"}},"type":"completed"}]}]}"#;

    #[test]
    fn the_documented_invitation_and_message_are_read() {
        let events = parse_events(PAGE.as_bytes()).unwrap().events;
        let parsed: Vec<_> = events.iter().filter_map(parse_incoming).collect();
        assert_eq!(parsed.len(), 2, "the outgoing message is not inbound");
        assert_eq!(
            parsed[0],
            Ok(Incoming::Invitation(IncomingInvitation {
                conversation: "/ucwa/oauth/v1/applications/104/communication/conversations/eee0"
                    .into(),
                accept:
                    "/ucwa/oauth/v1/applications/104/communication/messagingInvitations/6408/accept"
                        .into(),
                user: "sip:lenea@contoso.com".into(),
                name: Some("Lene Aaling".into()),
            }))
        );
        let Ok(Incoming::Message(m)) = &parsed[1] else {
            panic!("{parsed:?}")
        };
        assert_eq!(m.text, "Hi Tosh");
        assert_eq!(m.user, "sip:lenea@contoso.com");
        assert_eq!(m.name.as_deref(), Some("Lene Aaling"));
        assert!(m.conversation.ends_with("/conversations/eee0"));
        assert!(m.id.ends_with("/messages/2"));
    }

    #[test]
    fn html_becomes_plain_text_without_markup_or_scripts() {
        assert_eq!(
            html_to_text(
                "<div><b>ack</b> 42</div><script>alert(1)</script><p>a &lt;b&gt; &amp;&#33;&#x3f;</p><br/>"
            ),
            "ack 42\na <b> &!?\n"
        );
        assert_eq!(html_to_text("x <unterminated"), "x ");
        assert_eq!(
            html_to_text("&bogus; & &#xffffffff;"),
            "&bogus; & &#xffffffff;"
        );
        assert_eq!(bound_text(&html_to_text("<style>p{}</style>  ok  ")), "ok");
    }

    #[test]
    fn text_and_names_are_bounded_and_senders_checked() {
        let long = "ü".repeat(10_000);
        let t = bound_text(&long);
        assert!(t.len() <= MAX_TEXT_BYTES && t.len() > MAX_TEXT_BYTES - 4);
        assert_eq!(bound_text("a\u{0}b\u{1b}[31m\r\nc "), "ab[31m\nc");
        assert_eq!(
            sip_user("SIP:Bob@Contoso.com"),
            Some("sip:bob@contoso.com".into())
        );
        assert_eq!(sip_user("bob"), None);
        assert_eq!(sip_user("a@b@c.com"), None);
        assert_eq!(sip_user("<script>@x.com"), None);
        assert_eq!(
            user_from_href("/x/people/alice%40contoso.com"),
            Some("sip:alice@contoso.com".into())
        );
        assert_eq!(
            decode_data_url("data:text/html;base64,PGI+aGk8L2I+").as_deref(),
            Some("<b>hi</b>")
        );
        assert_eq!(decode_data_url("http://x"), None);
        let huge = format!("data:text/plain,{}", "a".repeat(1 << 20));
        assert_eq!(
            decode_data_url(&huge).map(|s| s.len()),
            Some(MAX_DATA_URL_BYTES)
        );
    }
}
