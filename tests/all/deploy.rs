//! Deployments at runtime, against the real binary: the deploy API's rules,
//! a swap under load with a viewer attached, refused uploads, durability
//! across SIGKILL and restarts, and reloading the tenants file.

use super::deploy_limits::closing_reason;
use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{HostProcess, Reply, guest, send, token};
use bytes::Bytes;
use serde_json::{Value, json};

/// The API's admin in every test here.
pub(super) const ROOT: &str = "root";

/// A tenants file with no tenants of its own: every server comes through
/// the API.
pub(super) fn api_only(extra: &str) -> String {
    format!("[auth]\nadmins = [\"{ROOT}\"]\n{extra}")
}

/// Calls the deploy API as `user` (bearer token), on the control plane.
pub(super) async fn api(
    host: &HostProcess,
    method: &str,
    path: &str,
    user: &str,
    body: Body,
) -> Reply {
    let bearer = format!("Bearer {}", token(user));
    let (kind, bytes) = match body {
        Body::None => (None, Bytes::new()),
        Body::Json(value) => (Some("application/json"), Bytes::from(value.to_string())),
        Body::Wasm(bytes) => (Some("application/wasm"), bytes),
    };
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(kind) = kind {
        headers.push(("content-type", kind));
    }
    send(host.addr, method, "localhost", path, &headers, bytes).await
}

/// `PUT /api/servers/{slug}/versions/{version}` of a sample guest, as `user`.
pub(super) async fn put_version(
    host: &HostProcess,
    slug: &str,
    version: &str,
    user: &str,
    component: &str,
) -> Reply {
    let path = format!("/api/servers/{slug}/versions/{version}");
    api(host, "PUT", &path, user, Body::Wasm(wasm(component))).await
}

pub(super) enum Body {
    None,
    Json(Value),
    Wasm(Bytes),
}

pub(super) fn wasm(name: &str) -> Bytes {
    Bytes::from(std::fs::read(guest(name)).unwrap())
}

/// Creates `slug` for `owner` (as the admin) and deploys `versions` of the
/// hello guest to it (as the owner).
pub(super) async fn server_with(host: &HostProcess, slug: &str, owner: &str, versions: &[&str]) {
    let created = api(
        host,
        "POST",
        "/api/servers",
        ROOT,
        Body::Json(json!({ "slug": slug, "owner": owner })),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    for version in versions {
        let deployed = put_version(host, slug, version, owner, "hello").await;
        assert_eq!(deployed.status, 201, "{}", deployed.text());
    }
}

/// The version that answered a request to `slug`, or the failure.
pub(super) async fn served_version(host: &HostProcess, slug: &str) -> Result<String, String> {
    let reply = host.get(&format!("{slug}.localhost"), "/").await;
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.text()));
    }
    Ok(reply.json()["headers"]["x-tenant-version"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_under_load_fails_nothing_and_the_viewer_sees_it() {
    let host = HostProcess::multi(&api_only(""), &[]);
    server_with(&host, "app", "alice", &["1.0.0"]).await;
    let mut viewer = host.viewer("app", "type=deploy", "alice").await;

    // Four clients send requests back to back until each has had 50
    // answers from after the deploy returned; a request *sent* after it
    // returned must be answered by the new version.
    let deployed = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let (going, mut all_going) = tokio::sync::mpsc::channel::<()>(4);
    let mut clients = Vec::new();
    for _ in 0..4 {
        let addr = host.addr;
        let (deployed, failures, going) = (deployed.clone(), failures.clone(), going.clone());
        clients.push(tokio::spawn(async move {
            let (mut before, mut after) = (0, 0);
            let mut total = 0;
            while after < 50 && total < 2_000 {
                total += 1;
                let sent_after_deploy = deployed.load(Ordering::SeqCst);
                let reply = send(addr, "GET", "app.localhost", "/", &[], Bytes::new()).await;
                if reply.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let version = reply.json()["headers"]["x-tenant-version"].clone();
                if sent_after_deploy {
                    assert_eq!(version, "1.1.0", "a request sent after the PUT returned");
                    after += 1;
                } else {
                    // Sent before the PUT returned: either version.
                    before += 1;
                    if before == 5 {
                        let _ = going.send(()).await;
                    }
                }
            }
            (before, after)
        }));
    }
    // Every client has had answers from the old version before the PUT.
    drop(going);
    for _ in 0..4 {
        all_going.recv().await.expect("a client got going");
    }
    let put = put_version(&host, "app", "1.1.0", "alice", "hello").await;
    assert_eq!(put.status, 201, "{}", put.text());
    deployed.store(true, Ordering::SeqCst);
    let mut answered_after = 0;
    for client in clients {
        let (_, after) = client.await.unwrap();
        answered_after += after;
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed");
    assert_eq!(answered_after, 200);

    // The same socket: the deploy entry, then entries of new requests.
    let entries = viewer.entries_until(|e| e["type"] == "deploy").await;
    let deploy = entries.last().unwrap();
    assert_eq!(deploy["action"], "deployed");
    assert_eq!(deploy["by"], "alice");
    assert_eq!(deploy["version"], "1.1.0");
    assert_eq!(deploy["slug"], "app");
    assert!(
        deploy["seq"].as_u64().unwrap() > 0,
        "published like any entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_uploads_are_refused_and_the_old_version_keeps_serving() {
    let hello_size = wasm("hello").len();
    let host = HostProcess::multi(
        &api_only(&format!(
            "[host]\nmax_component_bytes = {}\n",
            hello_size + 1000
        )),
        &[],
    );
    server_with(&host, "app", "alice", &["1.0.0"]).await;
    let put = |version: &'static str, body: Bytes| {
        let host = &host;
        async move {
            api(
                host,
                "PUT",
                &format!("/api/servers/app/versions/{version}"),
                "alice",
                Body::Wasm(body),
            )
            .await
        }
    };

    let corrupt = put("2.0.0", Bytes::from_static(b"this is not WebAssembly")).await;
    assert_eq!(corrupt.status, 400, "{}", corrupt.text());
    assert!(
        corrupt.text().contains("not a WebAssembly file"),
        "{}",
        corrupt.text()
    );

    // Cut inside the last section: a cut on a section boundary would leave
    // a valid, smaller component.
    let mut truncated = wasm("hello").to_vec();
    truncated.truncate(truncated.len() - 1);
    let truncated = put("2.0.0", Bytes::from(truncated)).await;
    assert_eq!(truncated.status, 400, "{}", truncated.text());

    let core = put("2.0.0", Bytes::from_static(b"\0asm\x01\0\0\0")).await;
    assert_eq!(core.status, 400, "{}", core.text());
    assert!(
        core.text().contains("core WebAssembly module"),
        "{}",
        core.text()
    );

    // A valid component that exports nothing: not a wasi:http component.
    let empty = put("2.0.0", Bytes::from_static(b"\0asm\x0d\0\x01\0")).await;
    assert_eq!(empty.status, 422, "{}", empty.text());
    assert!(
        empty.text().contains("not a wasi:http component"),
        "{}",
        empty.text()
    );

    let huge = put("2.0.0", Bytes::from(vec![0u8; hello_size + 1001])).await;
    assert_eq!(huge.status, 413, "{}", huge.text());
    assert!(
        huge.text().contains("max_component_bytes"),
        "{}",
        huge.text()
    );

    let bad_version = put("latest", wasm("hello")).await;
    assert_eq!(bad_version.status, 400, "{}", bad_version.text());

    assert_eq!(served_version(&host, "app").await, Ok("1.0.0".into()));
    let listed = api(&host, "GET", "/api/servers/app", "alice", Body::None).await;
    let versions = listed.json()["versions"].as_array().unwrap().len();
    assert_eq!(versions, 1, "nothing refused was kept: {}", listed.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_and_deletions_reach_the_viewers() {
    let host = HostProcess::multi(&api_only(""), &[]);
    server_with(&host, "app", "alice", &["1.0.0", "1.1.0"]).await;
    let mut viewer = host.viewer("app", "", "alice").await;

    let inactive = api(
        &host,
        "PATCH",
        "/api/servers/app",
        "alice",
        Body::Json(json!({ "status": "inactive" })),
    )
    .await;
    assert_eq!(inactive.status, 200, "{}", inactive.text());
    assert_eq!(host.get("app.localhost", "/").await.status, 503);
    // Logs are for active servers only: the open stream closes, saying so.
    let reason = closing_reason(&mut viewer).await;
    assert!(reason.contains("inactive"), "{reason}");
    let active = Body::Json(json!({ "status": "active" }));
    assert_eq!(
        api(&host, "PATCH", "/api/servers/app", ROOT, active)
            .await
            .status,
        200
    );
    let mut viewer = host.viewer("app", "", "alice").await;

    let gone = api(
        &host,
        "DELETE",
        "/api/servers/app/versions/1.1.0",
        "alice",
        Body::None,
    )
    .await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    let entries = viewer
        .entries_until(|e| e["type"] == "deploy" && e["action"] == "versionDeleted")
        .await;
    assert_eq!(entries.last().unwrap()["version"], "1.1.0");
    assert_eq!(served_version(&host, "app").await, Ok("1.0.0".into()));

    let deleted = api(&host, "DELETE", "/api/servers/app", ROOT, Body::None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let closing = loop {
        let frame = viewer.frame().await;
        if frame["type"] == "closing" {
            break frame;
        }
    };
    assert!(
        closing["reason"]
            .as_str()
            .unwrap()
            .contains("deleted by root"),
        "{closing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_survive_sigkill_mid_upload_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(&config, api_only("")).unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();

    let mut host = HostProcess::multi_at(&config, &["--state-dir", state_arg]);
    server_with(&host, "app", "alice", &["1.0.0"]).await;

    // An upload cut off by SIGKILL: the host is reading the body when it dies.
    let stream = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let body = wasm("hello");
    let head = format!(
        "PUT /api/servers/app/versions/2.0.0 HTTP/1.1\r\nhost: localhost\r\n\
         authorization: Bearer {}\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\n\r\n",
        token("alice"),
        body.len()
    );
    let mut upload = head.into_bytes();
    upload.extend_from_slice(&body[..body.len() / 2]);
    let mut stream = stream;
    tokio::io::AsyncWriteExt::write_all(&mut stream, &upload)
        .await
        .unwrap();
    host.kill();
    drop(stream);
    // What a crash between writing a component and the list leaves behind.
    std::fs::write(state.join("components/.tmp-1-0-half.wasm"), &body[..100]).unwrap();
    std::fs::write(
        state
            .join("components")
            .join(format!("{}.wasm", "ab".repeat(32))),
        &body[..],
    )
    .unwrap();

    let host = HostProcess::multi_at(&config, &["--state-dir", state_arg]);
    assert_eq!(served_version(&host, "app").await, Ok("1.0.0".into()));
    let app = api(&host, "GET", "/api/servers/app", "alice", Body::None)
        .await
        .json();
    assert_eq!(app["versions"].as_array().unwrap().len(), 1, "{app}");
    let left: Vec<String> = std::fs::read_dir(state.join("components"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "only the deployed component is kept: {left:?}"
    );

    // A restart restores what the API deployed, as it was.
    let put = put_version(&host, "app", "2.0.0", "alice", "hello").await;
    assert_eq!(put.status, 201, "{}", put.text());
    let before = api(&host, "GET", "/api/servers/app", "alice", Body::None)
        .await
        .json();
    let mut host = host;
    host.terminate();
    let host = HostProcess::multi_at(&config, &["--state-dir", state_arg]);
    let after = api(&host, "GET", "/api/servers/app", "alice", Body::None)
        .await
        .json();
    assert_eq!(after, before);
    assert_eq!(served_version(&host, "app").await, Ok("2.0.0".into()));
}

/// Polls until `slug` answers with `wanted` (`Err` text: until it fails
/// that way), up to the harness's patience.
pub(super) async fn until_served(host: &HostProcess, slug: &str, wanted: Result<&str, u16>) {
    support::eventually(std::time::Duration::from_millis(20), async || {
        let served = served_version(host, slug).await;
        match (&served, wanted) {
            (Ok(version), Ok(expected)) if version == expected => Ok(()),
            (Err(failure), Err(status)) if failure.starts_with(&status.to_string()) => Ok(()),
            _ => Err(format!("{slug} never answered {wanted:?}: last {served:?}")),
        }
    })
    .await;
}
