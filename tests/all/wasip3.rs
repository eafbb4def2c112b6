//! WASIp3 tenants (`guests/hello-p3`, `wasi:http/service@0.3`) against the
//! real host, next to a WASIp2 one: they serve, their lines reach the
//! owner's viewer under the id of the request that wrote them (also 16 at
//! once), a body written after the response head streams to its end before
//! the request's event, a client that leaves mid-body ends the request, and
//! the CPU and memory limits and traps end a request as they do for p2;
//! with `instance_reuse`, an instance serves requests one after another and
//! is dropped after a trap.

use crate::support;

use crate::support::{HostProcess, Viewer, guest, tenant_toml};
use http_body_util::BodyExt as _;
use serde_json::Value;

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
    let lines = messages(&entries);
    assert!(
        lines[0].starts_with("[INFO] streaming in instance "),
        "{lines:?}"
    );
    assert_eq!(
        lines[1..],
        [
            "[INFO] sending chunk 1 of /stream?chunks=3",
            "[INFO] sending chunk 2 of /stream?chunks=3",
            "[INFO] sending chunk 3 of /stream?chunks=3"
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
    let (id, response, connection) = streams(&host, 1).await.pop().unwrap();
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

/// Entries from the viewer until `n` request events have come.
async fn entries_until_events(viewer: &mut Viewer, n: usize) -> Vec<Value> {
    let mut entries: Vec<Value> = Vec::new();
    while entries.iter().filter(|e| e["type"] == "request").count() < n {
        let frame = viewer.frame().await;
        entries.extend(frame["entries"].as_array().unwrap().iter().cloned());
    }
    entries
}

/// The request event of `id` among `entries`.
fn event_of(entries: &[Value], id: &str) -> Value {
    entries
        .iter()
        .find(|e| e["type"] == "request" && e["requestId"] == id)
        .unwrap_or_else(|| panic!("no event for {id}: {entries:?}"))
        .clone()
}

/// A tenants file whose p3 tenant shares instances, `concurrent` requests
/// at once, with `settings`.
fn sharing(concurrent: u32, settings: &str) -> String {
    config(&format!(
        "instance_reuse = 64\ninstance_concurrent_reuse = {concurrent}\n{settings}"
    ))
}

/// Instances of one version the host runs side by side (one a core) before
/// it stacks requests into busy ones (`run::shared`).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

type Streaming = (
    String,
    http::Response<hyper::body::Incoming>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
);

/// Starts `n` two-second streams one after another, each in flight (its
/// first chunk received) before the next: the first `cores()` get an
/// instance each.
async fn streams(host: &HostProcess, n: usize) -> Vec<Streaming> {
    let mut started = Vec::new();
    for _ in 0..n {
        let (mut response, connection) = host.get_head("p3.localhost", "/stream?chunks=100").await;
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let frame = response.body_mut().frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().unwrap().as_ref(), b"chunk 1\n");
        started.push((id, response, connection));
    }
    started
}

/// The lines (not the event) of request `id`.
fn lines_of<'a>(entries: &'a [Value], id: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|e| e["requestId"] == id && e["type"] != "request")
        .filter_map(|e| e["message"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sharing_a_wasip3_instance_keep_their_own_lines() {
    let host = HostProcess::multi(&sharing(16, ""), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    let requests: Vec<_> = (0..16)
        .map(|k| host.spawn_get("p3.localhost", &format!("/stream?chunks=4&k={k}")))
        .collect();
    let mut ids = Vec::new();
    for (k, request) in requests.into_iter().enumerate() {
        let reply = request.await.unwrap();
        assert_eq!(reply.text(), "chunk 1\nchunk 2\nchunk 3\nchunk 4\n");
        ids.push((k, reply.header("x-request-id").unwrap().to_string()));
    }
    let entries = entries_until_events(&mut viewer, 16).await;
    // Each request's lines, in order, none of another's; where they lie in
    // the stream (entries come in order), by instance.
    let mut by_instance: std::collections::HashMap<String, Vec<(usize, usize)>> =
        Default::default();
    for (k, id) in &ids {
        let lines = lines_of(&entries, id);
        let instance = lines[0]
            .strip_prefix("[INFO] streaming in instance ")
            .unwrap_or_else(|| panic!("request {k}: {lines:?}"));
        let expected: Vec<String> = (1..=4)
            .map(|i| format!("[INFO] sending chunk {i} of /stream?chunks=4&k={k}"))
            .collect();
        assert_eq!(lines[1..], expected, "request {k} ({id})");
        let event = event_of(&entries, id);
        assert_eq!(event["outcome"], "ok", "{event}");
        let at: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e["requestId"] == id.as_str())
            .map(|(i, _)| i)
            .collect();
        by_instance
            .entry(instance.to_string())
            .or_default()
            .push((at[0], *at.last().unwrap()));
    }
    // At most one instance a core, so instances served several requests,
    // and some instance served two at once: one began before the other
    // had ended.
    assert!(by_instance.len() <= cores(), "{by_instance:?}");
    assert!(
        by_instance.values().any(|spans| spans
            .iter()
            .any(|a| spans.iter().any(|b| a != b && b.0 < a.1 && a.0 < b.1))),
        "{by_instance:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_shared_wasip3_instance_ends_the_requests_sharing_it() {
    let host = HostProcess::multi(&sharing(4, ""), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    // One stream in each instance the host runs side by side: the next
    // request shares the first one's.
    let mut started = streams(&host, cores()).await;

    // The request that traps gets its own trap, with its name and stack…
    let reply = host.get("p3.localhost", "/trap").await;
    assert_eq!(reply.status, 500);
    let trap = reply.header("x-request-id").unwrap().to_string();
    let entries = entries_until_events(&mut viewer, 2).await;
    let trapped = event_of(&entries, &trap);
    assert_eq!(trapped["outcome"], "exception", "{trapped}");
    assert_eq!(trapped["exception"]["name"], "UnreachableCodeReached");
    // …and the request sharing its instance ends with it, told which one
    // it was; its body stops short.
    let (long, response, _connection) = &mut started[0];
    let stopped = event_of(&entries, long);
    assert_eq!(stopped["outcome"], "exception", "{stopped}");
    let message = stopped["exception"]["message"].as_str().unwrap();
    assert!(
        message.contains("stopped with its shared instance") && message.contains(&trap),
        "{stopped}"
    );
    let mut rest = Vec::new();
    while let Some(Ok(frame)) = response.body_mut().frame().await {
        rest.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d.as_ref()));
    }
    assert!(
        !String::from_utf8_lossy(&rest).contains("chunk 100"),
        "the body went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_reached_in_a_shared_wasip3_instance_stops_it_and_names_the_request() {
    let host = HostProcess::multi(&sharing(4, ""), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    for (path, outcome, long_outcome, said) in [
        (
            "/spin",
            "exceededCpu",
            "exception",
            "exceeded its CPU limit (300 ms)",
        ),
        (
            "/oom",
            "exceededMemory",
            "exceededMemory",
            "went past its memory limit (32 MiB)",
        ),
    ] {
        let started = streams(&host, cores()).await;
        let reply = host.get("p3.localhost", path).await;
        assert_eq!(reply.status, 503, "{path}");
        let culprit = reply.header("x-request-id").unwrap().to_string();
        let entries = entries_until_events(&mut viewer, 2).await;
        assert_eq!(event_of(&entries, &culprit)["outcome"], outcome, "{path}");
        // The request sharing its instance is told what stopped it, and
        // which request it was when that is known.
        let long = &started[0].0;
        assert_eq!(event_of(&entries, long)["outcome"], long_outcome, "{path}");
        let told: Vec<&str> = lines_of(&entries, long)
            .into_iter()
            .filter(|m| m.contains("stopped with its shared instance"))
            .collect();
        assert_eq!(told.len(), 1, "{path}: {entries:?}");
        assert!(told[0].contains(said), "{path}: {told:?}");
        if path == "/spin" {
            assert!(told[0].contains(&culprit), "{told:?}");
        }
        // Other tenants go on.
        assert_eq!(host.get("p2.localhost", "/quiet").await.status, 200);
        // The streams in the other instances are left to end (or be
        // dropped with their connections) before the next round.
        for (_, _, connection) in started {
            connection.abort();
        }
        let _ = entries_until_events(&mut viewer, cores() - 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_limit_stops_its_shared_wasip3_instance() {
    let host = HostProcess::multi(&sharing(4, "request_timeout_ms = 1000\n"), &[]);
    let mut viewer = host.viewer("p3", "", "alice").await;
    // Two-second bodies with a one-second limit: one in each instance the
    // host runs side by side, and one more, which shares the first's
    // instance and is stopped when the first reaches its limit.
    let started = streams(&host, cores() + 1).await;
    let entries = entries_until_events(&mut viewer, cores() + 1).await;
    let (first, last) = (&started[0].0, &started.last().unwrap().0);
    assert_eq!(event_of(&entries, first)["outcome"], "exceededWallTime");
    let stopped = event_of(&entries, last);
    assert_eq!(stopped["outcome"], "exception", "{stopped}");
    let message = stopped["exception"]["message"].as_str().unwrap();
    assert!(
        message.contains(first.as_str()) && message.contains("wall-clock limit"),
        "{stopped}"
    );
}

#[test]
fn sharing_asked_of_a_wasip2_tenant_is_said_to_do_nothing() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.toml");
    std::fs::write(
        &config,
        tenant_toml("p2", "alice", "active", &[("1.0.0", &guest("hello"))])
            + "instance_concurrent_reuse = 4\n",
    )
    .unwrap();
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_mctx-host"))
        .args(["serve", "--addr", "127.0.0.1:0", "--no-cache", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env(
            "MCTX_SESSION_SECRET",
            "a test secret of at least thirty-two bytes",
        )
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(host.stderr.take().unwrap());
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let warning = loop {
        match said.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains("instance_concurrent_reuse") => break line,
            Ok(_) => continue,
            Err(e) => panic!("no warning from the host: {e}"),
        }
    };
    let _ = host.kill();
    let _ = host.wait();
    assert!(
        warning.contains("WARN")
            && warning.contains("1.0.0")
            && warning.contains("one request at a time"),
        "{warning}"
    );
}
