//! A tenant's key-value store (`wasi:keyvalue`, `run::keyvalue`) against
//! the real host, through `guests/visits`: what a tenant stores reaches its
//! later requests and its other versions, never another tenant; a tenant
//! not granted a store, and a store past its quota, are refused with the
//! reason on the tenant's log stream and nothing already stored lost;
//! concurrent increments lose no update; the operator sees each store's
//! size; `-S keyvalue` and `-S keyvalue-in-memory-data` mean in single mode
//! what they mean to `wasmtime serve`; on a cluster (a real `nats-server`
//! with JetStream) every host sees the same store.

use crate::support;

use crate::support::{HostProcess, NatsServer, Reply, Viewer, guest, tenant_toml};
use bytes::Bytes;
use serde_json::Value;

/// A request to `site` (a `Host` name without the port).
async fn call(host: &HostProcess, method: &str, site: &str, path: &str, body: &str) -> Reply {
    support::send(
        host.addr,
        method,
        &format!("{site}:{}", host.addr.port()),
        path,
        &[],
        Bytes::from(body.to_string()),
    )
    .await
}

async fn get(host: &HostProcess, site: &str, path: &str) -> Reply {
    call(host, "GET", site, path, "").await
}

/// `/count` on `site`: the number it answers.
async fn count(host: &HostProcess, site: &str, path: &str) -> u64 {
    let reply = get(host, site, path).await;
    assert_eq!(reply.status, 200, "{site}{path}: {}", reply.text());
    reply.text().trim().parse().unwrap()
}

/// `n` `/count`s on `site` at once, spread over `hosts`: the numbers they
/// answered, sorted.
async fn counts_at_once(hosts: &[std::net::SocketAddr], site: &str, n: usize) -> Vec<u64> {
    let mut at_once = Vec::new();
    for i in 0..n {
        let addr = hosts[i % hosts.len()];
        let site = format!("{site}:{}", addr.port());
        at_once.push(tokio::spawn(async move {
            let reply = support::send(addr, "GET", &site, "/count", &[], Bytes::new()).await;
            reply.text().trim().parse::<u64>().unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for task in at_once {
        numbers.push(task.await.unwrap());
    }
    numbers.sort();
    numbers
}

/// The entries of the request `reply` answered, as `viewer` got them.
async fn entries_of(viewer: &mut Viewer, reply: &Reply) -> Vec<Value> {
    let id = reply.header("x-request-id").unwrap().to_string();
    viewer
        .request_entries(&id)
        .await
        .into_iter()
        .filter(|e| e["requestId"] == id)
        .collect()
}

fn said(entries: &[Value], level: &str, start: &str) -> bool {
    entries
        .iter()
        .any(|e| e["level"] == level && e["message"].as_str().unwrap_or("").starts_with(start))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_keeps_what_it_stores_and_only_it_sees_it() {
    let visits = guest("visits");
    let versions = [("1.0.0", visits.as_path()), ("2.0.0", visits.as_path())];
    let config = [
        tenant_toml("a", "alice", "active", &versions) + "keyvalue_max_bytes = 4096\n",
        tenant_toml("b", "bob", "active", &versions[..1]) + "keyvalue_max_bytes = 4096\n",
        tenant_toml("none", "carol", "active", &versions[..1]),
    ]
    .concat();
    let metrics_addr = format!("127.0.0.1:{}", support::free_port());
    let host = HostProcess::multi(&config, &["--metrics-addr", &metrics_addr]);

    // Later requests and other versions of the tenant see what it stored.
    assert_eq!(count(&host, "a.localhost", "/v1/count").await, 1);
    assert_eq!(count(&host, "a.localhost", "/v1/count").await, 2);
    assert_eq!(count(&host, "a.localhost", "/v2/count").await, 3);
    let stored = call(&host, "PUT", "a.localhost", "/kv/plan", "pro").await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(get(&host, "a.localhost", "/kv/plan").await.text(), "pro\n");
    // Another tenant running the same component has a store of its own.
    assert_eq!(count(&host, "b.localhost", "/count").await, 1);
    assert_eq!(get(&host, "b.localhost", "/kv/plan").await.status, 404);
    assert_eq!(get(&host, "b.localhost", "/keys").await.text(), "visits\n");

    // Not granted: refused, and its owner is told why.
    let mut watching_none = host.viewer("none", "", "carol").await;
    let refused = get(&host, "none.localhost", "/count").await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().starts_with("access-denied"),
        "{}",
        refused.text()
    );
    let entries = entries_of(&mut watching_none, &refused).await;
    assert!(
        said(
            &entries,
            "warn",
            "[mctx] keyvalue refused: this tenant has no store"
        ),
        "{entries:?}"
    );

    // Past the quota: refused whole, said, and what was stored is still there.
    let mut watching_a = host.viewer("a", "", "alice").await;
    let full = call(&host, "PUT", "a.localhost", "/kv/big", &"x".repeat(5000)).await;
    assert_eq!(full.status, 507);
    assert!(full.text().contains("the store is full"), "{}", full.text());
    let entries = entries_of(&mut watching_a, &full).await;
    assert!(
        said(
            &entries,
            "warn",
            "[mctx] keyvalue refused: the store is full"
        ),
        "{entries:?}"
    );
    assert_eq!(get(&host, "a.localhost", "/kv/big").await.status, 404);
    assert_eq!(get(&host, "a.localhost", "/kv/plan").await.text(), "pro\n");

    // 16 increments at once: each gets its own number, none is lost.
    let numbers = counts_at_once(&[host.addr], "b.localhost", 16).await;
    assert_eq!(numbers, (2..=17).collect::<Vec<u64>>());

    // The operator sees each granted store's size and quota.
    let metrics = support::scrape(&metrics_addr).await;
    let value = |name: &str, slug: &str| -> Option<u64> {
        let prefix = format!("{name}{{slug=\"{slug}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    };
    assert_eq!(value("mctx_keyvalue_max_bytes", "a"), Some(4096));
    // `visits` = "3" and `plan` = "pro", 64 bytes of overhead each.
    assert_eq!(
        value("mctx_keyvalue_bytes", "a"),
        Some(6 + 1 + 4 + 3 + 2 * 64)
    );
    assert_eq!(value("mctx_keyvalue_bytes", "none"), None, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_takes_wasmtimes_keyvalue_flags() {
    let visits = guest("visits");
    let host = HostProcess::single(
        &visits,
        &["-S", "keyvalue,keyvalue-in-memory-data=visits=41"],
    );
    assert_eq!(count(&host, "localhost", "/count").await, 42);
    assert_eq!(count(&host, "localhost", "/count").await, 43);

    let without = HostProcess::single(&visits, &[]);
    assert_eq!(get(&without, "localhost", "/count").await.status, 503);

    let stderr = support::run_failing(&[
        "serve".into(),
        "-S".into(),
        "keyvalue-in-memory-data=visits=41".into(),
        visits.into(),
    ]);
    assert!(stderr.contains("add -S keyvalue"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_host_sees_the_same_store() {
    let nats = NatsServer::start();
    let visits = guest("visits");
    let config = [
        format!("[cluster]\nnats_url = \"{}\"\n", nats.url()),
        tenant_toml("v", "alice", "active", &[("1.0.0", &visits)]) + "keyvalue_max_bytes = 4096\n",
        tenant_toml("w", "bob", "active", &[("1.0.0", &visits)]) + "keyvalue_max_bytes = 4096\n",
    ]
    .concat();
    let a = HostProcess::multi(&config, &["--node", "a"]);
    let b = HostProcess::multi(&config, &["--node", "b"]);

    // One counter, whichever host serves the request.
    assert_eq!(count(&a, "v.localhost", "/count").await, 1);
    assert_eq!(count(&b, "v.localhost", "/count").await, 2);
    assert_eq!(count(&a, "v.localhost", "/count").await, 3);
    let stored = call(&b, "PUT", "v.localhost", "/kv/a%20key/with%C3%BC", "pro").await;
    assert_eq!(stored.status, 200, "{}", stored.text());
    assert_eq!(
        get(&a, "v.localhost", "/kv/a%20key/with%C3%BC")
            .await
            .text(),
        "pro\n"
    );
    // Another tenant's store is its own, on the cluster too.
    assert_eq!(count(&b, "w.localhost", "/count").await, 1);
    assert_eq!(
        get(&b, "w.localhost", "/kv/a%20key/with%C3%BC")
            .await
            .status,
        404
    );

    // 16 increments at once, half on each host: none lost.
    let numbers = counts_at_once(&[a.addr, b.addr], "v.localhost", 16).await;
    assert_eq!(numbers, (4..=19).collect::<Vec<u64>>());

    // The quota holds on the cluster: refused, and nothing stored lost.
    let full = call(&a, "PUT", "v.localhost", "/kv/big", &"x".repeat(5000)).await;
    assert_eq!(full.status, 507, "{}", full.text());
    assert!(full.text().contains("the store is full"), "{}", full.text());
    assert_eq!(
        get(&b, "v.localhost", "/keys").await.text(),
        "a%20key/with%C3%BC\nvisits\n"
    );
    assert_eq!(count(&b, "v.localhost", "/count").await, 20);
}
