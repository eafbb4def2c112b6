//! The boundary between a visitor and a tenant: what of a visitor's request
//! reaches the tenant, and what of a tenant's response reaches the
//! visitor's browser. Decided here and nowhere else, so that docs/configuration.md's
//! "What a tenant receives" is this file in prose.
//!
//! A visitor may be signed in to the dashboard as an owner or an admin, and
//! the tenant is a stranger's code. So:
//!
//! - **The host's credentials never cross.** A bearer token or a cookie
//!   value the host signed (valid, expired or otherwise, checked by
//!   signature) is removed, whatever the origin. On the control plane's
//!   origin (`/t/{slug}`) no cookie crosses at all: every cookie there is
//!   the host's or another tenant's. In single-component mode the `session`
//!   cookie is scoped to `/.mctx` and removed should it come anyway.
//! - **A tenant cannot write the host's cookie.** It may set host-only
//!   cookies on its own origin: a `Set-Cookie` with a `Domain` attribute
//!   (which would reach the base domain or another tenant's subdomain) is
//!   dropped, so is one named like the host's session cookie where the host
//!   shares the origin, and on `/t/{slug}` every `Set-Cookie` is dropped
//!   (the jar there is the host's). `Clear-Site-Data` that would clear
//!   cookies is dropped too: cookies are cleared per site, not per origin.
//! - **A tenant's page on the control plane's origin runs sandboxed.** Every
//!   response on `/t/{slug}` carries `Content-Security-Policy: sandbox …`
//!   without `allow-same-origin`: the page's scripts run in an opaque
//!   origin, so the API and log stream (which accept only the control
//!   plane's origin) refuse them, and they cannot read the host's pages.
//!
//! Each dropped response header is counted (`tenantHeadersDropped` in
//! `/healthz` and metrics); what is removed from requests is not counted —
//! a signed-in visitor is not an attack.

use http::header::{AUTHORIZATION, COOKIE, HeaderName, HeaderValue, SET_COOKIE};
use http::{HeaderMap, Response};

use crate::base::auth::{SESSION_COOKIE, Sessions};
use crate::base::refusals::{Refusal, Refusals};
use crate::edge::routing::TenantOrigin;

/// What a page served on the control plane's origin may do: run scripts,
/// submit forms, open popups and downloads — everything but be of the
/// origin it was served from.
pub(crate) const SANDBOX_POLICY: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

const CLEAR_SITE_DATA: HeaderName = HeaderName::from_static("clear-site-data");

/// Removes from a request's headers every credential of the host's, before
/// the tenant sees them.
pub(crate) fn admit(headers: &mut HeaderMap, origin: TenantOrigin, sessions: &Sessions) {
    retain_values(headers, AUTHORIZATION, |value| {
        !bearer_token(value).is_some_and(|token| sessions.signed_by_us(token))
    });
    if origin == TenantOrigin::ControlPlane {
        headers.remove(COOKIE);
        return;
    }
    let cookies: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(COOKIE);
    for value in cookies {
        let Ok(text) = value.to_str() else {
            // Not text, so no token of ours: a JWT is ASCII.
            headers.append(COOKIE, value);
            continue;
        };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .filter(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let ours_by_name = origin == TenantOrigin::Single && is_session_name(name);
                !ours_by_name && !sessions.signed_by_us(value.trim().trim_matches('"'))
            })
            .collect();
        if !kept.is_empty() {
            let joined = kept.join("; ");
            headers.append(
                COOKIE,
                HeaderValue::from_str(&joined).expect("a subset of a valid header value"),
            );
        }
    }
}

/// Drops from a tenant's response what would reach past its own origin,
/// and sandboxes it where it shares the control plane's.
pub(crate) fn release<B>(response: &mut Response<B>, origin: TenantOrigin, refusals: &Refusals) {
    let headers = response.headers_mut();
    let dropped = retain_values(headers, SET_COOKIE, |value| {
        set_cookie_allowed(value.as_bytes(), origin)
    }) + retain_values(headers, CLEAR_SITE_DATA, |value| {
        !clears_cookies(value.as_bytes())
    });
    for _ in 0..dropped {
        refusals.count(Refusal::TenantHeaderDropped);
    }
    if origin == TenantOrigin::ControlPlane {
        // `append`: a policy of the tenant's own still applies as well.
        headers.append(
            http::header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX_POLICY),
        );
    }
}

/// Whether a tenant on `origin` may send this `Set-Cookie`.
fn set_cookie_allowed(value: &[u8], origin: TenantOrigin) -> bool {
    if origin == TenantOrigin::ControlPlane {
        return false;
    }
    // Not text: a browser would parse it somehow, so we do not guess.
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let mut parts = text.split(';');
    let name = parts
        .next()
        .and_then(|pair| pair.split_once('='))
        .map_or("", |(name, _)| name);
    let has_domain = parts.any(|attribute| {
        let key = attribute.split_once('=').map_or(attribute, |(key, _)| key);
        key.trim().eq_ignore_ascii_case("domain")
    });
    // A `Domain` cookie reaches sibling hosts: the control plane and other tenants.
    let names_ours = origin == TenantOrigin::Single && is_session_name(name);
    !has_domain && !names_ours
}

/// `session`, as a browser might store or match it: any case, any
/// whitespace, with or without a `__Host-`/`__Secure-` prefix.
fn is_session_name(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let name = name
        .strip_prefix("__host-")
        .or_else(|| name.strip_prefix("__secure-"))
        .unwrap_or(&name);
    name == SESSION_COOKIE
}

/// Whether a `Clear-Site-Data` value would clear cookies, which browsers
/// clear for the whole site — the control plane's included.
fn clears_cookies(value: &[u8]) -> bool {
    let text = String::from_utf8_lossy(value).to_ascii_lowercase();
    text.contains("cookies") || text.contains('*')
}

/// The token of an `Authorization: Bearer …` value (scheme in any case).
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Keeps only the values of `name` that `keep` accepts; returns how many
/// were removed.
fn retain_values(
    headers: &mut HeaderMap,
    name: HeaderName,
    mut keep: impl FnMut(&HeaderValue) -> bool,
) -> usize {
    if !headers.get_all(&name).iter().any(|v| !keep(v)) {
        return 0;
    }
    let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
    headers.remove(&name);
    let mut removed = 0;
    for value in values {
        if keep(&value) {
            headers.append(name.clone(), value);
        } else {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(&[7; 32]).unwrap()
    }

    fn request(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), value.parse().unwrap());
        }
        headers
    }

    fn values(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn host_tokens_never_reach_a_tenant() {
        let s = sessions();
        let ours = s.mint("alice", Duration::from_secs(60));
        let foreign = Sessions::new(&[8; 32])
            .unwrap()
            .mint("alice", Duration::from_secs(60));
        for origin in [TenantOrigin::Own, TenantOrigin::Single] {
            let mut headers = request(&[
                (AUTHORIZATION, &format!("bearer {ours}")),
                (COOKIE, &format!("theme=dark; session={ours}; jar={ours}")),
                (COOKIE, "x=1"),
            ]);
            admit(&mut headers, origin, &s);
            assert!(headers.get(AUTHORIZATION).is_none(), "{origin:?}");
            assert_eq!(
                values(&headers, COOKIE),
                ["theme=dark", "x=1"],
                "{origin:?}"
            );
        }
        // Tokens the host did not sign are the tenant's business.
        let mut headers = request(&[
            (AUTHORIZATION, &format!("Bearer {foreign}")),
            (COOKIE, &format!("session={foreign}")),
        ]);
        admit(&mut headers, TenantOrigin::Own, &s);
        assert_eq!(
            values(&headers, AUTHORIZATION),
            [format!("Bearer {foreign}")]
        );
        assert_eq!(values(&headers, COOKIE), [format!("session={foreign}")]);
        // Where the host shares the origin, `session` is the host's by name.
        admit(&mut headers, TenantOrigin::Single, &s);
        assert!(headers.get(COOKIE).is_none());
    }

    #[test]
    fn no_cookie_crosses_on_the_control_planes_origin() {
        let mut headers = request(&[(COOKIE, "a=1"), (AUTHORIZATION, "Basic dTpw")]);
        admit(&mut headers, TenantOrigin::ControlPlane, &sessions());
        assert!(headers.get(COOKIE).is_none());
        assert_eq!(values(&headers, AUTHORIZATION), ["Basic dTpw"]);
    }

    #[test]
    fn tenants_set_only_host_only_cookies_of_their_own() {
        use TenantOrigin::*;
        let allowed = |value: &str, origin| set_cookie_allowed(value.as_bytes(), origin);
        assert!(allowed("a=1; Path=/; HttpOnly", Own));
        assert!(
            allowed("session=mine; Path=/", Own),
            "its own origin, its own name"
        );
        assert!(!allowed("a=1; Domain=localhost", Own));
        assert!(!allowed("a=1; path=/;  DOMAIN =.localhost", Own));
        assert!(!allowed("a=1", ControlPlane));
        assert!(allowed("a=1", Single));
        for name in ["session", " Session", "__Host-session", "__Secure-SESSION"] {
            assert!(
                !allowed(&format!("{name}=x; Path=/.mctx"), Single),
                "{name}"
            );
        }
    }

    #[test]
    fn responses_are_released_with_what_stays_on_the_tenants_origin() {
        let refusals = Refusals::default();
        let mut response = Response::new(());
        let headers = response.headers_mut();
        headers.append(SET_COOKIE, "a=1".parse().unwrap());
        headers.append(SET_COOKIE, "b=1; Domain=localhost".parse().unwrap());
        headers.append(CLEAR_SITE_DATA, "\"cookies\"".parse().unwrap());
        headers.append(CLEAR_SITE_DATA, "\"cache\"".parse().unwrap());
        release(&mut response, TenantOrigin::Own, &refusals);
        assert_eq!(values(response.headers(), SET_COOKIE), ["a=1"]);
        assert_eq!(values(response.headers(), CLEAR_SITE_DATA), ["\"cache\""]);
        assert!(
            response
                .headers()
                .get(http::header::CONTENT_SECURITY_POLICY)
                .is_none()
        );

        let mut response = Response::new(());
        release(&mut response, TenantOrigin::ControlPlane, &refusals);
        assert_eq!(
            values(response.headers(), http::header::CONTENT_SECURITY_POLICY),
            [SANDBOX_POLICY]
        );
        assert_eq!(refusals.totals()["tenantHeadersDropped"], 2);
    }
}
