//! `allowed_outbound_hosts`: which URLs a tenant may call, in Spin's syntax.
//!
//! An entry is `scheme://host[:port]`:
//! - scheme: `http`, `https`, or `*` for either;
//! - host: a name (`api.example.com`), `*.example.com` for any subdomain of
//!   `example.com` (not `example.com` itself), `*` for any name, or an IP
//!   literal (`127.0.0.1`, `[::1]`);
//! - port: a number, `*` for any, or nothing for the scheme's default (80
//!   for http, 443 for https).
//!
//! Scheme and port matter: `https://api.example.com` does not allow
//! `http://api.example.com` nor `https://api.example.com:8443`.
//!
//! Names are only half the check. After DNS, an address that is loopback,
//! private, link-local, unspecified or otherwise not on the public internet
//! is refused unless an entry names that very address as an IP literal
//! ([`AllowList::allows_address`]), so a permitted name cannot be pointed
//! at the host's own network (DNS rebinding, cloud metadata at
//! 169.254.169.254).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::addresses::{is_own_address, is_public};

/// Which URL schemes an entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Schemes {
    Http,
    Https,
    Any,
}

/// Which hosts an entry allows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hosts {
    /// One name, lower case.
    Name(String),
    /// Any name ending in `.{suffix}`.
    Subdomains(String),
    /// Any name.
    AnyName,
    /// One address, written as an IP literal.
    Address(IpAddr),
}

/// Which ports an entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ports {
    /// The default port of the request's scheme.
    Default,
    One(u16),
    Any,
}

/// One `allowed_outbound_hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    text: String,
    schemes: Schemes,
    hosts: Hosts,
    ports: Ports,
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The scheme of an outgoing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where an outgoing request goes, before DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower case; an IPv6 literal without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Allowed {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Allowed, String> {
        let bad = |why: &str| Err(format!("{text:?} {why}"));
        let Some((scheme, rest)) = text.split_once("://") else {
            return bad("needs a scheme: write it as \"https://api.example.com\"");
        };
        let schemes = match scheme.to_ascii_lowercase().as_str() {
            "http" => Schemes::Http,
            "https" => Schemes::Https,
            "*" => Schemes::Any,
            _ => return bad("has a scheme other than http, https or *"),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return bad("must be scheme://host[:port], with no path, query or user");
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| {
            format!("{text:?} has an unreadable host or port (an IPv6 address goes in brackets)")
        })?;
        let ports = match port {
            None => Ports::Default,
            Some("*") => Ports::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => Ports::One(port),
                _ => return bad("has a port that is not 1-65535 or *"),
            },
        };
        let host = host.to_ascii_lowercase();
        let hosts = if host == "*" {
            Hosts::AnyName
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Hosts::Address(ip.to_canonical())
        } else if let Some(suffix) = host.strip_prefix("*.") {
            if !is_name(suffix) {
                return bad("has a wildcard that is not *.domain");
            }
            Hosts::Subdomains(suffix.to_string())
        } else if is_name(&host) {
            Hosts::Name(host)
        } else {
            return bad("has a host that is neither a domain name, *.domain, * nor an IP address");
        };
        Ok(Allowed {
            text: text.to_string(),
            schemes,
            hosts,
            ports,
        })
    }

    fn allows_scheme_and_port(&self, scheme: Scheme, port: u16) -> bool {
        let scheme_ok = match self.schemes {
            Schemes::Any => true,
            Schemes::Http => scheme == Scheme::Http,
            Schemes::Https => scheme == Scheme::Https,
        };
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::One(allowed) => allowed == port,
            Ports::Default => scheme.default_port() == port,
        };
        scheme_ok && port_ok
    }

    fn allows_host(&self, host: &str) -> bool {
        match &self.hosts {
            Hosts::Name(name) => name == host,
            Hosts::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            Hosts::AnyName => host.parse::<IpAddr>().is_err(),
            Hosts::Address(ip) => host
                .parse::<IpAddr>()
                .is_ok_and(|host| host.to_canonical() == *ip),
        }
    }
}

/// A tenant's entries. Empty: no outbound request at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Allowed>);

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<&str> = self.0.iter().map(|e| e.text.as_str()).collect();
        f.write_str(&entries.join(", "))
    }
}

impl AllowList {
    /// Parses every entry, collecting every problem.
    pub fn parse(entries: &[String]) -> Result<AllowList, Vec<String>> {
        let mut allowed = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            match Allowed::parse(entry) {
                Ok(entry) => allowed.push(entry),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(AllowList(allowed))
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry that allows `target` by name, if any.
    pub fn allows(&self, target: &Target) -> Option<&Allowed> {
        self.0.iter().find(|entry| {
            entry.allows_scheme_and_port(target.scheme, target.port)
                && entry.allows_host(&target.host)
        })
    }

    /// Whether a resolved address may be connected to for `target`: any
    /// public address, or one that an entry names as an IP literal (with a
    /// matching scheme and port). `own` are the host's listening addresses
    /// (main, metrics, redirect, shutdown): each reachable only through an
    /// entry with that exact address and port.
    pub fn allows_address(&self, target: &Target, address: SocketAddr, own: &[SocketAddr]) -> bool {
        let ip = address.ip().to_canonical();
        let named = |exact_port: bool| {
            self.0.iter().any(|entry| {
                entry.hosts == Hosts::Address(ip)
                    && entry.allows_scheme_and_port(target.scheme, address.port())
                    && (!exact_port || matches!(entry.ports, Ports::One(p) if p == address.port()))
            })
        };
        if own.iter().any(|&own| is_own_address(address, own)) {
            return named(true);
        }
        is_public(ip) || named(false)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → (host, port).
fn split_host_port(text: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match text.split_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(':') => Some((host, Some(port))),
        Some(_) => None,
        None if text.is_empty() => None,
        None => Some((text, None)),
    }
}

/// A DNS name: dot-separated labels of letters, digits and hyphens.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn target(scheme: Scheme, host: &str, port: u16) -> Target {
        Target {
            scheme,
            host: host.into(),
            port,
        }
    }

    #[test]
    fn scheme_host_and_port_all_matter() {
        let allowed = list(&["https://api.example.com"]);
        assert!(
            allowed
                .allows(&target(Scheme::Https, "api.example.com", 443))
                .is_some()
        );
        assert!(
            allowed
                .allows(&target(Scheme::Http, "api.example.com", 80))
                .is_none()
        );
        assert!(
            allowed
                .allows(&target(Scheme::Https, "api.example.com", 8443))
                .is_none()
        );
        assert!(
            allowed
                .allows(&target(Scheme::Https, "example.com", 443))
                .is_none()
        );
        let local = list(&["http://127.0.0.1:9000"]);
        assert!(
            local
                .allows(&target(Scheme::Http, "127.0.0.1", 9000))
                .is_some()
        );
        assert!(
            local
                .allows(&target(Scheme::Http, "127.0.0.1", 9001))
                .is_none()
        );
        assert!(
            AllowList::default()
                .allows(&target(Scheme::Https, "a.b", 443))
                .is_none()
        );
    }

    #[test]
    fn wildcards_cover_subdomains_ports_and_schemes() {
        let subdomains = list(&["https://*.example.com"]);
        for host in ["a.example.com", "a.b.example.com"] {
            assert!(
                subdomains
                    .allows(&target(Scheme::Https, host, 443))
                    .is_some(),
                "{host}"
            );
        }
        for host in ["example.com", "badexample.com", "example.com.evil"] {
            assert!(
                subdomains
                    .allows(&target(Scheme::Https, host, 443))
                    .is_none(),
                "{host}"
            );
        }
        let ports = list(&["https://api.example.com:*"]);
        assert!(
            ports
                .allows(&target(Scheme::Https, "api.example.com", 8443))
                .is_some()
        );
        assert!(
            ports
                .allows(&target(Scheme::Http, "api.example.com", 8443))
                .is_none()
        );
        let schemes = list(&["*://api.example.com"]);
        assert!(
            schemes
                .allows(&target(Scheme::Http, "api.example.com", 80))
                .is_some()
        );
        assert!(
            schemes
                .allows(&target(Scheme::Https, "api.example.com", 443))
                .is_some()
        );
        assert!(
            schemes
                .allows(&target(Scheme::Https, "api.example.com", 80))
                .is_none()
        );
        let any = list(&["https://*:*"]);
        assert!(any.allows(&target(Scheme::Https, "x.y", 1)).is_some());
        assert!(
            any.allows(&target(Scheme::Https, "10.0.0.1", 443))
                .is_none(),
            "a name wildcard never covers an IP literal"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (entry, why) in [
            ("api.example.com", "needs a scheme"),
            ("ftp://x.com", "scheme other than"),
            ("https://x.com/path", "no path"),
            ("https://x.com:0", "port"),
            ("https://x.com:http", "port"),
            ("https://**.x.com", "neither"),
            ("https://*.", "wildcard"),
            ("https://::1", "brackets"),
            ("https://user@x.com", "no path, query or user"),
        ] {
            let err = Allowed::parse(entry).unwrap_err();
            assert!(err.contains(why), "{entry}: {err}");
        }
        let problems =
            AllowList::parse(&["ftp://a".into(), "https://ok.com".into(), "b".into()]).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(
            Allowed::parse("http://[::1]:8080").unwrap().hosts,
            Hosts::Address("::1".parse().unwrap())
        );
    }

    #[test]
    fn internal_addresses_need_an_entry_of_their_own() {
        let by_name = list(&["http://svc.example.com:9000"]);
        let name = target(Scheme::Http, "svc.example.com", 9000);
        let public: SocketAddr = "93.184.216.34:9000".parse().unwrap();
        assert!(by_name.allows_address(&name, public, &[]));
        for internal in [
            "127.0.0.1:9000",
            "10.1.2.3:9000",
            "169.254.169.254:9000",
            "192.168.1.1:9000",
            "100.64.0.1:9000",
            "0.0.0.0:9000",
            "[::1]:9000",
            "[fe80::1]:9000",
            "[fd00::1]:9000",
            "[::ffff:127.0.0.1]:9000",
        ] {
            let address: SocketAddr = internal.parse().unwrap();
            assert!(!by_name.allows_address(&name, address, &[]), "{internal}");
        }
        let also_loopback = list(&["http://svc.example.com:9000", "http://127.0.0.1:9000"]);
        let loopback: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        assert!(also_loopback.allows_address(&name, loopback, &[]));
        let other_port: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        assert!(!also_loopback.allows_address(&name, other_port, &[]));
    }

    #[test]
    fn the_hosts_own_address_needs_an_exact_entry() {
        let own: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:8080".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let name = target(Scheme::Http, "me.example.com", 8080);
        let by_name = list(&["http://me.example.com:8080"]);
        assert!(
            !by_name.allows_address(&name, public, &[own]),
            "own public address"
        );
        let any_port = list(&["http://127.0.0.1:*"]);
        let literal = target(Scheme::Http, "127.0.0.1", 8080);
        assert!(!any_port.allows_address(&literal, loopback, &[own]));
        let exact = list(&["http://127.0.0.1:8080"]);
        assert!(exact.allows_address(&literal, loopback, &[own]));
    }

    #[test]
    fn targets_print_as_urls() {
        assert_eq!(
            target(Scheme::Https, "::1", 443).to_string(),
            "https://[::1]:443"
        );
        assert_eq!(target(Scheme::Http, "a.b", 80).to_string(), "http://a.b:80");
    }
}
