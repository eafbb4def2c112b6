//! Deployments at runtime, what the API refuses and when: who may do what,
//! a stranger's upload before its body is read, an owner past their quota,
//! and open streams that follow their viewer's authority.

use super::deploy::{Body, ROOT, api, api_only, put_version, served_version, server_with, wasm};
use crate::support;
use crate::support::{HostProcess, guest, send, tenant_toml, token};
use bytes::Bytes;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_upload_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = HostProcess::multi(&api_only(""), &[]);
    server_with(&host, "alices", "alice", &["1.0.0"]).await;
    // Eight 60 MiB uploads from someone who may not deploy here: each sends
    // its head and nothing more, and is answered anyway.
    let bearer = token("mallory");
    let mut answers = Vec::new();
    for i in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
        let head = format!(
            "PUT /api/servers/alices/versions/9.9.{i} HTTP/1.1\r\nHost: localhost\r\n\
             authorization: Bearer {bearer}\r\ncontent-type: application/wasm\r\n\
             content-length: {}\r\n\r\n",
            60 << 20
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(support::PATIENCE, stream.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        answers.push(String::from_utf8_lossy(&answer[..n]).into_owned());
    }
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
    assert_eq!(
        served_version(&host, "alices").await.as_deref(),
        Ok("1.0.0")
    );
}

/// A host with `[host]` `limits` on which alice has versions 1.0.0 and
/// 1.1.0 of `one`: her third is refused with 507, naming `limit`.
async fn third_version_refused(limits: &str, limit: &str) -> HostProcess {
    let host = HostProcess::multi(&api_only(&format!("[host]\n{limits}\n")), &[]);
    server_with(&host, "one", "alice", &["1.0.0", "1.1.0"]).await;
    let third = put_version(&host, "one", "1.2.0", "alice", "hello").await;
    assert_eq!(third.status, 507, "{}", third.text());
    assert!(third.text().contains(limit), "{}", third.text());
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_past_their_quota_is_refused_and_keeps_what_they_have() {
    let hello = wasm("hello").len();
    let versions = format!(
        "max_versions_per_owner = 2\nmax_bytes_per_owner = {}",
        hello * 3
    );
    third_version_refused(&versions, "max_versions_per_owner").await;
    // Bytes: the declared length alone is refused before the upload.
    let bytes = format!("max_bytes_per_owner = {}", hello * 2 + hello / 2);
    let host = third_version_refused(&bytes, "max_bytes_per_owner").await;
    // Another owner is not held to alice's use.
    server_with(&host, "two", "bob", &["1.0.0"]).await;
    assert_eq!(served_version(&host, "one").await.as_deref(), Ok("1.1.0"));
}

/// The next `closing` frame's reason (frames before it are skipped).
pub(super) async fn closing_reason(viewer: &mut support::Viewer) -> String {
    loop {
        let frame = viewer.frame().await;
        if frame["type"] == "closing" {
            return frame["reason"].as_str().unwrap_or_default().to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_follows_its_viewers_authority() {
    let hello = guest("hello");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let given = tenant_toml("given", "alice", "active", &[("1.0.0", &hello)]);
    let kept = tenant_toml("kept", "alice", "active", &[("1.0.0", &hello)]);
    std::fs::write(&config, api_only(&format!("{given}{kept}"))).unwrap();
    let host = HostProcess::multi_at(&config, &[]);
    server_with(&host, "paused", "alice", &["1.0.0"]).await;

    // A token that expires while its stream is open.
    let short = mctx_host::auth::Sessions::new(support::TEST_SECRET.as_bytes())
        .unwrap()
        .mint("alice", std::time::Duration::from_secs(2));
    let cookie = format!("session={short}");
    let mut expiring = host
        .try_viewer("/log-stream/kept", &[("cookie", cookie.as_str())])
        .await
        .expect("admitted while the token is valid");
    let mut paused = host.viewer("paused", "", "alice").await;
    let mut given_away = host.viewer("given", "", "alice").await;
    let mut stays = host.viewer("kept", "", "alice").await;

    let reason = closing_reason(&mut expiring).await;
    assert!(reason.contains("session expired"), "{reason}");

    // Made inactive through the API.
    let patched = api(
        &host,
        "PATCH",
        "/api/servers/paused",
        "alice",
        Body::Json(json!({ "status": "inactive" })),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    let reason = closing_reason(&mut paused).await;
    assert!(reason.contains("inactive"), "{reason}");

    // Given to bob by a reload of the tenants file: alice saw bob's
    // requests until now.
    let given = tenant_toml("given", "bob", "active", &[("1.0.0", &hello)]);
    std::fs::write(&config, api_only(&format!("{given}{kept}"))).unwrap();
    let reload = api(&host, "POST", "/api/reload", ROOT, Body::None).await;
    assert_eq!(reload.status, 200, "{}", reload.text());
    let reason = closing_reason(&mut given_away).await;
    assert!(reason.contains("do not own"), "{reason}");

    // A viewer whose authority stands keeps its stream.
    let reply = host.get("kept.localhost", "/").await;
    let id = reply.header("x-request-id").unwrap().to_string();
    assert!(!stays.request_entries(&id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_says_who_may_do_what() {
    let hello = guest("hello");
    let file_tenant = tenant_toml("fixed", "alice", "active", &[("1.0.0", &hello)]);
    let host = HostProcess::multi(&api_only(&file_tenant), &[]);
    server_with(&host, "app", "alice", &["1.0.0"]).await;
    server_with(&host, "other", "bob", &[]).await;
    let put_path = "/api/servers/app/versions/1.2.0";

    // No token; a forged one; another owner; a foreign page with a cookie.
    let anonymous = send(
        host.addr,
        "GET",
        "localhost",
        "/api/servers",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    let forged = send(
        host.addr,
        "GET",
        "localhost",
        "/api/servers",
        &[("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")],
        Bytes::new(),
    )
    .await;
    assert_eq!(forged.status, 401, "{}", forged.text());
    let stranger = put_version(&host, "app", "1.2.0", "bob", "hello").await;
    assert_eq!(stranger.status, 403, "{}", stranger.text());
    let cookie = format!("session={}", token("alice"));
    let cross_site = send(
        host.addr,
        "PUT",
        "localhost",
        put_path,
        &[
            ("cookie", &cookie),
            ("origin", "https://evil.example"),
            ("content-type", "application/wasm"),
        ],
        wasm("hello"),
    )
    .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text());
    assert!(
        cross_site.text().contains("allowed_origins"),
        "{}",
        cross_site.text()
    );

    // Only admins create; the file's servers are the file's.
    let create = Body::Json(json!({ "slug": "mine", "owner": "alice" }));
    let not_admin = api(&host, "POST", "/api/servers", "alice", create).await;
    assert_eq!(not_admin.status, 403, "{}", not_admin.text());
    let fixed = put_version(&host, "fixed", "2.0.0", "alice", "hello").await;
    assert_eq!(fixed.status, 409, "{}", fixed.text());
    assert!(
        fixed.text().contains("tenants.toml"),
        "names the file: {}",
        fixed.text()
    );

    // Versions are immutable: the same bytes again is a no-op, others 409.
    let again = put_version(&host, "app", "1.0.0", "alice", "hello").await;
    assert_eq!(again.status, 200, "{}", again.text());
    let changed = put_version(&host, "app", "1.0.0", "alice", "structured_log").await;
    assert_eq!(changed.status, 409, "{}", changed.text());
    assert!(changed.text().contains("immutable"), "{}", changed.text());

    // What each caller sees, with each version's facts.
    let mine = api(&host, "GET", "/api/servers", "alice", Body::None)
        .await
        .json();
    let slugs: Vec<&str> = mine["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["app", "fixed"], "alice's own, file's included");
    let all = api(&host, "GET", "/api/servers", ROOT, Body::None)
        .await
        .json();
    assert_eq!(
        all["servers"].as_array().unwrap().len(),
        3,
        "admins see all"
    );
    let app = api(&host, "GET", "/api/servers/app", "alice", Body::None)
        .await
        .json();
    let version = &app["versions"][0];
    assert_eq!(version["version"], "1.0.0");
    assert_eq!(version["deployedBy"], "alice");
    assert_eq!(version["size"], wasm("hello").len());
    assert_eq!(version["sha256"].as_str().unwrap().len(), 64);
    assert!(version["deployedAt"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(app["source"], "api");
    assert_eq!(app["limits"]["cpuLimitMs"], 10_000);
    let theirs = api(&host, "GET", "/api/servers/other", "alice", Body::None).await;
    assert_eq!(theirs.status, 403, "{}", theirs.text());

    // A deleted slug stays its owner's for the cooling-off period.
    let deleted = api(&host, "DELETE", "/api/servers/app", "alice", Body::None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(host.get("app.localhost", "/").await.status, 404);
    let for_bob = Body::Json(json!({ "slug": "app", "owner": "bob" }));
    let taken = api(&host, "POST", "/api/servers", ROOT, for_bob).await;
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert!(taken.text().contains("reserved"), "{}", taken.text());
    let for_alice = Body::Json(json!({ "slug": "app", "owner": "alice" }));
    let back = api(&host, "POST", "/api/servers", ROOT, for_alice).await;
    assert_eq!(back.status, 201, "{}", back.text());
}
