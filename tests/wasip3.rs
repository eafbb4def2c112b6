//! WASIp3 tenants (`guests/hello-p3`, `wasi:http/service@0.3`) against the
//! real host, next to a WASIp2 one: they serve, their lines reach the
//! owner's viewer under the id of the request that wrote them (also 16 at
//! once), a body written after the response head streams to its end before
//! the request's event, a client that leaves mid-body ends the request, and
//! the CPU and memory limits and traps end a request as they do for p2;
//! with `instance_reuse`, an instance serves requests one after another and
//! is dropped after a trap.

mod support;

use http_body_util::BodyExt as _;
use serde_json::Value;
use support::{HostProcess, Viewer, guest, tenant_toml};

/// A tenants file: `p3` (hello-p3, tight limits, `settings`) and `p2`
/// (hello).
fn config(settings: &str) -> String {
    [
        tenant_toml("p3", "alice", "active", &[("1.0.0", &guest("hello_p3"))])
            + "cpu_limit_ms = 300\nmemory_limit_mb = 32\n"
            + settings,
        tenant_toml("p2", "alice", "active", &[("1.0.0", &guest("hello"))]),
    ]
    .concat()
}

/// GET `path` on p3: status, body, and the request's own entries.
async fn get(host: &HostProcess, viewer: &mut Viewer, path: &str) -> (u16, String, Vec<Value>) {
    let reply = host.get("p3.localhost", path).await;
    let id = reply.header("x-request-id").unwrap().to_string();
    let entries = viewer
        .request_entries(&id)
        .await
        .into_iter()
        .filter(|e| e["requestId"] == id)
        .collect();
    (reply.status, reply.text(), entries)
}

fn messages(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .filter(|e| e["type"] != "request")
        .map(|e| e["message"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasip3_tenant_serves_logs_and_is_limited_like_a_wasip2_one() {
    let host = HostProcess::multi(&config(""), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;

    let (status, body, entries) = get(&host, &mut viewer, "/hi").await;
    assert_eq!((status, body.as_str()), (200, "hello from p3 at /hi\n"));
    assert_eq!(messages(&entries), ["[INFO] p3 request received: /hi"]);
    let event = entries.last().unwrap();
    assert_eq!(
        (event["outcome"].as_str(), event["status"].as_u64()),
        (Some("ok"), Some(200))
    );

    // The body is written by a guest task after `handle` returned: all of
    // it arrives, and its lines come before the request's event.
    let (status, body, entries) = get(&host, &mut viewer, "/stream?chunks=3").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "chunk 1\nchunk 2\nchunk 3\n")
    );
    assert_eq!(
        messages(&entries),
        [
            "[INFO] sending chunk 1",
            "[INFO] sending chunk 2",
            "[INFO] sending chunk 3"
        ]
    );
    assert_eq!(entries.last().unwrap()["outcome"], "ok");

    for (path, status, outcome) in [
        ("/trap", 500, "exception"),
        ("/spin", 503, "exceededCpu"),
        ("/oom", 503, "exceededMemory"),
    ] {
        let (got, _, entries) = get(&host, &mut viewer, path).await;
        let event = entries.last().unwrap();
        assert_eq!(got, status, "{path}");
        assert_eq!(event["outcome"], outcome, "{path}: {event}");
        assert_eq!(event["status"], status, "{path}");
    }
    // The trap says what it was and where; the host and the other tenants
    // go on.
    let (_, _, entries) = get(&host, &mut viewer, "/trap").await;
    assert!(
        messages(&entries).contains(&"hello-p3: trap requested"),
        "{entries:?}"
    );
    let event = entries.last().unwrap();
    assert_eq!(event["exception"]["name"], "UnreachableCodeReached");
    assert!(
        support::stack_of(event)
            .iter()
            .any(|frame| frame.contains("wasi:http/handler@0.3.0#handle")),
        "{event}"
    );
    assert_eq!(host.get("p2.localhost", "/quiet").await.status, 200);
    assert_eq!(get(&host, &mut viewer, "/quiet").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_wasip3_requests_at_once_keep_their_own_lines() {
    // With reuse, so that instances serve one request after another.
    let host = HostProcess::multi(&config("instance_reuse = 8\n"), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    let mut requests = Vec::new();
    for k in 0..16 {
        requests.push(host.spawn_get("p3.localhost", &format!("/lines?n=5&k={k}")));
    }
    let mut ids = Vec::new();
    for (k, request) in requests.into_iter().enumerate() {
        let reply = request.await.unwrap();
        assert_eq!(reply.text(), "5 lines\n");
        ids.push((k, reply.header("x-request-id").unwrap().to_string()));
    }
    let mut entries: Vec<Value> = Vec::new();
    while entries.iter().filter(|e| e["type"] == "request").count() < 16 {
        let frame = viewer.frame().await;
        entries.extend(frame["entries"].as_array().unwrap().iter().cloned());
    }
    for (k, id) in ids {
        let lines: Vec<&str> = entries
            .iter()
            .filter(|e| e["requestId"] == id.as_str() && e["type"] != "request")
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (1..=5)
            .map(|i| format!("line {i} of 5 for /lines?n=5&k={k}"))
            .collect();
        assert_eq!(lines, expected, "request {k} ({id})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_ends_the_wasip3_request() {
    let host = HostProcess::multi(&config(""), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    // 100 chunks 20 ms apart: two seconds of body, left after the first.
    let (mut response, connection) = host.get_head("p3.localhost", "/stream?chunks=100").await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let frame = response.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(frame.data_ref().unwrap().as_ref(), b"chunk 1\n");
    drop(response);
    connection.abort();
    let entries: Vec<Value> = viewer
        .request_entries(&id)
        .await
        .into_iter()
        .filter(|e| e["requestId"] == id.as_str())
        .collect();
    let event = entries.last().unwrap();
    assert_eq!(event["outcome"], "responseStreamDisconnected", "{event}");
    // The guest saw its writes fail and stopped well before its 100th chunk.
    let sent = messages(&entries)
        .iter()
        .filter(|m| m.starts_with("[INFO] sending"))
        .count();
    assert!(sent < 100, "{sent} chunks sent");
    assert!(messages(&entries).contains(&"[WARN] the client went away"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_wasip3_instance_serves_in_turn_and_is_dropped_after_a_trap() {
    let host = HostProcess::multi(&config("instance_reuse = 3\n"), &[]);
    let mut viewer = host.viewer("p3", "type=request", "alice").await;
    let mut counts = Vec::new();
    for path in [
        "/counter", "/counter", "/counter", "/counter", "/trap", "/counter",
    ] {
        let (status, body, _) = get(&host, &mut viewer, path).await;
        if path == "/counter" {
            assert_eq!(status, 200);
            counts.push(body.trim().parse::<u32>().unwrap());
        }
    }
    // Three requests, then a fresh instance; the trap's instance is not
    // kept, so the request after it starts afresh.
    assert_eq!(counts, [1, 2, 3, 1, 1]);
}
