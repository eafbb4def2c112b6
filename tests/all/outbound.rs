//! What a tenant may reach, against the real binary: outbound HTTP is
//! denied unless `allowed_outbound_hosts` allows the scheme, host and port,
//! and the resolved address; every refusal reaches the tenant's owner as a
//! `warn` entry; calls are counted and bounded in number and time; `env`
//! and `secrets` reach the guest, and a printed secret arrives redacted.
//! The upstream is a real HTTP server on 127.0.0.1 that counts connections.

use crate::support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{HostProcess, guest, tenant_toml};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A real HTTP server on 127.0.0.1: answers `upstream ok {path}`, or, on
/// `/slow`, only after 10 s. Counts the connections it accepted.
pub(super) struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Set once a `/slow` request has been answered.
    slow_answered: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let slow_answered = Arc::new(AtomicBool::new(false));
    let (counted, answered) = (connections.clone(), slow_answered.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let answered = answered.clone();
            let service = hyper::service::service_fn(move |request: http::Request<_>| {
                let answered = answered.clone();
                async move {
                    let path = request.uri().path().to_string();
                    if path == "/slow" {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        answered.store(true, Ordering::SeqCst);
                    }
                    let body = Full::new(Bytes::from(format!("upstream ok {path}")));
                    Ok::<_, Infallible>(http::Response::new(body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    Upstream {
        addr,
        connections,
        slow_answered,
        task,
    }
}

/// A `[[tenants]]` table for hello.wasm with `extra` keys.
pub(super) fn tenant(slug: &str, extra: &str) -> String {
    format!(
        "{}{extra}\n",
        tenant_toml(slug, "alice", "active", &[("1.0.0", &guest("hello"))])
    )
}

/// Asks `slug`'s guest to GET `url` `times` times; its JSON answer and the
/// request id.
pub(super) async fn fetch(
    host: &HostProcess,
    slug: &str,
    url: &str,
    times: usize,
) -> (Value, String) {
    let times = times.to_string();
    let reply = host
        .request(
            "GET",
            &format!("{slug}.localhost"),
            "/fetch",
            &[("x-fetch-url", url), ("x-fetch-times", &times)],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.header("x-request-id").unwrap().to_string();
    (reply.json(), id)
}

pub(super) fn denied(result: &Value) -> bool {
    result["error"]
        .as_str()
        .is_some_and(|e| e.contains("HttpRequestDenied"))
}

pub(super) fn warnings(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["level"] == "warn" && e["type"] == "log")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

pub(super) fn event(entries: &[Value]) -> &Value {
    entries.last().filter(|e| e["type"] == "request").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_a_list_reaches_nothing_and_its_owner_is_told() {
    let up = upstream().await;
    let port = up.addr.port();
    let config = [
        tenant("closed", ""),
        tenant(
            "open",
            &format!("allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]"),
        ),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("closed", "", "alice").await;
    let url = format!("http://127.0.0.1:{port}/x");

    let (answer, id) = fetch(&host, "closed", &url, 1).await;
    assert!(denied(&answer["results"][0]), "{answer}");
    let entries = viewer.request_entries(&id).await;
    let warned = warnings(&entries);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("outbound request refused") && warned[0].contains(&url),
        "{warned:?}"
    );
    assert_eq!(event(&entries)["subrequests"], 1);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        0,
        "the upstream saw nothing"
    );

    let (answer, _) = fetch(&host, "open", &url, 1).await;
    assert_eq!(answer["results"][0]["status"], 200, "{answer}");
    assert_eq!(answer["results"][0]["body"], "upstream ok /x");
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_wildcards_ports_and_resolved_addresses_are_all_checked() {
    let up = upstream().await;
    let port = up.addr.port();
    let config = [
        tenant(
            "byname",
            &format!("allowed_outbound_hosts = [\"http://localhost:{port}\"]"),
        ),
        tenant(
            "byname-and-ip",
            &format!(
                "allowed_outbound_hosts = [\"http://localhost:*\", \"http://127.0.0.1:{port}\"]"
            ),
        ),
        tenant(
            "wild",
            "allowed_outbound_hosts = [\"http://*.localhost:*\", \"http://127.0.0.1:*\"]",
        ),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    let by_name = format!("http://localhost:{port}/n");
    let sub = format!("http://api.localhost:{port}/w");

    // An allowed name that resolves to loopback is refused unless the
    // loopback address itself is listed.
    let mut viewer = host.viewer("byname", "", "alice").await;
    let (answer, id) = fetch(&host, "byname", &by_name, 1).await;
    assert!(denied(&answer["results"][0]), "{answer}");
    let warned = warnings(&viewer.request_entries(&id).await);
    assert!(warned[0].contains("127.0.0.1"), "{warned:?}");
    let (answer, _) = fetch(&host, "byname-and-ip", &by_name, 1).await;
    assert_eq!(answer["results"][0]["body"], "upstream ok /n", "{answer}");

    // `*.localhost` covers subdomains, not the name itself; `:*` any port;
    // the scheme still has to match.
    let (answer, _) = fetch(&host, "wild", &sub, 1).await;
    assert_eq!(answer["results"][0]["body"], "upstream ok /w", "{answer}");
    for refused in [by_name.clone(), format!("https://api.localhost:{port}/w")] {
        let (answer, _) = fetch(&host, "wild", &refused, 1).await;
        assert!(denied(&answer["results"][0]), "{refused}: {answer}");
    }
    // A port the list does not name.
    let (answer, _) = fetch(
        &host,
        "byname-and-ip",
        &format!("http://127.0.0.1:{}/", port ^ 1),
        1,
    )
    .await;
    assert!(denied(&answer["results"][0]), "{answer}");

    // The host's own address needs an entry with exactly it: `127.0.0.1:*`
    // is not enough.
    let mut viewer = host.viewer("wild", "", "alice").await;
    let own = format!("http://127.0.0.1:{}/healthz", host.addr.port());
    let (answer, id) = fetch(&host, "wild", &own, 1).await;
    assert!(denied(&answer["results"][0]), "{answer}");
    let warned = warnings(&viewer.request_entries(&id).await);
    assert!(warned[0].contains("this host's own address"), "{warned:?}");

    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        2,
        "only the two allowed calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_51st_subrequest_fails() {
    let up = upstream().await;
    let config = tenant(
        "busy",
        &format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]",
            up.addr.port()
        ),
    );
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("busy", "type=request", "alice").await;
    let url = format!("http://127.0.0.1:{}/n", up.addr.port());
    let (answer, id) = fetch(&host, "busy", &url, 51).await;
    let results = answer["results"].as_array().unwrap();
    assert!(results[..50].iter().all(|r| r["status"] == 200), "{answer}");
    assert!(denied(&results[50]), "{}", results[50]);
    assert_eq!(up.connections.load(Ordering::SeqCst), 50);
    assert_eq!(event(&viewer.request_entries(&id).await)["subrequests"], 51);
}

/// An upstream that reads a request head, writes its whole answer with
/// `Connection: close` and closes at once, as many small servers do; how
/// many connections it took.
async fn answer_and_close() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counted = served.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nclosed";
            let _ = stream.write_all(answer).await;
            let _ = stream.shutdown().await;
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, served, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_and_closes_at_once_is_answered() {
    let (addr, served, task) = answer_and_close().await;
    let config = tenant(
        "brief",
        &format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]",
            addr.port()
        ),
    );
    let host = HostProcess::multi(&config, &[]);
    let url = format!("http://127.0.0.1:{}/once", addr.port());
    // 50 calls: the race between "response arrived" and "connection ended"
    // went the wrong way for some of them before the fix.
    let (answer, _) = fetch(&host, "brief", &url, 50).await;
    let results = answer["results"].as_array().unwrap();
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {failed:?}",
        failed.len()
    );
    assert!(results.iter().all(|r| r["body"] == "closed"), "{answer}");
    assert_eq!(served.load(Ordering::SeqCst), 50);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_hits_the_timeout_and_does_not_hold_the_request() {
    let up = upstream().await;
    let config = tenant(
        "patient",
        &format!(
            "allowed_outbound_hosts = [\"http://127.0.0.1:{}\"]\nsubrequest_timeout_ms = 300",
            up.addr.port()
        ),
    );
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("patient", "", "alice").await;
    let url = format!("http://127.0.0.1:{}/slow", up.addr.port());
    let (answer, id) = fetch(&host, "patient", &url, 1).await;
    let error = answer["results"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("ConnectionReadTimeout"), "{answer}");
    assert!(
        !up.slow_answered.load(Ordering::SeqCst),
        "the guest's request ended while the upstream was still holding its answer"
    );
    let warned = warnings(&viewer.request_entries(&id).await);
    assert!(warned.iter().any(|w| w.contains("timed out")), "{warned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_limits_override_the_hosts_and_show_on_its_page() {
    let misbehave = guest("misbehave");
    let limited = |slug: &str, extra: &str| {
        format!(
            "{}{extra}\n",
            tenant_toml(slug, "alice", "active", &[("1.0.0", &misbehave)])
        )
    };
    // The host allows 10 s and 128 MiB; these tenants far less.
    let config = [
        "[host]\ncpu_limit_ms = 10000\nmemory_limit_mb = 128\n".to_string(),
        limited("tight-cpu", "cpu_limit_ms = 200"),
        limited("tight-memory", "memory_limit_mb = 8"),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    let reply = host.get("tight-cpu.localhost", "/spin").await;
    assert_eq!(reply.status, 503);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("CPU time limit (200 ms)"), "{error}");
    let reply = host.get("tight-memory.localhost", "/oom").await;
    assert_eq!(reply.status, 503);
    assert!(reply.text().contains("memory limit"), "{}", reply.text());

    let cookie = format!("session={}", support::token("alice"));
    let page = host
        .request(
            "GET",
            "localhost",
            "/dev/servers/tight-memory",
            &[("cookie", &cookie)],
        )
        .await
        .text();
    assert!(page.contains("8 MiB per request"), "{page}");
    assert!(
        page.contains("10000 ms per request"),
        "the host's CPU limit: {page}"
    );
    assert!(page.contains("none (no allowed_outbound_hosts)"), "{page}");
}
