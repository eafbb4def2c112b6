//! Deployments at runtime, against the real binary: the deploy API's rules,
//! a swap under load with a viewer attached, refused uploads, durability
//! across SIGKILL and restarts, and reloading the tenants file.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::{HostProcess, Reply, guest, send, tenant_toml, token};
use bytes::Bytes;
use serde_json::{Value, json};

/// The API's admin in every test here.
const ROOT: &str = "root";

/// A tenants file with no tenants of its own: every server comes through
/// the API.
fn api_only(extra: &str) -> String {
    format!("[auth]\nadmins = [\"{ROOT}\"]\n{extra}")
}

/// Calls the deploy API as `user` (bearer token), on the control plane.
async fn api(host: &HostProcess, method: &str, path: &str, user: &str, body: Body) -> Reply {
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
async fn put_version(
    host: &HostProcess,
    slug: &str,
    version: &str,
    user: &str,
    component: &str,
) -> Reply {
    let path = format!("/api/servers/{slug}/versions/{version}");
    api(host, "PUT", &path, user, Body::Wasm(wasm(component))).await
}

enum Body {
    None,
    Json(Value),
    Wasm(Bytes),
}

fn wasm(name: &str) -> Bytes {
    Bytes::from(std::fs::read(guest(name)).unwrap())
}

/// Creates `slug` for `owner` (as the admin) and deploys `versions` of the
/// hello guest to it (as the owner).
async fn server_with(host: &HostProcess, slug: &str, owner: &str, versions: &[&str]) {
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
async fn served_version(host: &HostProcess, slug: &str) -> Result<String, String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_the_tenants_file_applies_the_difference() {
    let hello = guest("hello");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    let one = tenant_toml("one", "alice", "active", &[("1.0.0", &hello)]);
    let two = tenant_toml("two", "alice", "active", &[("1.0.0", &hello)]);
    let three = tenant_toml("three", "bob", "active", &[("1.0.0", &hello)]);
    std::fs::write(&config, api_only(&format!("{one}{two}"))).unwrap();
    let host = HostProcess::multi_at(&config, &[]);
    let mut watching_one = host.viewer("one", "", "alice").await;
    let mut watching_two = host.viewer("two", "", "alice").await;

    // A broken file changes nothing and says why.
    std::fs::write(
        &config,
        format!("{one}\n[[tenants]]\nslug = \"Bad Slug\"\n"),
    )
    .unwrap();
    let refused = api(&host, "POST", "/api/reload", ROOT, Body::None).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(
        refused.text().contains("nothing changed"),
        "{}",
        refused.text()
    );
    let reload = api(&host, "POST", "/api/reload", "alice", Body::None).await;
    assert_eq!(reload.status, 403, "admins only: {}", reload.text());
    assert_eq!(served_version(&host, "two").await, Ok("1.0.0".into()));

    // SIGHUP with a good file: three added, two removed, one untouched.
    std::fs::write(&config, api_only(&format!("{one}{three}"))).unwrap();
    host.signal("HUP");
    let added = async {
        loop {
            if host.get("three.localhost", "/").await.status == 200 {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), added)
        .await
        .expect("the reload added tenant three");
    assert_eq!(host.get("two.localhost", "/").await.status, 404);
    let closing = loop {
        let frame = watching_two.frame().await;
        if frame["type"] == "closing" {
            break frame;
        }
    };
    assert!(
        closing["reason"].as_str().unwrap().contains("removed from"),
        "{closing}"
    );
    // One's viewer never noticed: its next entries are the next request's.
    let reply = host.get("one.localhost", "/").await;
    let id = reply.header("x-request-id").unwrap().to_string();
    let entries = watching_one.request_entries(&id).await;
    assert!(
        entries.iter().all(|e| e["requestId"] == id.as_str()),
        "nothing else reached one's viewer: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_and_servers_commands_drive_the_api() {
    let host = HostProcess::multi(&api_only(""), &[]);
    let url = format!("http://127.0.0.1:{}", host.addr.port());
    let hello = guest("hello");
    let component = hello.to_str().unwrap();
    let root = token(ROOT);
    let alice = token("alice");

    let (ok, stdout, stderr) = support::run_command(
        &[
            "deploy",
            "app",
            component,
            "--version",
            "1.0.0",
            "--create",
            "alice",
            "--url",
            &url,
        ],
        &[("MCTX_TOKEN", &root)],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("app 1.0.0 deployed"), "{stdout}");
    assert_eq!(served_version(&host, "app").await, Ok("1.0.0".into()));

    let (ok, stdout, stderr) = support::run_command(
        &[
            "deploy",
            "app",
            component,
            "--version",
            "1.1.0",
            "--url",
            &url,
            "--token",
            &alice,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("app 1.1.0 deployed"), "{stdout}");

    let (ok, stdout, stderr) = support::run_command(
        &["servers", "--url", &url, "--format", "json"],
        &[("MCTX_TOKEN", &alice)],
    );
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        listed["servers"][0]["versions"].as_array().unwrap().len(),
        2
    );
    let (ok, table, _) =
        support::run_command(&["servers", "--url", &url], &[("MCTX_TOKEN", &alice)]);
    assert!(ok);
    assert_eq!(
        table.lines().count(),
        3,
        "a header and a line per version: {table}"
    );

    // Refusals come back as the host's words, with a failing exit status.
    let bob = token("bob");
    let (ok, _, stderr) = support::run_command(
        &[
            "deploy",
            "app",
            component,
            "--version",
            "2.0.0",
            "--url",
            &url,
            "--token",
            &bob,
        ],
        &[],
    );
    assert!(!ok);
    assert!(
        stderr.contains("403") && stderr.contains("you do not own server app"),
        "{stderr}"
    );
    let (ok, _, stderr) = support::run_command(&["servers", "--url", &url], &[]);
    assert!(!ok);
    assert!(stderr.contains("no session token"), "{stderr}");
}

/// Polls until `slug` answers with `wanted` (`Err` text: until it fails
/// that way), up to the harness's patience.
async fn until_served(host: &HostProcess, slug: &str, wanted: Result<&str, u16>) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_deploy_reaches_every_host() {
    let nats = support::NatsServer::start();
    let config = api_only(&format!("[cluster]\nnats_url = \"{}\"\n", nats.url()));
    let a = HostProcess::multi(&config, &["--node", "a"]);
    let b = HostProcess::multi(&config, &["--node", "b"]);

    server_with(&a, "app", "alice", &["1.0.0"]).await;
    until_served(&b, "app", Ok("1.0.0")).await;

    // A viewer on B sees the deploy made on A, and B serves the new version.
    let mut viewer = b.viewer("app", "type=deploy", "alice").await;
    a.wait_for_cluster(|s| support::watched_elsewhere(s, "app"))
        .await;
    let put = put_version(&a, "app", "1.1.0", "alice", "hello").await;
    assert_eq!(put.status, 201, "{}", put.text());
    until_served(&b, "app", Ok("1.1.0")).await;
    let entries = viewer.entries_until(|e| e["type"] == "deploy").await;
    assert_eq!(entries.last().unwrap()["node"], "a");

    // Immutable across hosts too.
    let changed = put_version(&b, "app", "1.1.0", "alice", "structured_log").await;
    assert_eq!(changed.status, 409, "{}", changed.text());

    // A host that joins later catches up before it serves.
    let c = HostProcess::multi(&config, &["--node", "c"]);
    assert_eq!(served_version(&c, "app").await, Ok("1.1.0".into()));
    let listed = api(&c, "GET", "/api/servers/app", "alice", Body::None)
        .await
        .json();
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2, "{listed}");

    // A deletion on one host removes the server everywhere.
    let deleted = api(&c, "DELETE", "/api/servers/app", "alice", Body::None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    until_served(&a, "app", Err(404)).await;
    until_served(&b, "app", Err(404)).await;
    let closing = loop {
        let frame = viewer.frame().await;
        if frame["type"] == "closing" {
            break frame;
        }
    };
    assert!(
        closing["reason"].as_str().unwrap().contains("deleted"),
        "{closing}"
    );
    let taken = api(
        &a,
        "POST",
        "/api/servers",
        ROOT,
        Body::Json(json!({ "slug": "app", "owner": "bob" })),
    )
    .await;
    assert_eq!(
        taken.status,
        409,
        "the reservation is shared: {}",
        taken.text()
    );
}

/// A server's key-value store lives in JetStream on a cluster, beyond any
/// host: deleting the server deletes it, so whoever gets the slug next
/// (here its owner again, within the cooling-off) starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_deleted_servers_store_goes_with_it() {
    let nats = support::NatsServer::start();
    let config = api_only(&format!(
        "[host]\nkeyvalue_max_bytes = 4096\n[cluster]\nnats_url = \"{}\"\n",
        nats.url()
    ));
    let host = HostProcess::multi(&config, &["--node", "a"]);
    let count = async || host.get("kv.localhost", "/count").await.text();
    for round in 0..2 {
        server_with(&host, "kv", "alice", &[]).await;
        let deployed = put_version(&host, "kv", "1.0.0", "alice", "visits").await;
        assert_eq!(deployed.status, 201, "{}", deployed.text());
        assert_eq!(count().await, "1\n", "round {round}");
        assert_eq!(count().await, "2\n", "round {round}");
        let deleted = api(&host, "DELETE", "/api/servers/kv", "alice", Body::None).await;
        assert_eq!(deleted.status, 200, "{}", deleted.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_watch_reloads_when_the_file_or_a_component_changes() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("app.wasm");
    std::fs::copy(guest("hello"), &component).unwrap();
    let config = dir.path().join("tenants.toml");
    let one = tenant_toml("one", "alice", "active", &[("1.0.0", &component)]);
    std::fs::write(&config, &one).unwrap();
    let host = HostProcess::multi_at(&config, &["--watch"]);
    assert_eq!(served_version(&host, "one").await, Ok("1.0.0".into()));

    // The file gains a tenant.
    let two = tenant_toml("two", "bob", "active", &[("2.0.0", &component)]);
    std::fs::write(&config, format!("{one}{two}")).unwrap();
    until_served(&host, "two", Ok("2.0.0")).await;

    // A component rebuilt in place (written aside, renamed over, as cargo does).
    let aside = dir.path().join("app.wasm.part");
    std::fs::copy(guest("structured_log"), &aside).unwrap();
    std::fs::rename(&aside, &component).unwrap();
    support::eventually(std::time::Duration::from_millis(20), async || {
        let reply = host.get("one.localhost", "/").await;
        match reply.status == 200 && reply.text() == "logged\n" {
            true => Ok(()),
            false => Err(format!("never reloaded: {}", reply.text())),
        }
    })
    .await;
}

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
async fn closing_reason(viewer: &mut support::Viewer) -> String {
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
