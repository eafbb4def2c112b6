//! Opt-in log retention against the real binary: entries written while
//! nobody watched come back from `GET /api/servers/{slug}/logs` with each
//! filter, a restart keeps them (and numbering goes on), the quota drops
//! the oldest and says so, a secret never reaches the disk, `tail
//! --since` prints the stored entries then the live ones, each `seq` once;
//! on a cluster, a host answers for entries another served, also once that
//! one is gone.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{HostProcess, NatsServer, TailProcess, eventually, guest, tenant_toml, token};

const API_KEY: &str = "sk-retained-0123456789abcdef";

/// `hello` (alice's, kept for an hour within `max_bytes`, with a secret)
/// and `fleeting` (alice's, not kept).
fn config(max_bytes: u64) -> String {
    let hello = guest("hello");
    [
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        "secrets = { API_KEY = { env = \"MCTX_TEST_API_KEY\" } }\n".to_string(),
        format!("[tenants.logs]\nretain = \"1h\"\nmax_bytes = {max_bytes}\n"),
        tenant_toml("fleeting", "alice", "active", &[("1.0.0", &hello)]),
    ]
    .concat()
}

fn start(dir: &Path, max_bytes: u64) -> HostProcess {
    let path = dir.join("tenants.toml");
    std::fs::write(&path, config(max_bytes)).unwrap();
    let state = dir.join("state");
    HostProcess::multi_at_with_env(
        &path,
        &["--state-dir", state.to_str().unwrap()],
        &[("MCTX_TEST_API_KEY", API_KEY)],
    )
}

/// Every entry `host` has stored of `hello`, newest first, once it holds
/// `count`.
async fn stored_on(host: &HostProcess, count: usize) -> Vec<Value> {
    eventually(Duration::from_millis(50), async || {
        let entries = all_stored(host, "").await;
        if entries.len() == count {
            Ok(entries)
        } else {
            Err(format!("{} stored, not {count}", entries.len()))
        }
    })
    .await
}

/// One page of `slug`'s stored entries, as `user`.
async fn page(host: &HostProcess, slug: &str, query: &str, user: &str) -> (u16, Value) {
    let bearer = format!("Bearer {}", token(user));
    let reply = host
        .request(
            "GET",
            "localhost",
            &format!("/api/servers/{slug}/logs?{query}"),
            &[("authorization", &bearer)],
        )
        .await;
    (reply.status, reply.json())
}

/// Every stored entry matching `query`, all pages, newest first.
async fn all_stored(host: &HostProcess, query: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) =
            page(host, "hello", &format!("{query}&limit=7{cursor}"), "alice").await;
        assert_eq!(status, 200, "{page}");
        entries.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return entries,
        }
    }
}

/// Sends a request to `hello` and returns its id once its closing event
/// is stored (requests end a little after their response).
async fn served(host: &HostProcess, path: &str) -> String {
    let id = host
        .get("hello.localhost", path)
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    eventually(Duration::from_millis(20), async || {
        let (_, page) = page(
            host,
            "hello",
            &format!("requestId={id}&type=request"),
            "alice",
        )
        .await;
        match page["entries"].as_array().map(Vec::len) {
            Some(1) => Ok(()),
            _ => Err(format!("request {id} has no stored event yet: {page}")),
        }
    })
    .await;
    id
}

fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_nobody_watched_come_back_with_each_filter_and_no_secret_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), 1 << 20);
    let first = served(&host, "/first").await;
    let secret = served(&host, "/env?name=API_KEY").await;
    let last = served(&host, "/last").await;

    let all = all_stored(&host, "").await;
    assert_eq!(all.len(), 7 + 2 + 7, "every entry of the three requests");
    assert_eq!(
        seqs(&all),
        (1..=16).rev().collect::<Vec<u64>>(),
        "newest first, numbered as a viewer would have seen them"
    );
    assert!(
        all.iter()
            .all(|e| e["slug"] == "hello" && e["version"] == "1.0.0")
    );

    let warns = all_stored(&host, "level=warn").await;
    assert_eq!(warns.len(), 2, "the two full requests' [WARN] lines");
    assert!(warns.iter().all(|e| e["level"] == "warn"));
    let searched = all_stored(&host, "search=RECEIVED%3A%20GET%20%2FLAST").await;
    assert_eq!(
        searched.len(),
        1,
        "case-insensitive, like the live stream: {searched:?}"
    );
    assert_eq!(searched[0]["message"], "[INFO] request received: GET /last");
    let one = all_stored(&host, &format!("requestId={first}")).await;
    assert_eq!(one.len(), 7);
    assert!(one.iter().all(|e| e["requestId"] == first.as_str()));
    let events = all_stored(&host, "type=request&status=ok").await;
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["requestId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&last, &secret, &first]);
    assert!(all_stored(&host, "status=error").await.is_empty());
    // A window: from the last request's first entry on.
    let start = one
        .iter()
        .map(|e| e["timestamp"].as_u64().unwrap())
        .max()
        .unwrap()
        + 1;
    let later = all_stored(&host, &format!("since={start}")).await;
    assert!(
        later.iter().all(|e| e["requestId"] != first.as_str()),
        "{later:?}"
    );
    assert!(later.iter().any(|e| e["requestId"] == last.as_str()));

    // The secret the guest printed is redacted in the store as on the wire…
    let printed = all_stored(&host, &format!("requestId={secret}&type=log")).await;
    assert_eq!(printed[0]["message"], "env API_KEY=[REDACTED]");
    // …and not on the disk in any form the files hold.
    let mut files = 0;
    let mut folders = vec![dir.path().join("state")];
    while let Some(folder) = folders.pop() {
        for item in std::fs::read_dir(folder).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.to_string_lossy().contains("logs.sqlite3") {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is its owner's alone", path.display());
            }
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes
                    .windows(API_KEY.len())
                    .any(|w| w == API_KEY.as_bytes()),
                "{} holds the secret",
                path.display()
            );
            files += 1;
        }
    }
    assert!(files >= 2, "the store's files were read");

    // Only the owner (or an admin) reads them; a tenant not kept says so.
    let (status, refused) = page(&host, "hello", "", "bob").await;
    assert_eq!(status, 403, "{refused}");
    let (status, refused) = page(&host, "fleeting", "", "alice").await;
    assert_eq!(status, 409);
    assert!(
        refused["error"].as_str().unwrap().contains("retain"),
        "{refused}"
    );
    let (status, refused) = page(&host, "hello", "since=yesterday", "alice").await;
    assert_eq!(status, 400);
    assert!(
        refused["error"].as_str().unwrap().contains("15m"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_entries_and_numbering_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = start(dir.path(), 1 << 20);
    let before = served(&host, "/before").await;
    assert!(host.terminate().success());
    let host = start(dir.path(), 1 << 20);
    let after = served(&host, "/after").await;
    let all = all_stored(&host, "").await;
    assert_eq!(
        seqs(&all),
        (1..=14).rev().collect::<Vec<u64>>(),
        "no number twice"
    );
    assert!(all[7..].iter().all(|e| e["requestId"] == before.as_str()));
    assert!(all[..7].iter().all(|e| e["requestId"] == after.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_quota_a_tenant_loses_its_oldest_entries_and_is_told_how_many() {
    let dir = tempfile::tempdir().unwrap();
    const QUOTA: u64 = 16 * 1024;
    let host = start(dir.path(), QUOTA);
    let mut last = String::new();
    for i in 0..30 {
        last = served(&host, &format!("/request-{i}")).await;
    }
    let kept = all_stored(&host, "").await;
    let bytes: usize = kept.iter().map(|e| e.to_string().len()).sum();
    assert!(bytes as u64 <= QUOTA, "{bytes} bytes kept");
    let newest = seqs(&kept);
    assert_eq!(newest[0], 30 * 7, "the newest is there");
    assert!(kept.iter().take(7).all(|e| e["requestId"] == last.as_str()));
    let oldest = *newest.last().unwrap();
    assert!(oldest > 1, "the oldest went");
    assert_eq!(
        newest,
        (oldest..=30 * 7).rev().collect::<Vec<u64>>(),
        "what is kept has no hole"
    );
    let (_, page) = page(&host, "hello", "limit=1", "alice").await;
    assert_eq!(page["unstored"]["quota"], oldest - 1, "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_since_prints_the_stored_entries_then_the_live_ones_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), 1 << 20);
    for i in 0..3 {
        served(&host, &format!("/stored-{i}")).await;
    }
    let url = format!("http://localhost:{}", host.addr.port());
    let tail = TailProcess::start(
        &["hello", "--url", &url, "--format", "json", "--since", "1h"],
        Some(&token("alice")),
    );
    tail.stderr_line(|line| line.contains("connected to"));
    let mut printed = Vec::new();
    // The stored ones come first, in order…
    while printed.len() < 21 {
        printed.push(entry(&tail));
    }
    // …then the live ones.
    let live = host
        .get("hello.localhost", "/live")
        .await
        .header("x-request-id")
        .unwrap()
        .to_string();
    loop {
        let entry = entry(&tail);
        let end = entry["type"] == "request" && entry["requestId"] == live.as_str();
        printed.push(entry);
        if end {
            break;
        }
    }
    assert_eq!(seqs(&printed), (1..=28).collect::<Vec<u64>>());
    let distinct: BTreeSet<u64> = seqs(&printed).into_iter().collect();
    assert_eq!(distinct.len(), printed.len(), "each seq once");
    let said = tail.stderr_so_far();
    assert!(
        !said.iter().any(|line| line.contains("no stored entries")),
        "{said:?}"
    );
}

fn entry(tail: &TailProcess) -> Value {
    serde_json::from_str(&tail.stdout_line(|_| true)).expect("each line is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_host_answers_for_entries_another_served_also_once_it_is_gone() {
    let nats = NatsServer::start();
    let hello = guest("hello");
    let config = [
        format!("[cluster]\nnats_url = \"{}\"\n", nats.url()),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        "[tenants.logs]\nretain = \"1h\"\n".to_string(),
    ]
    .concat();
    let mut a = HostProcess::multi(&config, &["--node", "a"]);
    let b = HostProcess::multi(&config, &["--node", "b"]);
    a.wait_for_cluster(|s| s["link"] == "up").await;
    b.wait_for_cluster(|s| s["link"] == "up").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let reply = a.get("hello.localhost", &format!("/on-a-{i}")).await;
        assert_eq!(reply.status, 200);
        ids.push(reply.header("x-request-id").unwrap().to_string());
    }
    // B answers for what A served: A's numbering, node "a".
    let on_b = stored_on(&b, 21).await;
    assert!(on_b.iter().all(|e| e["node"] == "a"), "{on_b:?}");
    assert_eq!(seqs(&on_b), (1..=21).rev().collect::<Vec<u64>>());
    assert!(
        on_b.iter()
            .all(|e| ids.iter().any(|id| e["requestId"] == id.as_str()))
    );
    // A goes away; B still answers, and keeps its own entries beside.
    a.kill();
    let own = b.get("hello.localhost", "/on-b").await;
    assert_eq!(own.status, 200);
    let after = stored_on(&b, 28).await;
    assert_eq!(
        after.iter().filter(|e| e["node"] == "b").count(),
        7,
        "B's own request"
    );
    assert_eq!(&after[7..], &on_b[..], "A's entries are all still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_since_on_how_requests_ended_shows_a_request_running_at_the_join_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    let misbehave = guest("misbehave");
    let config = [
        tenant_toml("mis", "alice", "active", &[("1.0.0", &misbehave)]),
        "[tenants.logs]\nretain = \"1h\"\n".to_string(),
    ]
    .concat();
    std::fs::write(&path, config).unwrap();
    let host = HostProcess::multi_at(
        &path,
        &["--state-dir", dir.path().join("state").to_str().unwrap()],
    );
    let running = host.spawn_get("mis.localhost", "/slow?ms=4000");
    // Its first line is written (and kept) before tail joins.
    eventually(Duration::from_millis(20), async || {
        let (_, page) = page(&host, "mis", "search=sleeping", "alice").await;
        match page["entries"].as_array().map(Vec::len) {
            Some(1) => Ok(()),
            _ => Err(format!("not written yet: {page}")),
        }
    })
    .await;
    let url = format!("http://localhost:{}", host.addr.port());
    let tail = TailProcess::start(
        &[
            "mis", "--url", &url, "--format", "json", "--since", "1h", "--status", "ok",
        ],
        Some(&token("alice")),
    );
    tail.stderr_line(|line| line.contains("connected to"));
    assert!(!running.is_finished(), "tail joined while the request ran");
    assert_eq!(running.await.unwrap().status, 200);
    let first = entry(&tail);
    assert_eq!(
        first["message"], "[INFO] sleeping 4000 ms",
        "the line from before the join"
    );
    let second = entry(&tail);
    assert_eq!(second["type"], "request", "then its end: {second}");
    assert_eq!(
        (first["seq"].as_u64(), second["seq"].as_u64()),
        (Some(1), Some(2))
    );
}
