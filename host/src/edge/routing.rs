//! Which tenant, which version and which path a request is for.
//!
//! Pure functions of the `Host` header and the path, so every rule is unit
//! tested without a server:
//!
//! - `{slug}.{base_domain}[:port]` is tenant `slug`;
//! - the bare base domain (or an IP literal, which DNS rebinding cannot
//!   forge) is the host's control plane, where `/t/{slug}/...` reaches
//!   tenant `slug` exactly as its subdomain does — for clients that cannot
//!   resolve `*.localhost`;
//! - any other `Host` is refused (421): a browser tricked into sending our
//!   cookies under an attacker's name (DNS rebinding) gets nothing;
//! - a leading `/v{major}`, `/v{major.minor}` or `/v{major.minor.patch}`
//!   picks a version and is stripped before the guest sees the path.
//!
//! In single-component mode (`serve app.wasm`) there is no routing at all, as
//! with `wasmtime serve`: every request goes to the component, path
//! untouched, except the reserved prefix `/.mctx/`, which is the control plane.

use std::net::IpAddr;

use semver::Version;

use crate::run::tenants::VersionSelector;

/// The path prefix of the control plane in single-component mode.
pub(crate) const SINGLE_MODE_CONTROL_PREFIX: &str = "/.mctx";

/// How requests map to tenants.
#[derive(Clone, Debug)]
pub enum RoutingMode {
    /// One component serves everything; `slug` names it in logs and headers.
    Single { slug: String },
    /// Tenants by subdomain of `base_domain` (lower case).
    Multi { base_domain: String },
}

impl RoutingMode {
    /// Where the control plane (dashboard, log streams) is mounted.
    pub fn control_base(&self) -> &'static str {
        match self {
            RoutingMode::Single { .. } => SINGLE_MODE_CONTROL_PREFIX,
            RoutingMode::Multi { .. } => "",
        }
    }
}

/// Which browser origin a tenant's response is served on — what decides
/// how much of the visitor's browser state could reach it
/// (`crate::edge::boundary`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TenantOrigin {
    /// `{slug}.{base_domain}`: the tenant's own origin, which no other
    /// tenant and not the control plane shares.
    Own,
    /// `/t/{slug}` on the control plane's origin, shared with the host and
    /// every other tenant reached that way.
    ControlPlane,
    /// Single-component mode: the component owns the origin and the control
    /// plane lives under `/.mctx/` on it, as the operator chose.
    Single,
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The host's own endpoints; `path` is relative to the control plane.
    ControlPlane { path: String },
    /// A tenant; `path` is what the guest sees (prefixes stripped, query kept).
    Tenant {
        slug: String,
        version: VersionSelector,
        path: String,
        /// Whose origin the browser thinks the response comes from.
        origin: TenantOrigin,
    },
    /// A `Host` that is neither the base domain nor one of its subdomains.
    ForeignHost { host: String },
    /// No usable `Host` (HTTP/1.1 requires one).
    MissingHost,
}

/// Routes a request from its authority (URI authority or `Host` header) and
/// its path with query.
pub(crate) fn route(mode: &RoutingMode, authority: Option<&str>, path_and_query: &str) -> Route {
    match mode {
        RoutingMode::Single { slug } => {
            match strip_segment_prefix(path_and_query, SINGLE_MODE_CONTROL_PREFIX) {
                Some(rest) => Route::ControlPlane { path: rest },
                None => Route::Tenant {
                    slug: slug.clone(),
                    version: VersionSelector::Latest,
                    path: path_and_query.to_string(),
                    origin: TenantOrigin::Single,
                },
            }
        }
        RoutingMode::Multi { base_domain } => {
            let Some(host) = authority.map(host_name).filter(|h| !h.is_empty()) else {
                return Route::MissingHost;
            };
            if host == *base_domain || host.parse::<IpAddr>().is_ok() {
                return match strip_segment_prefix(path_and_query, "/t") {
                    Some(rest) => tenant_path_route(&rest),
                    None => Route::ControlPlane {
                        path: path_and_query.to_string(),
                    },
                };
            }
            match host
                .strip_suffix(base_domain.as_str())
                .and_then(|s| s.strip_suffix('.'))
            {
                Some(slug) if !slug.is_empty() => {
                    let (version, path) = split_version(path_and_query);
                    Route::Tenant {
                        slug: slug.to_string(),
                        version,
                        path,
                        origin: TenantOrigin::Own,
                    }
                }
                _ => Route::ForeignHost { host },
            }
        }
    }
}

/// `/t/{slug}[/v..]/rest` → the tenant route; `rest` is what follows `/t`.
fn tenant_path_route(rest: &str) -> Route {
    let trimmed = rest.strip_prefix('/').unwrap_or(rest);
    let end = trimmed.find(['/', '?']).unwrap_or(trimmed.len());
    let (slug, after) = trimmed.split_at(end);
    if slug.is_empty() {
        return Route::ControlPlane {
            path: format!("/t{rest}"),
        };
    }
    let (version, path) = split_version(&normalize(after));
    Route::Tenant {
        slug: slug.to_string(),
        version,
        path,
        origin: TenantOrigin::ControlPlane,
    }
}

/// The host name of an authority, lower case, without port or IPv6 brackets.
fn host_name(authority: &str) -> String {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// If `path` is `prefix` or starts with `prefix/` or `prefix?`, the rest
/// (made to start with `/`).
fn strip_segment_prefix(path: &str, prefix: &str) -> Option<String> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
        Some(normalize(rest))
    } else {
        None
    }
}

/// Makes a stripped remainder a valid origin-form path: `` → `/`, `?q` → `/?q`.
fn normalize(rest: &str) -> String {
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// Takes a leading version segment off a path.
fn split_version(path: &str) -> (VersionSelector, String) {
    let Some(after_v) = path.strip_prefix("/v") else {
        return (VersionSelector::Latest, path.to_string());
    };
    let end = after_v.find(['/', '?']).unwrap_or(after_v.len());
    let (segment, rest) = after_v.split_at(end);
    match parse_selector(segment) {
        Some(selector) => (selector, normalize(rest)),
        None => (VersionSelector::Latest, path.to_string()),
    }
}

fn parse_selector(segment: &str) -> Option<VersionSelector> {
    if !segment.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let numbers: Vec<&str> = segment.split('.').collect();
    let all_numeric = numbers
        .iter()
        .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if all_numeric {
        let n: Vec<u64> = numbers
            .iter()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        return match n[..] {
            [major] => Some(VersionSelector::Major(major)),
            [major, minor] => Some(VersionSelector::MajorMinor(major, minor)),
            [major, minor, patch] => {
                Some(VersionSelector::Exact(Version::new(major, minor, patch)))
            }
            _ => None,
        };
    }
    Version::parse(segment).ok().map(VersionSelector::Exact)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi() -> RoutingMode {
        RoutingMode::Multi {
            base_domain: "localhost".into(),
        }
    }

    /// A tenant reached on its own subdomain.
    fn tenant(slug: &str, version: VersionSelector, path: &str) -> Route {
        on(TenantOrigin::Own, slug, version, path)
    }

    fn on(origin: TenantOrigin, slug: &str, version: VersionSelector, path: &str) -> Route {
        Route::Tenant {
            slug: slug.into(),
            version,
            path: path.into(),
            origin,
        }
    }

    #[test]
    fn subdomain_picks_the_tenant() {
        assert_eq!(
            route(&multi(), Some("hello.localhost:8080"), "/x?y=1"),
            tenant("hello", VersionSelector::Latest, "/x?y=1")
        );
        assert_eq!(
            route(&multi(), Some("HELLO.LocalHost."), "/"),
            tenant("hello", VersionSelector::Latest, "/")
        );
        assert_eq!(
            route(&multi(), Some("a.b.localhost"), "/"),
            tenant("a.b", VersionSelector::Latest, "/")
        );
    }

    #[test]
    fn version_prefixes_are_parsed_and_stripped() {
        let r = |path| route(&multi(), Some("s.localhost"), path);
        assert_eq!(r("/v1/mcp"), tenant("s", VersionSelector::Major(1), "/mcp"));
        assert_eq!(r("/v1"), tenant("s", VersionSelector::Major(1), "/"));
        assert_eq!(
            r("/v2?x=1"),
            tenant("s", VersionSelector::Major(2), "/?x=1")
        );
        assert_eq!(
            r("/v1.2/a"),
            tenant("s", VersionSelector::MajorMinor(1, 2), "/a")
        );
        assert_eq!(
            r("/v1.2.3/a"),
            tenant("s", VersionSelector::Exact(Version::new(1, 2, 3)), "/a")
        );
        assert_eq!(
            r("/v1.0.0-beta.1/a"),
            tenant(
                "s",
                VersionSelector::Exact(Version::parse("1.0.0-beta.1").unwrap()),
                "/a"
            )
        );
        // Not version segments: left alone.
        assert_eq!(
            r("/videos"),
            tenant("s", VersionSelector::Latest, "/videos")
        );
        assert_eq!(r("/v1x"), tenant("s", VersionSelector::Latest, "/v1x"));
        assert_eq!(r("/v/1"), tenant("s", VersionSelector::Latest, "/v/1"));
        assert_eq!(
            r("/api/v1"),
            tenant("s", VersionSelector::Latest, "/api/v1")
        );
    }

    #[test]
    fn control_plane_and_path_routing() {
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert_eq!(
                route(&multi(), Some(host), "/healthz"),
                Route::ControlPlane {
                    path: "/healthz".into()
                }
            );
            assert_eq!(
                route(&multi(), Some(host), "/t/hello/v1/mcp?a"),
                on(
                    TenantOrigin::ControlPlane,
                    "hello",
                    VersionSelector::Major(1),
                    "/mcp?a"
                )
            );
        }
        let r = |path| route(&multi(), Some("localhost"), path);
        assert_eq!(
            r("/t/hello"),
            on(
                TenantOrigin::ControlPlane,
                "hello",
                VersionSelector::Latest,
                "/"
            )
        );
        assert_eq!(
            r("/t/hello?q=1"),
            on(
                TenantOrigin::ControlPlane,
                "hello",
                VersionSelector::Latest,
                "/?q=1"
            )
        );
        assert_eq!(
            r("/t/hello/"),
            on(
                TenantOrigin::ControlPlane,
                "hello",
                VersionSelector::Latest,
                "/"
            )
        );
        assert_eq!(r("/tx"), Route::ControlPlane { path: "/tx".into() });
        assert_eq!(r("/t/"), Route::ControlPlane { path: "/t/".into() });
    }

    #[test]
    fn foreign_and_missing_hosts() {
        assert_eq!(
            route(&multi(), Some("evil.example.com"), "/t/x/mcp"),
            Route::ForeignHost {
                host: "evil.example.com".into()
            }
        );
        assert_eq!(
            route(&multi(), Some("notlocalhost"), "/"),
            Route::ForeignHost {
                host: "notlocalhost".into()
            }
        );
        assert_eq!(
            route(&multi(), Some(".localhost"), "/"),
            Route::ForeignHost {
                host: ".localhost".into()
            }
        );
        assert_eq!(route(&multi(), None, "/"), Route::MissingHost);
        assert_eq!(route(&multi(), Some(""), "/"), Route::MissingHost);
    }

    #[test]
    fn single_mode_sends_everything_to_the_component() {
        let single = RoutingMode::Single {
            slug: "default".into(),
        };
        assert_eq!(
            route(&single, Some("anything"), "/v1/x"),
            on(
                TenantOrigin::Single,
                "default",
                VersionSelector::Latest,
                "/v1/x"
            )
        );
        assert_eq!(
            route(&single, None, "/t/x"),
            on(
                TenantOrigin::Single,
                "default",
                VersionSelector::Latest,
                "/t/x"
            )
        );
        assert_eq!(
            route(&single, None, "/.mctx/healthz"),
            Route::ControlPlane {
                path: "/healthz".into()
            }
        );
        assert_eq!(
            route(&single, None, "/.mctxfoo"),
            on(
                TenantOrigin::Single,
                "default",
                VersionSelector::Latest,
                "/.mctxfoo"
            )
        );
    }

    #[test]
    fn selectors_accept_the_right_versions() {
        let v = |s| Version::parse(s).unwrap();
        assert!(VersionSelector::Major(1).accepts(&v("1.9.0")));
        assert!(!VersionSelector::Major(1).accepts(&v("2.0.0")));
        assert!(!VersionSelector::Major(1).accepts(&v("1.0.0-rc.1")));
        assert!(VersionSelector::MajorMinor(1, 2).accepts(&v("1.2.7")));
        assert!(!VersionSelector::MajorMinor(1, 2).accepts(&v("1.3.0")));
        assert!(VersionSelector::Exact(v("1.0.0-rc.1")).accepts(&v("1.0.0-rc.1")));
    }
}
