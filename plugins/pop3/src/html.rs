//! HTML → plain text for alert bodies: block elements become line breaks, links keep their
//! target, `head`/`style`/`script` are dropped and character references are decoded.

/// Converts an HTML document or fragment to text. Never fails: broken markup yields text.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut skip_until: Option<&'static str> = None;
    let mut href: Option<String> = None;
    let mut link_start = 0;
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        if skip_until.is_none() {
            push_text(&mut out, &rest[..lt]);
        }
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            if skip_until.is_none() {
                push_text(&mut out, rest);
            }
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if let Some(end) = skip_until {
            if closing && name == end {
                skip_until = None;
            }
            continue;
        }
        match name.as_str() {
            "head" | "style" | "script" | "title" | "template" if !closing => {
                skip_until = Some(match name.as_str() {
                    "head" => "head",
                    "style" => "style",
                    "script" => "script",
                    "title" => "title",
                    _ => "template",
                });
            }
            "br" | "p" | "div" | "tr" | "table" | "ul" | "ol" | "blockquote" | "pre" | "hr"
            | "section" | "article" | "header" | "footer" | "h1" | "h2" | "h3" | "h4" | "h5"
            | "h6" => out.push('\n'),
            "li" if !closing => out.push_str("\n- "),
            "td" | "th" if !closing => out.push(' '),
            "a" if !closing => {
                href = attribute(tag, "href");
                link_start = out.len();
            }
            "a" => {
                if let Some(h) = href
                    .take()
                    .filter(|h| !h.starts_with('#') && !h.starts_with("mailto:"))
                    && !out[link_start..].contains(h.as_str())
                {
                    out.push_str(" <");
                    out.push_str(&h);
                    out.push('>');
                }
            }
            _ => {}
        }
    }
    out
}

/// Appends text with whitespace runs collapsed to one space and references decoded.
fn push_text(out: &mut String, text: &str) {
    let decoded = decode_references(text);
    for (i, word) in decoded
        .split(|c: char| c.is_whitespace() && c != '\u{a0}')
        .enumerate()
    {
        if i > 0 && !out.ends_with([' ', '\n']) && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word.replace('\u{a0}', " "));
    }
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &tag[at..];
    let value = match value.chars().next()? {
        q @ ('"' | '\'') => value[1..].split(q).next()?,
        _ => value
            .split(|c: char| c.is_whitespace() || c == '>')
            .next()?,
    };
    Some(decode_references(value))
}

/// Decodes `&name;`, `&#NNN;` and `&#xHH;`; unknown references stay as written.
fn decode_references(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '#')
            .map(|i| i + 1);
        let decoded = match end {
            Some(end) if rest[end..].starts_with(';') => {
                reference(&rest[1..end]).map(|c| (c, end + 1))
            }
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn reference(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "euro" => '€',
        "copy" => '©',
        "reg" => '®',
        "deg" => '°',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "laquo" => '«',
        "raquo" => '»',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_links_and_references() {
        let html = "<html><head><title>t</title><style>p {color: red}</style></head><body>\r\n<h1>High latency</h1>\r\n\
                    <p>p99 is <b>2.3&nbsp;s</b> on <i>api-01</i> &amp; api-02.</p><p>Runbook: <a href=\"https://rb.test/x\">latency</a>\
                    <br>Ticket &#8594; &#x41;&unknown; A&B</p><ul><li>one<li>two</ul><!-- <p>hidden</p> --></body></html>";
        assert_eq!(
            html_to_text(html),
            "\nHigh latency\n\np99 is 2.3 s on api-01 & api-02.\n\nRunbook: latency <https://rb.test/x>\nTicket → A&unknown; A&B\n\n\n- one\n- two\n"
        );
    }

    #[test]
    fn broken_markup_is_still_text() {
        assert_eq!(html_to_text("a < b and <b>c"), "a c");
        assert_eq!(html_to_text("x <unclosed"), "x <unclosed");
        assert_eq!(html_to_text("<script>alert(1)"), "");
    }
}
