//! The dashboard: sign-in, the signed-in user's servers, and each server's
//! page with the live log modal. Server-rendered HTML plus one embedded
//! script and stylesheet (no build step, nothing from a CDN).
//!
//! Every value interpolated into HTML goes through [`escape`]; log messages
//! never touch HTML at all (the script inserts them as text).

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};

use crate::base::auth::{SESSION_COOKIE, Sessions, check_origin};
use crate::base::config::Status;
use crate::base::responses::{Body, error_response, full_body};
use crate::base::transport::{RequestBody, read_failure_status};
use crate::run::tenants::{Tenant, TenantRegistry};

const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const STYLE: &str = include_str!("../../assets/dashboard.css");

/// The largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The dashboard's routes, under the control plane's `base` path.
pub(crate) struct Dashboard<'a> {
    pub(crate) base: &'a str,
    pub(crate) sessions: &'a Sessions,
    pub(crate) tenants: &'a TenantRegistry,
}

impl Dashboard<'_> {
    /// Answers a dashboard route, or `None` if `route` is not one.
    pub(crate) async fn handle(
        &self,
        request: Request<RequestBody>,
        route: &str,
    ) -> Option<Response<Body>> {
        let response = match (request.method(), route) {
            (&Method::GET, "/") => self.redirect("/dev/servers"),
            (&Method::GET, "/assets/dashboard.js") => {
                asset(SCRIPT, "text/javascript; charset=utf-8")
            }
            (&Method::GET, "/assets/dashboard.css") => asset(STYLE, "text/css; charset=utf-8"),
            // A GET never signs anyone in: a link or an image on any page
            // could otherwise sign a visitor in as someone else (login
            // CSRF). `--dev` prints `/login#token=…`, which only fills the
            // form in; the visitor still presses the button.
            (&Method::GET, "/login") => self.login_page(StatusCode::OK, None),
            (&Method::POST, "/login" | "/logout") if !from_own_page(request.headers()) => {
                error_response(
                    StatusCode::FORBIDDEN,
                    "sign in and out only from this host's own pages (the form's Origin is not the control plane's)",
                )
            }
            (&Method::POST, "/login") => {
                let (parts, body) = request.into_parts();
                let head = Request::from_parts(parts, ());
                match read_form_token(body).await {
                    Ok(Some(token)) => self.sign_in(&head, &token),
                    Ok(None) => self.login_page(StatusCode::BAD_REQUEST, Some("paste a token")),
                    Err(status) => error_response(status, "the form did not arrive"),
                }
            }
            (&Method::POST, "/logout") => {
                let mut response = self.redirect("/login");
                let cookie = format!(
                    "{SESSION_COOKIE}=; Path={}; HttpOnly; SameSite=Lax; Max-Age=0",
                    self.cookie_path()
                );
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, cookie.parse().expect("valid cookie"));
                response
            }
            (&Method::GET, "/dev/servers") => match self.sessions.authenticate(request.headers()) {
                Ok(user) => self.servers_page(&user),
                Err(_) => self.redirect("/login"),
            },
            (&Method::GET, path) if path.starts_with("/dev/servers/") => {
                let slug = &path["/dev/servers/".len()..];
                match self.sessions.authenticate(request.headers()) {
                    Ok(user) => self.server_page(&user, slug, request.headers()),
                    Err(_) => self.redirect("/login"),
                }
            }
            _ => return None,
        };
        Some(response)
    }

    /// The session cookie's `Path`: the control plane's mount, so that in
    /// single-component mode (`/.mctx`) requests to the component never
    /// carry it. Host-only (no `Domain`): tenants' subdomains never get it.
    fn cookie_path(&self) -> &str {
        if self.base.is_empty() { "/" } else { self.base }
    }

    fn redirect(&self, to: &str) -> Response<Body> {
        let mut response = Response::new(full_body(""));
        *response.status_mut() = StatusCode::SEE_OTHER;
        let location = format!("{}{to}", self.base);
        response.headers_mut().insert(
            header::LOCATION,
            HeaderValue::from_str(&location).expect("paths are valid headers"),
        );
        response
    }

    /// Verifies a pasted token and sets it as the session cookie: over TLS
    /// (ours, or a proxy's that says so) `Secure` and `SameSite=Strict`.
    fn sign_in<B>(&self, request: &Request<B>, token: &str) -> Response<Body> {
        let headers = request.headers();
        let claims = match self.sessions.verify_claims(token) {
            Ok(claims) => claims,
            Err(e) => return self.login_page(StatusCode::UNAUTHORIZED, Some(&e.to_string())),
        };
        let max_age = claims.exp.saturating_sub(crate::base::auth::unix_now());
        // Behind a TLS-terminating proxy the cookie must be Secure too.
        let secure = crate::base::transport::over_tls(request)
            || headers
                .get("x-forwarded-proto")
                .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
        let path = self.cookie_path();
        let cookie = if secure {
            format!(
                "{SESSION_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}; Secure"
            )
        } else {
            format!(
                "{SESSION_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}"
            )
        };
        let mut response = self.redirect("/dev/servers");
        match HeaderValue::from_str(&cookie) {
            Ok(cookie) => {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
                response
            }
            Err(_) => self.login_page(
                StatusCode::BAD_REQUEST,
                Some("that token has characters a cookie cannot hold"),
            ),
        }
    }

    fn login_page(&self, status: StatusCode, error: Option<&str>) -> Response<Body> {
        let error = error.map_or(String::new(), |e| {
            format!(
                r#"<p class="error-text" id="login-error">{}</p>"#,
                escape(e)
            )
        });
        let body = format!(
            r#"<h1>Sign in</h1>
<div class="card">
  <form method="post" action="{base}/login">
    <p class="hint">Paste a session token (<code>mctx-host token --user YOU</code> prints one; <code>serve --dev</code> prints a link that fills it in).</p>
    {error}
    <textarea name="token" id="token" rows="4" required></textarea>
    <p><button class="primary" type="submit" id="sign-in">Sign in</button></p>
  </form>
</div>"#,
            base = escape(self.base)
        );
        html(status, &self.page("Sign in", None, &body))
    }

    fn servers_page(&self, user: &str) -> Response<Body> {
        let mut owned: Vec<&Tenant> = self
            .tenants
            .iter()
            .map(|t| t.as_ref())
            .filter(|t| t.owner == user)
            .collect();
        owned.sort_by(|a, b| a.slug.cmp(&b.slug));
        let mut rows = String::new();
        for tenant in &owned {
            let _ = write!(
                rows,
                r#"<tr><td><a href="{base}/dev/servers/{slug}">{slug}</a></td><td>{status}</td><td>{versions}</td></tr>"#,
                base = escape(self.base),
                slug = escape(tenant.slug.as_str()),
                status = status_badge(tenant.status),
                versions = escape(&versions(tenant)),
            );
        }
        let table = if owned.is_empty() {
            "<p class=\"hint\">You have no servers on this host.</p>".to_string()
        } else {
            format!(
                r#"<table id="servers"><thead><tr><th>Server</th><th>Status</th><th>Versions</th></tr></thead><tbody>{rows}</tbody></table>"#
            )
        };
        let body = format!(r#"<h1>Your servers</h1><div class="card">{table}</div>"#);
        html(StatusCode::OK, &self.page("Servers", Some(user), &body))
    }

    fn server_page(&self, user: &str, slug: &str, headers: &HeaderMap) -> Response<Body> {
        let Some(tenant) = self.tenants.get(slug) else {
            let body = "<h1>Not found</h1><div class=\"card\">No such server.</div>";
            return html(
                StatusCode::NOT_FOUND,
                &self.page("Not found", Some(user), body),
            );
        };
        if tenant.owner != user {
            let body = "<h1>Forbidden</h1><div class=\"card\">You do not own this server.</div>";
            return html(
                StatusCode::FORBIDDEN,
                &self.page("Forbidden", Some(user), body),
            );
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let slug = escape(tenant.slug.as_str());
        let button = match tenant.status {
            Status::Active => format!(
                r#"<button class="primary" id="view-logs" data-slug="{slug}">View Logs</button>"#
            ),
            Status::Inactive => format!(
                r#"<button id="view-logs" data-slug="{slug}" disabled title="Logs are only available for active servers">View Logs</button>
<p class="hint" id="logs-unavailable">Logs are only available for active servers; this one is inactive.</p>"#
            ),
        };
        // Names only: values may be secrets.
        let caps = &tenant.capabilities;
        let outbound = if caps.outbound.allowed.is_empty() {
            "none (no allowed_outbound_hosts)".to_string()
        } else {
            format!(
                "{}; at most {} per request, {} ms each",
                caps.outbound.allowed, caps.outbound.max_subrequests, caps.outbound.timeout_ms
            )
        };
        let names: Vec<&str> = caps.env.iter().map(|(name, _)| name.as_str()).collect();
        let environment = if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        };
        // Retained: the modal can page back through what was kept.
        let (kept, earlier) = match caps.retention {
            Some(retention) => (
                format!(
                    "{}, at most {} MiB",
                    humantime::format_duration(retention.age),
                    retention.max_bytes >> 20
                ),
                r#"<button id="log-earlier">Load earlier</button>"#,
            ),
            None => ("not kept (live only)".to_string(), ""),
        };
        let levels: String = ["log", "info", "warn", "error", "debug"]
            .iter()
            .map(|l| {
                format!(r#"<label><input type="checkbox" id="log-level-{l}" checked> {l}</label>"#)
            })
            .collect();
        let body = format!(
            r#"<h1>{slug}</h1>
<div class="card" id="server-information">
  <h2>Server Information</h2>
  <dl>
    <dt>Status</dt><dd>{status}</dd>
    <dt>Versions</dt><dd>{versions}</dd>
    <dt>Endpoint</dt><dd><code>http://{host}{base}/t/{slug}/</code></dd>
    <dt>CPU limit</dt><dd id="cpu-limit">{cpu_ms} ms per request</dd>
    <dt>Memory limit</dt><dd id="memory-limit">{memory_mb} MiB per request</dd>
    <dt>Outbound</dt><dd id="outbound">{outbound}</dd>
    <dt>Environment</dt><dd id="environment">{environment}</dd>
    <dt>Logs kept</dt><dd id="logs-kept">{kept}</dd>
  </dl>
  {button}
</div>
<div class="card" id="deployments-card" data-slug="{slug}">
  <h2>Deployments</h2>
  <table id="deployments"><thead><tr><th>Version</th><th>Deployed</th><th>By</th><th>SHA-256</th></tr></thead>
  <tbody>{deployments}</tbody></table>
</div>
<div class="modal" id="log-modal" hidden>
  <div class="modal-body" role="dialog" aria-label="Logs of {slug}">
    <div class="modal-head">
      <h2>Logs — {slug}</h2>
      <span class="conn" id="log-conn" data-state="closed">closed</span>
      <button id="log-close">Close</button>
    </div>
    <div class="modal-tools">
      <span class="levels">{levels}</span>
      <input type="search" id="log-search" placeholder="Search messages">
      {earlier}
      <button id="log-pause">Pause</button>
      <button id="log-clear">Clear</button>
    </div>
    <div class="log-wrap">
      <ul class="log-list" id="log-list"></ul>
      <button class="jump" id="log-jump" hidden></button>
    </div>
  </div>
</div>"#,
            status = status_badge(tenant.status),
            versions = escape(&versions(tenant)),
            deployments = deployment_rows(tenant),
            host = escape(host),
            base = escape(self.base),
            cpu_ms = caps.limits.cpu.as_millis(),
            memory_mb = caps.limits.memory_bytes >> 20,
            outbound = escape(&outbound),
            environment = escape(&environment),
            kept = escape(&kept),
        );
        html(
            StatusCode::OK,
            &self.page(tenant.slug.as_str(), Some(user), &body),
        )
    }

    fn page(&self, title: &str, user: Option<&str>, body: &str) -> String {
        let base = escape(self.base);
        let account = match user {
            Some(user) => format!(
                r#"<form method="post" action="{base}/logout"><span class="hint" id="user">{}</span> <button type="submit">Sign out</button></form>"#,
                escape(user)
            ),
            None => String::new(),
        };
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · mctx-host</title>
<link rel="stylesheet" href="{base}/assets/dashboard.css">
</head>
<body data-base="{base}">
<header><a href="{base}/dev/servers">mctx-host</a>{account}</header>
<main>
{body}
</main>
<script src="{base}/assets/dashboard.js"></script>
</body>
</html>"#,
            title = escape(title)
        )
    }
}

fn status_badge(status: Status) -> &'static str {
    match status {
        Status::Active => r#"<span class="status status-active">active</span>"#,
        Status::Inactive => r#"<span class="status status-inactive">inactive</span>"#,
    }
}

fn versions(tenant: &Tenant) -> String {
    let versions: Vec<String> = tenant
        .versions
        .keys()
        .rev()
        .map(|v| v.to_string())
        .collect();
    versions.join(", ")
}

/// One row per version, newest first. The time is UTC here; the page's
/// script rewrites it in the browser's time zone, and keeps the table
/// current from the deploy API.
fn deployment_rows(tenant: &Tenant) -> String {
    tenant
        .versions
        .values()
        .rev()
        .map(|d| {
            let p = &d.provenance;
            format!(
                r#"<tr data-version="{version}"><td>{version}</td><td class="deployed-at" data-ms="{ms}">{at}</td><td>{by}</td><td><code title="{sha}">{short}</code></td></tr>"#,
                version = escape(&d.version_label),
                ms = p.deployed_at,
                at = crate::deploy::rfc3339(p.deployed_at),
                by = escape(&p.deployed_by),
                sha = escape(&p.sha256),
                short = escape(p.sha256.get(..12).unwrap_or(&p.sha256)),
            )
        })
        .collect()
}

fn html(status: StatusCode, page: &str) -> Response<Body> {
    let mut response = Response::new(full_body(page.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Defence in depth: even if markup slipped through, no inline script runs.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn asset(content: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full_body(Bytes::from_static(content.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The `token` field of a form body.
fn form_token(form: &str) -> Option<String> {
    form_urlencoded::parse(form.as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.trim().to_string())
        .filter(|token| !token.is_empty())
}

/// Whether a form post comes from one of the control plane's own pages:
/// a browser says where it posts from (`Origin`, `Sec-Fetch-Site`); a
/// client that says neither is no browser, so no visitor is being tricked.
fn from_own_page(headers: &HeaderMap) -> bool {
    let same_site_fetch = headers
        .get("sec-fetch-site")
        .is_none_or(|site| site.as_bytes() == b"same-origin" || site.as_bytes() == b"none");
    same_site_fetch && check_origin(headers, &[]).is_ok()
}

/// The `token` field of a sign-in form; `Err` with the status when the
/// form could not be read (408: it stalled).
async fn read_form_token(body: RequestBody) -> Result<Option<String>, StatusCode> {
    let body = Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|e| read_failure_status(&*e, StatusCode::BAD_REQUEST))?
        .to_bytes();
    Ok(std::str::from_utf8(&body).ok().and_then(form_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert("x&'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&amp;&#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn tokens_come_from_forms() {
        assert_eq!(form_token("token=abc.def&x=1").as_deref(), Some("abc.def"));
        assert_eq!(form_token("token=%20abc%20").as_deref(), Some("abc"));
        assert_eq!(form_token("token="), None);
        assert_eq!(form_token(""), None);
    }
}
