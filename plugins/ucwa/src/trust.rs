//! Where the client may send a request, and so the password and tokens: the scheme policy
//! (`https`; plain `http` only to loopback with `allow_http`), the deployment's hosts (the
//! autodiscover origins, hosts under the SIP domain, `trusted_hosts`), hops that never downgrade
//! to plain http, and the resolver that keeps `localhost` names on loopback (RFC 6761), which is
//! what makes "loopback" a property of the URL.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
};

/// A `trusted_hosts` entry: `host`, `host:port`, or `*.domain` / `*.domain:port` for every
/// host under `domain`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let text = entry.trim().to_ascii_lowercase();
        let (subdomains, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let bad = |why: &str| format!("`{entry}`: {why}");
        if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ', '*']) {
            return Err(bad(
                "expected a host name, `host:port` or `*.domain` (no scheme or path)",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed `[`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("unexpected text after `]`")),
            };
            (format!("[{addr}]"), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) if !p.contains(':') => (h.to_owned(), Some(p)),
                Some(_) => return Err(bad("write an IPv6 address in brackets")),
                None => (rest.to_owned(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))
            })
            .transpose()?;
        let url = Url::parse(&format!("https://{host}/")).map_err(|e| bad(&e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .trim_end_matches('.')
            .to_owned();
        if subdomains && url.domain().is_none() {
            return Err(bad("`*.` needs a domain name, not an address"));
        }
        Ok(Self {
            host,
            subdomains,
            port,
        })
    }

    fn matches(&self, host: &str, is_domain: bool, port: u16) -> bool {
        let host_ok = if self.subdomains {
            is_domain && host.ends_with(&format!(".{}", self.host))
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// The checked policy every URL the client calls goes through.
#[derive(Clone, Debug)]
pub struct Trust {
    allow_http: bool,
    /// `(scheme, host, port)` of each autodiscover start URL.
    origins: Vec<(String, String, u16)>,
    /// SIP domains: the domain itself and every host under it, any port.
    domains: Vec<String>,
    hosts: Vec<HostPattern>,
}

/// `Url::host_str` without a trailing dot.
fn host_of(url: &Url) -> Option<String> {
    url.host_str()
        .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

/// The domain of `alerts@contoso.com` / `sip:alerts@contoso.com`, if it has one.
pub fn sip_domain(username: &str) -> Option<String> {
    let (_, domain) = username.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let url = Url::parse(&format!("https://{domain}/")).ok()?;
    url.domain()
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('.').to_owned())
}

impl Trust {
    /// The policy for these start URLs, SIP domains and `trusted_hosts` entries.
    pub fn new(
        allow_http: bool,
        start: &[Url],
        domains: impl IntoIterator<Item = String>,
        hosts: Vec<HostPattern>,
    ) -> Self {
        let origins = start
            .iter()
            .filter_map(|u| {
                Some((
                    u.scheme().to_owned(),
                    host_of(u)?,
                    u.port_or_known_default()?,
                ))
            })
            .collect();
        let mut domains: Vec<String> = domains.into_iter().collect();
        domains.sort();
        domains.dedup();
        Self {
            allow_http,
            origins,
            domains,
            hosts,
        }
    }

    /// Whether `url` may be called: the scheme policy, then the deployment's hosts. The error
    /// names the host and says why.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        scheme_allowed(url, self.allow_http).map_err(str::to_owned)?;
        let (Some(host), Some(port)) = (host_of(url), url.port_or_known_default()) else {
            return Err("the URL has no host".into());
        };
        let is_domain = url.domain().is_some();
        let origin = self
            .origins
            .iter()
            .any(|(s, h, p)| s == url.scheme() && *h == host && *p == port);
        let in_domain = is_domain
            && self
                .domains
                .iter()
                .any(|d| host == *d || host.ends_with(&format!(".{d}")));
        let listed = self.hosts.iter().any(|p| p.matches(&host, is_domain, port));
        if origin || in_domain || listed {
            return Ok(());
        }
        let domains = if self.domains.is_empty() {
            "no SIP domain is configured".to_owned()
        } else {
            format!("not under {}", self.domains.join(" or "))
        };
        Err(format!(
            "host {host}:{port} is outside the deployment (not the autodiscover origin, \
             {domains}, not in trusted_hosts); nothing was sent there"
        ))
    }

    /// Whether the client may go from `from` to `to` (a redirect, a link, a token endpoint):
    /// never from https to plain http, and `to` must pass [`Trust::check`].
    pub fn check_hop(&self, from: &Url, to: &Url) -> Result<(), String> {
        if from.scheme() == "https" && to.scheme() != "https" {
            return Err(format!(
                "{} would downgrade from https to {}",
                host_of(to).unwrap_or_default(),
                to.scheme()
            ));
        }
        self.check(to)
    }
}

/// Whether `url`'s scheme may be used: `https`, or `http` to a loopback host when allowed.
pub fn scheme_allowed(url: &Url, allow_http: bool) -> Result<(), &'static str> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if !allow_http => {
            Err("plain http is not allowed (set allow_http for loopback tests)")
        }
        "http" if is_loopback(url) => Ok(()),
        "http" => Err("plain http is allowed only to loopback hosts"),
        _ => Err("not an http(s) URL"),
    }
}

/// `localhost` and the names under it (RFC 6761 §6.3), which [`LocalResolver`] keeps on loopback.
fn is_localhost_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host
            .len()
            .checked_sub(".localhost".len())
            .and_then(|i| host.get(i..))
            .is_some_and(|tail| tail.eq_ignore_ascii_case(".localhost"))
}

fn is_loopback(url: &Url) -> bool {
    match url.domain() {
        Some(name) => is_localhost_name(name),
        None => url
            .host_str()
            .map(|h| h.trim_matches(['[', ']']))
            .and_then(|h| h.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback()),
    }
}

/// Resolves `localhost` and `*.localhost` to the loopback addresses without asking DNS (RFC
/// 6761 §6.3, as curl and browsers do), and every other name through the system resolver. A
/// DNS answer can thus never move a "loopback" name off the machine.
#[derive(Debug, Default)]
pub struct LocalResolver;

impl LocalResolver {
    pub fn shared() -> Arc<Self> {
        Arc::new(Self)
    }
}

impl Resolve for LocalResolver {
    fn resolve(&self, name: Name) -> Resolving {
        if is_localhost_name(name.as_str()) {
            let addrs = [
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
            ];
            return Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) });
        }
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn trust(hosts: &[&str]) -> Trust {
        Trust::new(
            true,
            &[url("https://lyncdiscover.contoso.com")],
            sip_domain("sip:alerts@Contoso.com"),
            hosts
                .iter()
                .map(|h| HostPattern::parse(h).unwrap())
                .collect(),
        )
    }

    #[test]
    fn the_deployment_is_the_start_origin_the_sip_domain_and_the_listed_hosts() {
        let t = trust(&["lyncpool.contoso.net", "*.infra.lync.com", "10.0.0.5:4443"]);
        for ok in [
            "https://lyncdiscover.contoso.com/",
            "https://contoso.com/x",
            "https://lyncweb.contoso.com:4443/WebTicket/oauthtoken",
            "https://LYNCWEB.Contoso.COM./ucwa",
            "https://lyncpool.contoso.net/ucwa",
            "https://webpool1.infra.lync.com/ucwa",
            "https://10.0.0.5:4443/ucwa",
        ] {
            assert_eq!(t.check(&url(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "https://evil.com/WebTicket/oauthtoken",
            "https://contoso.com.evil.com/",
            "https://evilcontoso.com/",
            "https://infra.lync.com/",
            "https://pool2.contoso.net/",
            "https://10.0.0.5/ucwa",
            "https://10.0.0.6:4443/ucwa",
        ] {
            let e = t.check(&url(bad)).unwrap_err();
            let host = url(bad).host_str().unwrap().to_owned();
            assert!(
                e.contains(&host) && e.contains("outside the deployment"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_start_origin_is_exact_and_hops_never_downgrade() {
        let t = Trust::new(true, &[url("http://127.0.0.1:8080")], None, Vec::new());
        assert_eq!(t.check(&url("http://127.0.0.1:8080/a")), Ok(()));
        assert!(t.check(&url("http://127.0.0.1:8081/a")).is_err());
        assert!(t.check(&url("http://localhost:8080/a")).is_err());
        let t = trust(&[]);
        let e = t
            .check_hop(
                &url("https://lyncweb.contoso.com/WebTicket/oauthtoken"),
                &url("http://lyncweb.contoso.com/WebTicket/oauthtoken"),
            )
            .unwrap_err();
        assert!(e.contains("downgrade"), "{e}");
    }

    #[test]
    fn http_only_to_loopback_names_and_addresses() {
        for ok in [
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
            "http://localhost:1/",
            "http://lyncweb.contoso.localhost:1/",
        ] {
            assert_eq!(scheme_allowed(&url(ok), true), Ok(()), "{ok}");
            assert!(scheme_allowed(&url(ok), false).is_err(), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com/",
            "http://10.0.0.1/",
            "ftp://localhost/",
        ] {
            assert!(scheme_allowed(&url(bad), true).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns_parse_or_say_why_not() {
        assert_eq!(
            HostPattern::parse("*.Infra.Lync.com:443").unwrap(),
            HostPattern {
                host: "infra.lync.com".into(),
                subdomains: true,
                port: Some(443)
            }
        );
        assert!(HostPattern::parse("[::1]:8443").is_ok());
        for bad in [
            "https://x.com",
            "x.com/path",
            "",
            "*.10.0.0.1",
            "a:b",
            "*",
            "a:1:2",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(sip_domain("alerts"), None);
        assert_eq!(
            sip_domain("sip:a@Contoso.COM").as_deref(),
            Some("contoso.com")
        );
    }

    #[tokio::test]
    async fn localhost_names_resolve_to_loopback_without_dns() {
        let name: Name = "lyncweb.contoso.localhost".parse().unwrap();
        let addrs: Vec<SocketAddr> = LocalResolver.resolve(name).await.unwrap().collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
        assert!(!addrs.is_empty());
    }
}
