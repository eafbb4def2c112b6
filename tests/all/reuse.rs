//! Instance reuse (`instance_reuse`, `--max-instance-reuse-count`) against
//! the real host: state a request leaves in its instance reaches the next
//! request only when reuse is on, and only within one tenant version; an
//! instance whose request trapped, hit a limit or was cancelled is never
//! reused; and under concurrent load every entry still carries the id of
//! the request that wrote it.
//!
//! `misbehave`'s `/counter` answers how many requests its instance has
//! served (1 on a fresh instance). Each step waits for the request's event
//! on a viewer: the host puts an instance back before that event goes out.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{HostProcess, Viewer, guest, tenant_toml};

fn with(table: String, extra: &str) -> String {
    format!("{table}{extra}\n")
}

/// A tenants file with one tenant, `m`, running misbehave with `settings`.
fn misbehave_as_m(settings: &str) -> String {
    let misbehave = guest("misbehave");
    with(
        tenant_toml("m", "alice", "active", &[("1.0.0", &misbehave)]),
        settings,
    )
}

/// GET `path` on `slug`, then its request event; the body and the outcome.
async fn step(host: &HostProcess, viewer: &mut Viewer, slug: &str, path: &str) -> (String, String) {
    let reply = host.get(&format!("{slug}.localhost"), path).await;
    let id = reply.header("x-request-id").unwrap().to_string();
    let event = viewer.request_entries(&id).await.pop().unwrap();
    (
        reply.text().trim().to_string(),
        event["outcome"].as_str().unwrap().to_string(),
    )
}

async fn counter(host: &HostProcess, viewer: &mut Viewer, slug: &str, path: &str) -> u64 {
    let (body, outcome) = step(host, viewer, slug, path).await;
    assert_eq!(outcome, "ok", "{slug}{path}: {body}");
    body.parse()
        .unwrap_or_else(|_| panic!("{slug}{path} answered {body:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_carries_over_only_with_reuse_and_within_one_tenant_version() {
    let misbehave = guest("misbehave");
    let versions = [
        ("1.0.0", misbehave.as_path()),
        ("2.0.0", misbehave.as_path()),
    ];
    let config = [
        with(
            tenant_toml("a", "alice", "active", &versions),
            "instance_reuse = 3",
        ),
        with(
            tenant_toml("b", "alice", "active", &versions[..1]),
            "instance_reuse = 3",
        ),
        tenant_toml("off", "alice", "active", &versions[..1]),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    let mut viewers = HashMap::new();
    for slug in ["a", "b", "off"] {
        viewers.insert(slug, host.viewer(slug, "type=request", "alice").await);
    }
    let mut seen = Vec::new();
    for (slug, path) in [
        ("a", "/v1/counter"),
        ("a", "/v1/counter"),
        ("b", "/counter"),    // another tenant, same component
        ("a", "/v2/counter"), // another version, same component
        ("a", "/v1/counter"),
        ("a", "/v1/counter"), // 3 served: a fresh one
        ("b", "/counter"),
        ("a", "/v2/counter"),
    ] {
        let viewer = viewers.get_mut(slug).unwrap();
        seen.push(counter(&host, viewer, slug, path).await);
    }
    assert_eq!(seen, [1, 2, 1, 1, 3, 1, 2, 2]);

    let mut without = Vec::new();
    for _ in 0..3 {
        let viewer = viewers.get_mut("off").unwrap();
        without.push(counter(&host, viewer, "off", "/counter").await);
    }
    assert_eq!(
        without,
        [1, 1, 1],
        "without reuse every request starts fresh"
    );
}

/// Memory one request's instance wrote never reaches the instance that
/// takes its pool slot next, another tenant's included (one component, so
/// one set of slots), whichever way the pool resets a slot: decommitted
/// (the default; one instance a batch here, so that slots come back at
/// once) or zeroed in place (`-O pooling-pagemap-scan=auto`: on where the
/// kernel has the ioctl and no swap is on, else decommitted too). A reused
/// instance shows that the probe finds what is left when something is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_reads_memory_the_one_before_it_in_its_slot_wrote() {
    let misbehave = guest("misbehave");
    let one = [("1.0.0", misbehave.as_path())];
    let config = [
        tenant_toml("a", "alice", "active", &one),
        tenant_toml("b", "bob", "active", &one),
        with(
            tenant_toml("kept", "alice", "active", &one),
            "instance_reuse = 3",
        ),
    ]
    .concat();
    for flags in [
        ["-O", "pooling-decommit-batch-size=1"],
        ["-O", "pooling-pagemap-scan=auto"],
    ] {
        let host = HostProcess::multi(&config, &flags);
        let mut viewers = HashMap::new();
        for (slug, owner) in [("a", "alice"), ("b", "bob"), ("kept", "alice")] {
            viewers.insert(slug, host.viewer(slug, "type=request", owner).await);
        }
        let kept = viewers.get_mut("kept").unwrap();
        assert_eq!(counter(&host, kept, "kept", "/residue").await, 0);
        let left = counter(&host, kept, "kept", "/residue").await;
        assert!(left > 0, "{flags:?}: a reused instance finds its marks");

        let mut found = Vec::new();
        for i in 0..24 {
            let slug = ["a", "b"][i % 2];
            let viewer = viewers.get_mut(slug).unwrap();
            found.push(counter(&host, viewer, slug, "/residue").await);
        }
        assert!(found.iter().all(|&n| n == 0), "{flags:?}: {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_a_limit_or_a_cancel_drops_the_instance() {
    let config = misbehave_as_m("instance_reuse = 100\ncpu_limit_ms = 100");
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("m", "type=request", "alice").await;
    assert_eq!(counter(&host, &mut viewer, "m", "/counter").await, 1);
    assert_eq!(counter(&host, &mut viewer, "m", "/counter").await, 2);

    let (_, outcome) = step(&host, &mut viewer, "m", "/trap").await;
    assert_eq!(outcome, "exception");
    assert_eq!(
        counter(&host, &mut viewer, "m", "/counter").await,
        1,
        "after a trap"
    );
    assert_eq!(counter(&host, &mut viewer, "m", "/counter").await, 2);

    let (_, outcome) = step(&host, &mut viewer, "m", "/spin").await;
    assert_eq!(outcome, "exceededCpu");
    assert_eq!(
        counter(&host, &mut viewer, "m", "/counter").await,
        1,
        "after a limit"
    );
    assert_eq!(counter(&host, &mut viewer, "m", "/counter").await, 2);

    // A client that gives up on a slow answer: the request is cancelled.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        host.get("m.localhost", "/slow?ms=30000"),
    )
    .await;
    assert!(gave_up.is_err(), "the slow request was still running");
    let event = viewer
        .entries_until(|e| e["path"] == "/slow?ms=30000")
        .await
        .pop()
        .unwrap();
    assert_eq!(event["outcome"], "canceled");
    assert_eq!(
        counter(&host, &mut viewer, "m", "/counter").await,
        1,
        "after a cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_keeps_its_request_id_under_reuse_at_16_connections() {
    let config = misbehave_as_m("instance_reuse = 128");
    let host = std::sync::Arc::new(HostProcess::multi(&config, &[]));
    let mut viewer = host.viewer("m", "", "alice").await;
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let host = host.clone();
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..16 {
                    let tag = format!("c{client}-{n}");
                    let reply = host
                        .get("m.localhost", &format!("/counter?tag={tag}"))
                        .await;
                    assert_eq!(reply.status, 200);
                    let served: u64 = reply.text().trim().parse().unwrap();
                    sent.push((
                        reply.header("x-request-id").unwrap().to_string(),
                        tag,
                        served,
                    ));
                }
                sent
            })
        })
        .collect();
    let mut tags = HashMap::new();
    let mut most_served = 0;
    for client in clients {
        for (id, tag, served) in client.await.unwrap() {
            most_served = most_served.max(served);
            tags.insert(id, tag);
        }
    }
    assert!(most_served > 1, "instances were reused");
    let mut events = 0;
    let mut lines = 0;
    while events < tags.len() {
        let frame = viewer.frame().await;
        assert_eq!(frame["type"], "logs", "nothing dropped: {frame}");
        for entry in frame["entries"].as_array().unwrap() {
            let id = entry["requestId"].as_str().unwrap();
            let tag = &tags[id];
            match entry["type"].as_str().unwrap() {
                "request" => events += 1,
                _ => {
                    let message = entry["message"].as_str().unwrap();
                    assert!(
                        message.ends_with(&format!(" for {tag}")),
                        "{message:?} arrived under the request tagged {tag}"
                    );
                    lines += 1;
                }
            }
        }
    }
    assert_eq!(lines, tags.len(), "one line per request");
}

/// `wasmtime serve`'s flags, in single-component mode: the same names and
/// meanings. The console's request line comes after the instance is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmtime_serve_reuse_flags_are_honoured() {
    let misbehave = guest("misbehave");
    let served = |host: HostProcess| async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let reply = host.get("localhost", "/counter").await;
            seen.push(reply.text().trim().parse::<u64>().unwrap());
            host.wait_for_line(|line| line.contains("GET /counter 200 ok"));
        }
        seen
    };
    let reuse_two = HostProcess::single(&misbehave, &["--max-instance-reuse-count", "2"]);
    assert_eq!(served(reuse_two).await, [1, 2, 1]);
    let expired = HostProcess::single(
        &misbehave,
        &[
            "--max-instance-reuse-count",
            "8",
            "--idle-instance-timeout",
            "0s",
        ],
    );
    assert_eq!(served(expired).await, [1, 1, 1], "nothing waits past 0 s");
}
