//! Graceful shutdown: SIGTERM lets requests in flight finish, sends viewers
//! a `closing` frame and close code 1001, and exits 0.

use crate::support::{HostProcess, Received, guest, tenant_toml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_says_goodbye_to_viewers_and_exits_zero() {
    let config = tenant_toml("bad", "alice", "active", &[("1.0.0", &guest("misbehave"))]);
    let mut host = HostProcess::multi(&config, &["--shutdown-grace-secs", "20"]);
    let mut viewer = host.viewer("bad", "", "alice").await;
    let slow = host.spawn_get("bad.localhost", "/slow?ms=1500");
    let first = viewer.frame().await;
    assert_eq!(
        first["entries"][0]["message"], "[INFO] sleeping 1500 ms",
        "the request is in flight"
    );

    let exited = tokio::task::spawn_blocking(move || host.terminate());

    let reply = slow.await.unwrap();
    assert_eq!(
        reply.status,
        200,
        "the request in flight finished: {}",
        reply.text()
    );
    // The viewer still gets the end of that request, then the goodbye.
    let event = viewer
        .entries_until(|e| e["type"] == "request")
        .await
        .pop()
        .unwrap();
    assert_eq!(
        (event["status"].as_u64(), event["outcome"].as_str()),
        (Some(200), Some("ok"))
    );
    let closing = viewer.frame().await;
    assert_eq!(closing["type"], "closing");
    assert_eq!(closing["reason"], "the host is shutting down");
    match viewer.receive().await {
        Received::Closed(Some((1001, _))) => {}
        other => panic!("expected close code 1001, got {other:?}"),
    }
    let status = exited.await.unwrap();
    assert!(status.success(), "exit status {status}");
}
