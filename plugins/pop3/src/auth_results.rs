//! `Authentication-Results` (RFC 8601) as pure functions: parse one header field's value, and
//! decide whether the operator's own MTA (a named `authserv-id`) vouches for a sender's domain.
//!
//! Anyone can write an `Authentication-Results` header into a mail, naming any `authserv-id`.
//! The operator's MTA adds its own above everything the sender wrote (headers are prepended
//! hop by hop), and a careful MTA also strips incoming ones that claim its id (RFC 8601 §5).
//! So only the **topmost** header of the trusted id is read; any further ones with that id sit
//! below it and may be the sender's own.

/// One result of a header: `method=result` and its properties (`ptype.property=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodResult {
    /// Lowercase method name, without version (`dkim`, `spf`, `dmarc`, …).
    pub method: String,
    /// Lowercase result (`pass`, `fail`, `none`, …).
    pub result: String,
    /// `(ptype.property lowercase, value as written)`, e.g. `("header.d", "example.com")`.
    pub props: Vec<(String, String)>,
}

impl MethodResult {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed `Authentication-Results` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    /// Lowercase `authserv-id`.
    pub authserv_id: String,
    pub results: Vec<MethodResult>,
}

/// Parses one header value (after `Authentication-Results:`, folding allowed). `None` if it has
/// no `authserv-id`. A result that cannot be read is left out (it can only mean "not a pass").
pub fn parse(value: &str) -> Option<AuthResults> {
    let text = strip_comments(value);
    let mut sections = split_semicolons(&text).into_iter();
    let head = tokens(&sections.next()?);
    let authserv_id = head.first()?.to_ascii_lowercase();
    if authserv_id == "=" {
        return None;
    }
    let results = sections
        .filter_map(|s| method_result(&tokens(&s)))
        .collect();
    Some(AuthResults {
        authserv_id,
        results,
    })
}

/// `method[/version] = result` followed by `name = value` pairs.
fn method_result(tokens: &[String]) -> Option<MethodResult> {
    let mut t = tokens.iter().map(String::as_str).peekable();
    let mut method = t.next()?.to_ascii_lowercase();
    if let Some((name, _version)) = method.split_once('/') {
        method = name.to_owned();
    } else if t.peek().is_some_and(|n| n.starts_with('/')) {
        // `dkim / 1`: the version as tokens of its own.
        let v = t.next()?;
        if v == "/" {
            t.next()?;
        }
    }
    if method.is_empty() || t.next()? != "=" {
        return None;
    }
    let result = t.next()?.to_ascii_lowercase();
    if result == "=" {
        return None;
    }
    let mut props = Vec::new();
    while let Some(name) = t.next() {
        if t.next() != Some("=") {
            break;
        }
        let Some(value) = t.next() else { break };
        props.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    Some(MethodResult {
        method,
        result,
        props,
    })
}

/// Removes RFC 5322 comments (nested, with quoted-pairs), leaving quoted strings intact.
fn strip_comments(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => {
                depth += 1;
                out.push(' ');
            }
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            _ => out.push(c),
        }
    }
    out
}

/// Splits at `;` outside quoted strings.
fn split_semicolons(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        let last = out.last_mut().expect("never empty");
        if escaped {
            escaped = false;
            last.push(c);
            continue;
        }
        match c {
            '\\' if quoted => {
                escaped = true;
                last.push(c);
            }
            '"' => {
                quoted = !quoted;
                last.push(c);
            }
            ';' if !quoted => out.push(String::new()),
            _ => last.push(c),
        }
    }
    out
}

/// Words separated by whitespace, `=` as a token of its own, quoted strings unquoted (and glued
/// to what directly follows them, as in `"a b"@example.com`).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if quoted {
            match c {
                _ if escaped => {
                    escaped = false;
                    cur.push(c);
                }
                '\\' => escaped = true,
                '"' => quoted = false,
                _ => cur.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '=' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push("=".to_owned());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Why the trusted MTA did (or did not) vouch for a sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The method (`dkim`, `spf`, `dmarc`) that passed for the sender's domain.
    Pass(&'static str),
    /// No `Authentication-Results` header of the trusted id.
    NoHeader,
    /// The trusted header shows no pass for the domain.
    NoPass,
    /// The mail has no single usable `From:` address.
    NoSender,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pass(m) => write!(f, "{m}=pass"),
            Self::NoHeader => f.write_str("no Authentication-Results header of the trusted MTA"),
            Self::NoPass => f.write_str(
                "the trusted MTA's Authentication-Results show no dkim, spf or dmarc pass for the sender's domain",
            ),
            Self::NoSender => f.write_str("no single From address"),
        }
    }
}

/// Whether the topmost `Authentication-Results` header (of `headers`, top first) whose
/// `authserv-id` is `authserv_id` shows a pass for the domain of `sender`:
/// `dkim=pass` with `header.d` (or the domain of `header.i`) equal to it, `spf=pass` with
/// `smtp.mailfrom` in it, or `dmarc=pass` with `header.from` equal to it. Domains compare
/// exactly (no parent domains), case-insensitively.
pub fn vouches<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    authserv_id: &str,
    sender: Option<&str>,
) -> Verdict {
    let Some(domain) = sender
        .and_then(|s| s.rsplit_once('@'))
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
    else {
        return Verdict::NoSender;
    };
    let Some(trusted) = headers
        .into_iter()
        .filter_map(parse)
        .find(|h| h.authserv_id.eq_ignore_ascii_case(authserv_id))
    else {
        return Verdict::NoHeader;
    };
    let same = |value: Option<&str>| {
        value.is_some_and(|v| {
            let d = v.rsplit_once('@').map_or(v, |(_, d)| d);
            d.trim_end_matches('.').eq_ignore_ascii_case(&domain)
        })
    };
    for r in trusted.results.iter().filter(|r| r.result == "pass") {
        let pass = match r.method.as_str() {
            "dkim" => Some("dkim").filter(|_| {
                same(r.prop("header.d")) || same(r.prop("header.i").filter(|i| i.contains('@')))
            }),
            "spf" => Some("spf").filter(|_| same(r.prop("smtp.mailfrom"))),
            "dmarc" => Some("dmarc").filter(|_| same(r.prop("header.from"))),
            _ => None,
        };
        if let Some(method) = pass {
            return Verdict::Pass(method);
        }
    }
    Verdict::NoPass
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, result: &str, props: &[(&str, &str)]) -> MethodResult {
        MethodResult {
            method: method.into(),
            result: result.into(),
            props: props
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }
    }

    /// Examples from RFC 8601 Appendix B and real MTAs, with what they parse to.
    #[test]
    fn golden_headers() {
        let cases: &[(&str, AuthResults)] = &[
            // RFC 8601 B.2: nothing done.
            (
                "example.org 1; none",
                AuthResults {
                    authserv_id: "example.org".into(),
                    results: vec![],
                },
            ),
            // RFC 8601 B.3: one result, with a comment.
            (
                "example.com;\r\n                spf=pass smtp.mailfrom=example.net",
                AuthResults {
                    authserv_id: "example.com".into(),
                    results: vec![r("spf", "pass", &[("smtp.mailfrom", "example.net")])],
                },
            ),
            // RFC 8601 B.4: several results, comments everywhere.
            (
                "example.com;\r\n  auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n  spf=pass smtp.mailfrom=example.net",
                AuthResults {
                    authserv_id: "example.com".into(),
                    results: vec![
                        r("auth", "pass", &[("smtp.auth", "sender@example.net")]),
                        r("spf", "pass", &[("smtp.mailfrom", "example.net")]),
                    ],
                },
            ),
            // RFC 8601 B.6 (version, method versions, reason, quoted value).
            (
                "mail-router.example.net;\r\n  dkim=pass (good signature) header.d=newyork.example.com\r\n    header.b=oINEO8hg;\r\n  dkim/1=fail (bad signature) reason=\"bad \\\"x\\\" sig\" header.d=newyork.example.com\r\n    header.b=EToRSuvU",
                AuthResults {
                    authserv_id: "mail-router.example.net".into(),
                    results: vec![
                        r(
                            "dkim",
                            "pass",
                            &[
                                ("header.d", "newyork.example.com"),
                                ("header.b", "oINEO8hg"),
                            ],
                        ),
                        r(
                            "dkim",
                            "fail",
                            &[
                                ("reason", "bad \"x\" sig"),
                                ("header.d", "newyork.example.com"),
                                ("header.b", "EToRSuvU"),
                            ],
                        ),
                    ],
                },
            ),
            // Postfix + OpenDKIM / OpenDMARC / rspamd style.
            (
                " MX.Contoso.com (nested (comment; with = signs)); dkim=pass (2048-bit key; unprotected) header.d=contoso.com header.i=@contoso.com header.s=sel1 header.b=\"AbC;d=e\"; spf = pass (sender SPF authorized) smtp.mailfrom=\"odd user\"@contoso.com; dmarc=PASS (p=reject dis=none) header.from=contoso.com",
                AuthResults {
                    authserv_id: "mx.contoso.com".into(),
                    results: vec![
                        r(
                            "dkim",
                            "pass",
                            &[
                                ("header.d", "contoso.com"),
                                ("header.i", "@contoso.com"),
                                ("header.s", "sel1"),
                                ("header.b", "AbC;d=e"),
                            ],
                        ),
                        r("spf", "pass", &[("smtp.mailfrom", "odd user@contoso.com")]),
                        r("dmarc", "pass", &[("header.from", "contoso.com")]),
                    ],
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Some(want), "{text:?}");
        }
        assert_eq!(parse(""), None);
        assert_eq!(parse("  (only a comment)  "), None);
        // Broken results are left out, not guessed at.
        let broken = parse("mx; dkim; =pass header.d=x; spf=; dkim=pass header.d=ok.test").unwrap();
        assert_eq!(
            broken.results,
            vec![r("dkim", "pass", &[("header.d", "ok.test")])]
        );
    }

    const OURS: &str = "mx.contoso.com";

    #[test]
    fn a_pass_for_the_senders_domain_vouches() {
        let dkim = "mx.contoso.com; dkim=pass header.d=monitoring.contoso.com header.s=s";
        let spf = "mx.contoso.com; spf=pass smtp.mailfrom=bounce@monitoring.contoso.com";
        let dmarc = "mx.contoso.com; dmarc=pass header.from=monitoring.contoso.com";
        let who = Some("nagios@Monitoring.Contoso.com");
        assert_eq!(vouches([dkim], OURS, who), Verdict::Pass("dkim"));
        assert_eq!(vouches([spf], OURS, who), Verdict::Pass("spf"));
        assert_eq!(vouches([dmarc], OURS, who), Verdict::Pass("dmarc"));
        let auid = "MX.CONTOSO.COM; dkim=pass header.i=nagios@monitoring.contoso.com";
        assert_eq!(vouches([auid], OURS, who), Verdict::Pass("dkim"));
    }

    #[test]
    fn anything_else_does_not() {
        let who = Some("nagios@monitoring.contoso.com");
        // Another MTA's word counts for nothing.
        let theirs = "mx.evil.test; dkim=pass header.d=monitoring.contoso.com";
        assert_eq!(vouches([theirs], OURS, who), Verdict::NoHeader);
        assert_eq!(vouches([], OURS, who), Verdict::NoHeader);
        // A pass for another domain, a parent domain, or a result that is not a pass.
        for h in [
            "mx.contoso.com; dkim=pass header.d=evil.test",
            "mx.contoso.com; dkim=pass header.d=contoso.com",
            "mx.contoso.com; dkim=pass header.d=com",
            "mx.contoso.com; spf=pass smtp.helo=monitoring.contoso.com",
            "mx.contoso.com; spf=softfail smtp.mailfrom=monitoring.contoso.com",
            "mx.contoso.com; dkim=fail header.d=monitoring.contoso.com",
            "mx.contoso.com; dkim=pass header.i=monitoring.contoso.com",
            "mx.contoso.com; arc=pass header.d=monitoring.contoso.com",
            "mx.contoso.com; dkim=pass (header.d=monitoring.contoso.com) header.d=x.test",
            "mx.contoso.com; none",
        ] {
            assert_eq!(vouches([h], OURS, who), Verdict::NoPass, "{h}");
        }
        let pass = "mx.contoso.com; dkim=pass header.d=monitoring.contoso.com";
        assert_eq!(vouches([pass], OURS, None), Verdict::NoSender);
        assert_eq!(vouches([pass], OURS, Some("nobody")), Verdict::NoSender);
    }

    /// The sender writes a passing header of our id into the mail; our MTA adds its real
    /// (failing) one on top. Only the topmost counts.
    #[test]
    fn only_the_topmost_header_of_the_trusted_id_counts() {
        let who = Some("ceo@contoso.com");
        let real = "mx.contoso.com; dkim=none; spf=fail smtp.mailfrom=evil.test";
        let forged = "mx.contoso.com; dkim=pass header.d=contoso.com";
        let other = "relay.evil.test; dkim=pass header.d=contoso.com";
        assert_eq!(vouches([real, forged], OURS, who), Verdict::NoPass);
        assert_eq!(vouches([other, real, forged], OURS, who), Verdict::NoPass);
        // In the right order (ours on top, passing) it vouches.
        assert_eq!(
            vouches([forged, real], OURS, who),
            Verdict::Pass("dkim"),
            "the topmost is taken as ours"
        );
    }
}
