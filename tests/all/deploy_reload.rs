//! Deployments at runtime, beyond one host's API: reloading the tenants file,
//! `serve --watch`, the `deploy` and `servers` commands, and a cluster's
//! hosts following one another's deploys.

use super::deploy::{
    Body, ROOT, api, api_only, put_version, served_version, server_with, until_served,
};
use crate::support;
use crate::support::{HostProcess, guest, tenant_toml, token};
use serde_json::{Value, json};

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
        if reply.status == 200 && reply.text() == "logged\n" {
            Ok(())
        } else {
            Err(format!("never reloaded: {}", reply.text()))
        }
    })
    .await;
}
