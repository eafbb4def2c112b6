//! Several hosts sharing log hubs over a real `nats-server` (JetStream on):
//! entries cross hosts in each producer's order, the viewer limit holds
//! across hosts (and a crashed host's slots come back), and a NATS restart
//! mid-stream leaves every host serving and every viewer told what it missed;
//! two hosts given one node name are told so.

use crate::support;

use crate::support::{HostProcess, NatsServer, Viewer, guest, tenant_toml, watched_elsewhere};
use serde_json::Value;

/// A tenants file for a cluster member; `lease` is `[cluster]
/// viewer_lease_secs` (short in the crash test).
fn config(nats: &NatsServer, lease: u64) -> String {
    let hello = guest("hello");
    [
        format!(
            "[cluster]\nnats_url = \"{}\"\nviewer_lease_secs = {lease}\n",
            nats.url()
        ),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
    ]
    .concat()
}

fn host(nats: &NatsServer, node: &str, lease: u64) -> HostProcess {
    HostProcess::multi(&config(nats, lease), &["--node", node])
}

fn request_id(reply: &support::Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.header("x-request-id").unwrap().to_string()
}

/// The viewer's next frame is a notice containing each of `texts`.
async fn expect_notice(viewer: &mut Viewer, texts: &[&str]) {
    let notice = viewer.frame().await;
    assert_eq!(notice["type"], "notice", "{notice}");
    let message = notice["message"].as_str().unwrap();
    for text in texts {
        assert!(message.contains(text), "{message:?} lacks {text:?}");
    }
}

/// Frames until `done` holds for one of them (that one included).
async fn frames_until(viewer: &mut Viewer, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = viewer.frame().await;
        let last = done(&frame);
        frames.push(frame);
        if last {
            return frames;
        }
    }
}

fn has_request_event(frame: &Value, id: &str) -> bool {
    frame["type"] == "logs"
        && frame["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "request" && e["requestId"] == id)
}

fn entries(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["type"] == "logs")
        .flat_map(|f| f["entries"].as_array().unwrap().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_on_one_host_sees_requests_served_by_another_in_order() {
    let nats = NatsServer::start();
    let (a, b) = (host(&nats, "a", 15), host(&nats, "b", 15));
    a.wait_for_cluster(|s| s["link"] == "up").await;
    assert!(
        !watched_elsewhere(&a.cluster_status().await, "hello"),
        "no viewer anywhere yet: nothing to send"
    );

    let mut viewer = b.viewer("hello", "", "alice").await;
    a.wait_for_cluster(|s| watched_elsewhere(s, "hello")).await;

    // Three requests on host A, one after the other, then one on B.
    let mut ids = Vec::new();
    for path in ["/one", "/two", "/three"] {
        ids.push(request_id(&a.get("hello.localhost", path).await));
    }
    let from_a = viewer.request_entries(&ids[2]).await;
    assert!(from_a.iter().all(|e| e["node"] == "a"), "{from_a:?}");
    let seqs: Vec<u64> = from_a.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "producer A's seq is gapless and in order"
    );
    let requests: Vec<&Value> = from_a.iter().filter(|e| e["type"] == "request").collect();
    assert_eq!(requests.len(), 3);
    for (event, id) in requests.iter().zip(&ids) {
        assert_eq!(event["requestId"], id.as_str());
    }
    assert_eq!(from_a[0]["message"], "hello: GET /one");
    assert_eq!(from_a[0]["slug"], "hello");

    let id = request_id(&b.get("hello.localhost", "/local").await);
    let from_b = viewer.request_entries(&id).await;
    assert!(from_b.iter().all(|e| e["node"] == "b"), "{from_b:?}");
    assert_eq!(from_b[0]["seq"], 1, "seq counts per producer");

    // The last viewer leaves: host A stops sending.
    viewer.close().await;
    a.wait_for_cluster(|s| !watched_elsewhere(s, "hello")).await;
    for host in [&a, &b] {
        let status = host.cluster_status().await;
        assert_eq!(status["nodeNameSharedWith"], Value::Null, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_given_one_node_name_find_each_other_and_say_so() {
    let nats = NatsServer::start();
    let first = host(&nats, "twin", 15);
    first.wait_for_cluster(|s| s["link"] == "up").await;
    let mut viewer = first.viewer("hello", "", "alice").await;

    let second = host(&nats, "twin", 15);
    for (host, other) in [(&first, &second), (&second, &first)] {
        let other_pid = format!(" pid {}", other.pid());
        host.wait_for_cluster(|s| {
            s["nodeNameSharedWith"]
                .as_str()
                .is_some_and(|o| o.ends_with(&other_pid))
        })
        .await;
    }
    expect_notice(
        &mut viewer,
        &[
            "two hosts use the node name \"twin\"",
            "reported as dropped",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_viewer_across_hosts_is_refused_and_a_crashed_hosts_slots_expire() {
    let nats = NatsServer::start();
    let lease = 3;
    let (mut a, b) = (host(&nats, "a", lease), host(&nats, "b", lease));
    a.wait_for_cluster(|s| s["link"] == "up").await;
    b.wait_for_cluster(|s| s["link"] == "up").await;

    let mut on_a = Vec::new();
    for _ in 0..6 {
        on_a.push(a.viewer("hello", "", "alice").await);
    }
    let mut on_b = Vec::new();
    for _ in 0..4 {
        on_b.push(b.viewer("hello", "", "alice").await);
    }
    let cookie = format!("session={}", support::token("alice"));
    let headers = [("cookie", cookie.as_str())];
    for host in [&a, &b] {
        let refused = host
            .try_viewer("/log-stream/hello", &headers)
            .await
            .err()
            .expect("the eleventh viewer is refused");
        assert_eq!(refused.status, 429, "{}", refused.error);
        assert!(
            refused.error.contains("across the cluster"),
            "{}",
            refused.error
        );
    }

    // A viewer leaving host A frees a slot for host B.
    on_a.pop().unwrap().close().await;
    let admitted = admitted_eventually(&b, &headers).await;
    on_b.push(admitted);

    // Host A crashes with 5 viewers: once its lease runs out, B can have them.
    a.kill();
    drop(on_a);
    for _ in 0..5 {
        on_b.push(admitted_eventually(&b, &headers).await);
    }
    assert_eq!(on_b.len(), 10);
    let refused = b.try_viewer("/log-stream/hello", &headers).await.err();
    assert_eq!(refused.map(|r| r.status), Some(429));
}

/// Opens a viewer, retrying while the slug is full (slots free up as other
/// hosts' claims change or expire); fails after the harness's patience.
async fn admitted_eventually(host: &HostProcess, headers: &[(&str, &str)]) -> Viewer {
    support::eventually(std::time::Duration::from_millis(50), async || {
        match host.try_viewer("/log-stream/hello", headers).await {
            Ok(viewer) => Ok(viewer),
            Err(refused) => {
                assert_eq!(refused.status, 429, "{}", refused.error);
                Err("never admitted".to_string())
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_leaves_hosts_serving_and_viewers_told_what_they_missed() {
    let mut nats = NatsServer::start();
    let (a, b) = (host(&nats, "a", 15), host(&nats, "b", 15));
    let mut on_a = a.viewer("hello", "", "alice").await;
    let mut on_b = b.viewer("hello", "", "alice").await;
    a.wait_for_cluster(|s| watched_elsewhere(s, "hello")).await;
    b.wait_for_cluster(|s| watched_elsewhere(s, "hello")).await;
    let before = request_id(&a.get("hello.localhost", "/before").await);
    let seen_before = on_b.request_entries(&before).await;
    let last_before = seen_before.last().unwrap()["seq"].as_u64().unwrap();
    on_a.request_entries(&before).await;

    nats.kill();
    for viewer in [&mut on_a, &mut on_b] {
        expect_notice(viewer, &["lost the cluster link"]).await;
    }
    // Both hosts keep serving; each host's viewer keeps seeing its entries.
    let during = request_id(&a.get("hello.localhost", "/during").await);
    let missed_on_b = on_a.request_entries(&during).await.len() as u64;
    let during_b = request_id(&b.get("hello.localhost", "/during-b").await);
    on_b.request_entries(&during_b).await;

    nats.restart();
    for viewer in [&mut on_a, &mut on_b] {
        expect_notice(viewer, &["is back"]).await;
    }
    a.wait_for_cluster(|s| s["link"] == "up" && watched_elsewhere(s, "hello"))
        .await;

    // Entries flow again. Whatever B's viewer got from A since the start,
    // plus what it was told it missed, is everything A produced.
    let after = request_id(&a.get("hello.localhost", "/after").await);
    let frames = frames_until(&mut on_b, |f| has_request_event(f, &after)).await;
    let dropped: u64 = frames
        .iter()
        .filter(|f| f["type"] == "dropped")
        .map(|f| f["count"].as_u64().unwrap())
        .sum();
    let from_a: Vec<Value> = entries(&frames)
        .into_iter()
        .filter(|e| e["node"] == "a")
        .collect();
    assert!(
        from_a.iter().all(|e| e["requestId"] != during.as_str()),
        "entries produced while the link was down cannot arrive"
    );
    assert_eq!(
        dropped, missed_on_b,
        "B's viewer is told exactly what it missed: {frames:?}"
    );
    let seqs: Vec<u64> = from_a.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let first_after = last_before + missed_on_b + 1;
    assert_eq!(
        seqs,
        (first_after..first_after + seqs.len() as u64).collect::<Vec<_>>(),
        "every seq of A's is either received or reported missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_nats_a_host_serves_and_its_viewers_see_its_own_entries() {
    // A port nobody listens on: the host starts anyway and keeps retrying.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let hello = guest("hello");
    let config = tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]);
    let url = format!("nats://127.0.0.1:{port}");
    let host = HostProcess::multi(&config, &["--nats-url", &url, "--node", "alone"]);
    host.wait_for_cluster(|s| s["link"].as_str().unwrap().starts_with("down"))
        .await;

    let mut viewer = host.viewer("hello", "", "alice").await;
    expect_notice(&mut viewer, &["is down"]).await;
    let id = request_id(&host.get("hello.localhost", "/").await);
    let entries = viewer.request_entries(&id).await;
    assert!(entries.iter().all(|e| e["node"] == "alone"));
    assert_eq!(entries[0]["message"], "hello: GET /");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_viewers_are_counted_locally_and_told_why() {
    let nats = NatsServer::start_without_jetstream();
    let host = host(&nats, "a", 15);
    host.wait_for_cluster(|s| s["link"] == "up").await;
    let mut viewer = host.viewer("hello", "", "alice").await;
    expect_notice(
        &mut viewer,
        &["could not be counted across the cluster", "JetStream"],
    )
    .await;
    let id = request_id(&host.get("hello.localhost", "/").await);
    let entries = viewer.request_entries(&id).await;
    assert!(entries.iter().all(|e| e["node"] == "a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_in_the_nats_url_is_used_and_never_shown() {
    let mut nats = NatsServer::start_with_auth(&["--user", "host", "--pass", "s3cr3t-pass"]);
    let hello = guest("hello");
    let config = tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]);
    let url = format!("nats://host:s3cr3t-pass@127.0.0.1:{}", nats.port);
    let host = HostProcess::multi(&config, &["--nats-url", &url, "--node", "a"]);
    host.wait_for_cluster(|s| s["link"] == "up").await;
    let health = host.get("localhost", "/healthz").await.text();
    assert!(!health.contains("s3cr3t"), "{health}");
    let shown = format!("nats://127.0.0.1:{}", nats.port);
    assert!(health.contains(&shown), "{health}");

    // What a viewer is told when the link drops names the server only.
    let mut viewer = host.viewer("hello", "", "alice").await;
    nats.kill();
    let frames = frames_until(&mut viewer, |f| f["type"] == "notice").await;
    let notice = frames.last().unwrap();
    let message = notice["message"].as_str().unwrap_or_default();
    assert!(message.contains(&shown), "{notice}");
    assert!(!message.contains("s3cr3t"), "{notice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_token_file_must_be_private_and_is_presented() {
    use std::os::unix::fs::PermissionsExt as _;
    let nats = NatsServer::start_with_auth(&["--auth", "file-token"]);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("nats-token");
    std::fs::write(&token, "file-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (hello, url) = (guest("hello"), nats.url());
    let stderr = support::run_failing(&[
        "serve".into(),
        hello.clone().into(),
        "--nats-url".into(),
        url.clone().into(),
        "--nats-token-file".into(),
        token.clone().into(),
    ]);
    assert!(stderr.contains("chmod 600"), "{stderr}");

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]);
    let token = token.display().to_string();
    let host = HostProcess::multi(
        &config,
        &[
            "--nats-url",
            &url,
            "--nats-token-file",
            &token,
            "--node",
            "a",
        ],
    );
    host.wait_for_cluster(|s| s["link"] == "up").await;
}
