//! The boundary between tenants and the host, attacked as a tenant would,
//! against the real binary on loopback: what a tenant receives of a
//! visitor's credentials, what its response may set in the visitor's
//! browser, and how a browser signs in. Each test is one finding of the
//! attack in `docs/reliability.md`, refused, with the host still serving.

use crate::support;

use crate::support::{HostProcess, guest, send, tenant_toml, token};
use bytes::Bytes;
use serde_json::Value;

/// `hello` (echoes what it receives) and `bad` (misbehave: offers cookies),
/// both alice's.
fn two_tenants() -> HostProcess {
    let config = [
        tenant_toml("hello", "alice", "active", &[("1.0.0", &guest("hello"))]),
        tenant_toml("bad", "alice", "active", &[("1.0.0", &guest("misbehave"))]),
    ]
    .concat();
    HostProcess::multi(&config, &[])
}

/// The request headers `hello` received, as it echoed them.
fn echoed(reply: &support::Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["headers"].clone()
}

fn set_cookies(reply: &support::Reply) -> Vec<String> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A `Host` with a path, a query or userinfo in it never reaches a tenant
/// as its authority (a guest building its URL from it would see another
/// path): 400, counted; a well-formed one is served on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_header_that_is_not_an_authority_is_refused() {
    let host = HostProcess::single(&guest("hello"), &["--guest-logs", "off"]);
    for bad in [
        "localhost/admin?",
        "user@localhost",
        "localhost#x",
        "local host",
    ] {
        let reply = host.get(bad, "/").await;
        assert_eq!(reply.status, 400, "{bad:?}: {}", reply.text());
    }
    // (The harness adds the port to each name.)
    for good in ["localhost", "[::1]", "127.0.0.1"] {
        let reply = host.get(good, "/").await;
        assert_eq!(reply.status, 200, "{good:?}: {}", reply.text());
    }
    let health = host.get("localhost", "/.mctx/healthz").await.json();
    assert_eq!(health["refused"]["badHostHeader"], 4, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_receives_the_hosts_session_or_bearer_token() {
    let host = two_tenants();
    let session = token("alice");
    let cookie = format!("session={session}; theme=dark; copy={session}");
    let bearer = format!("Bearer {session}");

    // Under /t/ on the control plane's own host: no cookie of that host is
    // the tenant's, and the page is sandboxed off the control plane's origin.
    let reply = host
        .request(
            "GET",
            "localhost",
            "/t/hello/steal",
            &[("cookie", &cookie), ("authorization", &bearer)],
        )
        .await;
    let headers = echoed(&reply);
    assert_eq!(headers.get("cookie"), None, "{headers}");
    assert_eq!(headers.get("authorization"), None, "{headers}");
    let policy = reply.header("content-security-policy").unwrap_or_default();
    assert!(policy.starts_with("sandbox"), "{policy:?}");
    assert!(!policy.contains("allow-same-origin"), "{policy:?}");

    // On the tenant's own host: its own cookies and credentials are its own,
    // anything the host signed is taken off, wherever it is put.
    let reply = host
        .request(
            "GET",
            "hello.localhost",
            "/steal",
            &[("cookie", &cookie), ("authorization", &bearer)],
        )
        .await;
    let headers = echoed(&reply);
    assert_eq!(headers["cookie"], "theme=dark", "{headers}");
    assert_eq!(headers.get("authorization"), None, "{headers}");
    assert_eq!(reply.header("content-security-policy"), None);
    let reply = host
        .request(
            "GET",
            "hello.localhost",
            "/steal",
            &[("authorization", "Bearer its-own-api-key")],
        )
        .await;
    assert_eq!(echoed(&reply)["authorization"], "Bearer its-own-api-key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_response_cannot_set_or_clear_the_hosts_cookie() {
    let host = two_tenants();

    // On its own host a tenant keeps its host-only cookies, whatever their
    // name; a Domain cookie would reach the control plane and its
    // neighbours, and Clear-Site-Data the whole site: both are dropped.
    let reply = host.get("bad.localhost", "/cookies").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        set_cookies(&reply),
        [
            "session=fixated; Path=/",
            "__Host-session=fixated; Path=/; Secure",
            "theme=dark; Path=/"
        ]
    );
    assert_eq!(reply.header("clear-site-data"), None);

    // Under /t/ it shares the control plane's host: it sets nothing there.
    let reply = host.get("localhost", "/t/bad/cookies").await;
    assert_eq!(reply.status, 200);
    assert_eq!(set_cookies(&reply), Vec::<String>::new());
    assert_eq!(reply.header("clear-site-data"), None);
    assert_eq!(reply.text(), "cookies offered\n", "the body is untouched");

    let health = host.get("localhost", "/healthz").await.json();
    assert_eq!(health["refused"]["tenantHeadersDropped"], 2 + 5, "{health}");
    // The tenant next door is served as before.
    assert_eq!(host.get("hello.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_single_mode_the_tenant_cannot_touch_the_dashboards_cookie() {
    let host = HostProcess::single(&guest("misbehave"), &[]);
    let reply = host.get("localhost", "/cookies").await;
    assert_eq!(set_cookies(&reply), ["theme=dark; Path=/"]);
    assert_eq!(reply.header("clear-site-data"), None);

    let echo = HostProcess::single(&guest("hello"), &[]);
    let session = token("alice");
    let reply = echo
        .request(
            "GET",
            "localhost",
            "/steal",
            &[(
                "cookie",
                &format!("session=expired-or-not; theme=dark; x={session}"),
            )],
        )
        .await;
    assert_eq!(echoed(&reply)["cookie"], "theme=dark");
}

/// `POST /login` with `token` as a form, and `headers`.
async fn post_login(host: &HostProcess, token: &str, headers: &[(&str, &str)]) -> support::Reply {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let authority = format!("localhost:{}", host.addr.port());
    let body = Bytes::from(format!("token={token}"));
    send(host.addr, "POST", &authority, "/login", &all, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_takes_a_post_from_the_control_planes_own_page() {
    let host = two_tenants();
    let session = token("alice");
    let authority = format!("localhost:{}", host.addr.port());

    // A link that signs a browser in (login CSRF) signs nobody in.
    let reply = host
        .get("localhost", &format!("/login?token={session}"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("set-cookie"), None);

    // A form on another site, or on a tenant's page, is refused.
    let tenant_page = format!("http://hello.localhost:{}", host.addr.port());
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", tenant_page.as_str())],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
    ] {
        let reply = post_login(&host, &session, &headers).await;
        assert_eq!(reply.status, 403, "{headers:?}: {}", reply.text());
        assert_eq!(reply.header("set-cookie"), None, "{headers:?}");
    }

    // The control plane's own page signs in.
    let own = format!("http://{authority}");
    let reply = post_login(
        &host,
        &session,
        &[("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    let cookie = reply.header("set-cookie").unwrap();
    assert!(cookie.starts_with("session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite="),
        "{cookie}"
    );

    // The API takes the cookie only from the control plane's origin.
    let cookie = format!("session={session}");
    for origin in [tenant_page.as_str(), "null"] {
        let reply = host
            .request(
                "GET",
                "localhost",
                "/api/servers",
                &[("cookie", &cookie), ("origin", origin)],
            )
            .await;
        assert_eq!(reply.status, 403, "{origin}: {}", reply.text());
    }
    let reply = host
        .request(
            "GET",
            "localhost",
            "/api/servers",
            &[("cookie", &cookie), ("origin", &own)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// What `slug`'s guest got for a GET of `url` (hello's `/fetch`).
async fn tenant_fetches(host: &HostProcess, slug: &str, url: &str) -> Value {
    let reply = host
        .request(
            "GET",
            &format!("{slug}.localhost"),
            "/fetch",
            &[("x-fetch-url", url)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["results"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listener_of_the_host_is_a_tenants_to_reach() {
    // A tenant allowed every loopback port, by address and by name.
    let config = format!(
        "{}allowed_outbound_hosts = [\"http://127.0.0.1:*\", \"http://localhost:*\"]\n",
        tenant_toml("wild", "alice", "active", &[("1.0.0", &guest("hello"))])
    );
    let (metrics, shutdown) = (support::free_port(), support::free_port());
    let (metrics, shutdown) = (
        format!("127.0.0.1:{metrics}"),
        format!("127.0.0.1:{shutdown}"),
    );
    let host = HostProcess::multi(
        &config,
        &["--metrics-addr", &metrics, "--shutdown-addr", &shutdown],
    );
    let main = format!("localhost:{}", host.addr.port());
    for url in [
        format!("http://{shutdown}/"),
        format!("http://{metrics}/metrics"),
        format!("http://{main}/healthz"),
        format!("http://127.0.0.1:{}/healthz", host.addr.port()),
    ] {
        let result = tenant_fetches(&host, "wild", &url).await;
        let error = result["error"].as_str().unwrap_or_default();
        assert!(error.contains("HttpRequestDenied"), "{url}: {result}");
    }
    // Still serving: the shutdown listener never saw a connection.
    assert_eq!(host.get("localhost", "/healthz").await.status, 200);
    assert_eq!(host.get("wild.localhost", "/").await.status, 200);
}

#[test]
fn the_shutdown_listener_is_for_this_machine_only() {
    let stderr = support::run_failing(&[
        "serve".into(),
        guest("hello").into(),
        "--shutdown-addr".into(),
        format!("0.0.0.0:{}", support::free_port()).into(),
    ]);
    assert!(stderr.contains("must be a loopback address"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_pages_request_to_the_shutdown_listener_does_not_stop_the_host() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let shutdown = format!("127.0.0.1:{}", support::free_port());
    let mut host = HostProcess::single(&guest("hello"), &["--shutdown-addr", &shutdown]);
    // What a page the operator opens can do: fetch("http://127.0.0.1:PORT/").
    let mut page = tokio::net::TcpStream::connect(&shutdown).await.unwrap();
    page.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: https://evil.example\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    page.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("sends nothing"),
        "{answer}"
    );
    assert_eq!(
        host.get("localhost", "/").await.status,
        200,
        "still serving"
    );
    // The operator's own request: connect, send nothing, close.
    drop(tokio::net::TcpStream::connect(&shutdown).await.unwrap());
    assert!(host.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_shutdown_socket_is_for_the_hosts_user_only() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("shutdown.sock");
    let arg = format!("unix:{}", socket.display());
    let mut host = HostProcess::single(&guest("hello"), &["--shutdown-addr", &arg]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
    assert_eq!(host.get("localhost", "/").await.status, 200);
    drop(std::os::unix::net::UnixStream::connect(&socket).unwrap());
    assert!(host.wait_exit().success());
    assert!(!socket.exists(), "the socket is removed on exit");

    // A file that is not a socket is never replaced.
    std::fs::write(&socket, "precious").unwrap();
    let stderr = support::run_failing(&[
        "serve".into(),
        guest("hello").into(),
        "--shutdown-addr".into(),
        arg.into(),
    ]);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

#[test]
fn a_tenants_file_holding_the_session_secret_must_be_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    let config = format!(
        "[auth]\nsession_secret = \"{}\"\n{}",
        support::TEST_SECRET,
        tenant_toml("hello", "alice", "active", &[("1.0.0", &guest("hello"))])
    );
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = support::run_failing(&["serve".into(), "--config".into(), path.clone().into()]);
    assert!(
        stderr.contains("session_secret") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _host = HostProcess::multi_at(&path, &[]);
}

#[test]
fn an_artifact_cache_other_users_may_write_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = tempfile::tempdir().unwrap();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let stderr = support::run_failing(&[
        "serve".into(),
        guest("hello").into(),
        "--cache-dir".into(),
        cache.path().into(),
    ]);
    assert!(
        stderr.contains("artifact cache") && stderr.contains("chmod 700"),
        "{stderr}"
    );
}
