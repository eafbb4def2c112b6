//! The front door under attack, against the real binary on loopback:
//! a slowloris from several client addresses (127.0.0.2-5; the well-formed
//! client is 127.0.0.1), a tenant flooded with slow requests, oversize
//! headers and bodies, a guest that outlives its wall-clock limit.
//! Every wait is bounded by the harness's patience; nothing here measures
//! time: the assertions are relations (this answered while that was held).

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::{HostProcess, PATIENCE, guest, rss_kib, send, tenant_toml};
use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from `source` (a loopback address) that sends half a
/// request head and then nothing.
async fn half_open(source: [u8; 4], host: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("binding a loopback source address");
    let mut stream = socket.connect(host).await.expect("connecting");
    let _ = stream
        .write_all(b"GET / HTTP/1.1\r\nHost: hello.localhost\r\nX-Slow: ")
        .await;
    stream
}

/// Reads until the host closes the connection; what it sent meanwhile.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the host kept the connection open");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_many_addresses_cannot_keep_out_a_well_formed_request() {
    let hello = guest("hello");
    let config = format!(
        "[host]\nmax_connections = 50\nmax_connections_per_ip = 20\nheader_read_timeout_secs = 2\n{}",
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)])
    );
    let host = HostProcess::multi(&config, &[]);
    // 4 addresses × 20 half-open connections: more than the host's 50.
    let mut attackers = Vec::new();
    for last in 2..=5u8 {
        for _ in 0..20 {
            attackers.push(half_open([127, 0, 0, last], host.addr).await);
        }
    }
    // One more from an address at its share is refused at once, with why.
    let mut refused = half_open([127, 0, 0, 5], host.addr).await;
    let said = until_closed(&mut refused).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    assert!(said.contains("max_connections_per_ip"), "{said}");

    // A well-formed request gets through while the flood is held.
    let reply = host.get("hello.localhost", "/quiet").await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Half-open connections are closed after the header-read timeout,
    // without a response to a request they never finished.
    let mut first = attackers.remove(0);
    let mut last = attackers.pop().unwrap();
    for stream in [&mut first, &mut last] {
        let said = until_closed(stream).await;
        assert!(!said.contains(" 200 "), "{said}");
    }
    drop(attackers);
    let health = host.get("localhost", "/healthz").await.json();
    let refused = &health["refused"];
    assert!(
        refused["connectionsFromOneAddress"].as_u64() >= Some(1),
        "{health}"
    );
    assert!(
        refused["idleConnectionsEvicted"].as_u64() >= Some(30),
        "{health}"
    );
    assert!(refused["headerTimeout"].as_u64() >= Some(1), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_flooded_past_its_share_does_not_hold_up_another() {
    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    let config = [
        "[host]\nmax_concurrent_requests = 20\n".to_string(),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        format!(
            "{}max_concurrent = 4\nmax_queued = 4\n",
            tenant_toml("slow", "bob", "active", &[("1.0.0", &misbehave)])
        ),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    // 40 requests that each wait 3 s: 4 run, 4 wait, 32 are turned away.
    let finished = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let reply = host.spawn_get("slow.localhost", "/slow?ms=3000");
            let finished = finished.clone();
            tokio::spawn(async move {
                let reply = reply.await.unwrap();
                if reply.status == 200 {
                    finished.fetch_add(1, Ordering::SeqCst);
                }
                reply
            })
        })
        .collect();
    let mut turned_away = 0;
    let mut replies = Vec::new();
    for reply in flood {
        replies.push(reply);
    }
    // The neighbour answers while every admitted slow request is still
    // running (none has finished yet).
    let neighbour = host.get("hello.localhost", "/quiet").await;
    assert_eq!(neighbour.status, 200);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the neighbour answered before any of the flood's slow requests"
    );
    let mut ok = 0;
    for reply in replies {
        let reply = reply.await.unwrap();
        match reply.status {
            200 => ok += 1,
            503 => {
                assert!(
                    reply.text().contains("running its 4 requests at once"),
                    "{}",
                    reply.text()
                );
                assert_eq!(reply.header("retry-after"), Some("1"));
                turned_away += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        (ok, turned_away),
        (8, 32),
        "4 ran, 4 waited, the rest turned away"
    );
    let health = host.get("localhost", "/healthz").await.json();
    assert_eq!(health["refused"]["tenantAtConcurrencyLimit"], 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_and_bodies_and_slow_guests_get_their_status() {
    let (everything, misbehave) = (guest("mcp_everything"), guest("misbehave"));
    let config = [
        "[host]\nmax_header_bytes = 8192\n".to_string(),
        format!(
            "{}max_request_body_bytes = 1000\n",
            tenant_toml("mcp", "alice", "active", &[("1.0.0", &everything)])
        ),
        format!(
            "{}request_timeout_ms = 300\n",
            tenant_toml("slow", "alice", "active", &[("1.0.0", &misbehave)])
        ),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);

    // A head over max_header_bytes: 431.
    let big = "x".repeat(16 * 1024);
    let reply = host
        .request("GET", "slow.localhost", "/ok", &[("x-big", &big)])
        .await;
    assert_eq!(reply.status, 431);

    // A declared body over the tenant's limit: 413 before the guest runs.
    let mcp_host = format!("mcp.localhost:{}", host.addr.port());
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let reply = send(
        host.addr,
        "POST",
        &mcp_host,
        "/mcp",
        &headers,
        Bytes::from(vec![b' '; 2000]),
    )
    .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.text().contains("1000 bytes"), "{}", reply.text());

    // An undeclared (chunked) body over the limit: 413 once the guest reads
    // past it.
    let mut stream = TcpStream::connect(host.addr).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1500, " ".repeat(1500));
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {mcp_host}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n{chunk}0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let said = until_closed(&mut stream).await;
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");

    // A guest past its wall-clock limit: stopped, 504, and its owner is told.
    let mut viewer = host.viewer("slow", "", "alice").await;
    let reply = host.get("slow.localhost", "/slow?ms=60000").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    let id = reply.header("x-request-id").unwrap().to_string();
    let entries = viewer.request_entries(&id).await;
    let event: &Value = entries.last().unwrap();
    assert_eq!(event["outcome"], "exceededWallTime");
    assert!(
        entries.iter().any(|e| e["message"]
            .as_str()
            .unwrap()
            .contains("wall-clock limit of 300 ms")),
        "{entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_taken_by_a_burst_is_given_back() {
    let misbehave = guest("misbehave");
    let config = format!(
        "[host]\nmax_connections_per_ip = 2000\n{}",
        tenant_toml("slow", "alice", "active", &[("1.0.0", &misbehave)])
    );
    let host = HostProcess::multi(&config, &[]);
    assert_eq!(host.get("slow.localhost", "/ok").await.status, 200);
    let idle = rss_kib(host.pid());
    // 600 requests in flight at once, each waiting 1.5 s in its instance.
    let burst: Vec<_> = (0..600)
        .map(|_| host.spawn_get("slow.localhost", "/slow?ms=1500"))
        .collect();
    let mut peak = idle;
    let all_done = futures_util::future::join_all(burst);
    tokio::pin!(all_done);
    let replies = loop {
        tokio::select! {
            replies = &mut all_done => break replies,
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {
                peak = peak.max(rss_kib(host.pid()));
            }
        }
    };
    assert!(replies.into_iter().all(|r| r.unwrap().status == 200));
    assert!(peak > idle, "the burst took memory ({idle} → {peak} KiB)");
    // At least half of what the burst took is given back (without the
    // host trimming its heap, about a quarter was).
    support::eventually(std::time::Duration::from_millis(200), async || {
        let now = rss_kib(host.pid());
        if now <= idle + (peak - idle) / 2 {
            Ok(())
        } else {
            Err(format!(
                "still {now} KiB resident: idle {idle}, peak {peak}"
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_the_operator_still_reaches_the_host() {
    let misbehave = guest("misbehave");
    let config = format!(
        "[host]\nmax_connections = 4\n{}",
        tenant_toml("slow", "alice", "active", &[("1.0.0", &misbehave)])
    );
    // Guest output on the host's stdout: a signal that needs no connection.
    let host = HostProcess::multi(&config, &["--guest-logs", "json"]);
    // Four requests hold all four connections, busy.
    let busy: Vec<_> = (0..4)
        .map(|_| host.spawn_get("slow.localhost", "/slow?ms=3000"))
        .collect();
    for _ in 0..4 {
        host.wait_for_line(|line| line.contains("[INFO] sleeping"));
    }
    let health = host.get("localhost", "/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let tenant = host.get("slow.localhost", "/ok").await;
    assert_eq!(tenant.status, 503);
    assert!(
        tenant.text().contains("host's own endpoints"),
        "{}",
        tenant.text()
    );
    for reply in busy {
        assert_eq!(
            reply.await.unwrap().status,
            200,
            "the busy ones were never evicted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_component_mode_takes_the_limits_as_flags() {
    let host = HostProcess::single(
        &guest("misbehave"),
        &["--request-timeout-ms", "300", "--guest-logs", "off"],
    );
    let reply = host.get("localhost", "/slow?ms=60000").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("(300 ms)"), "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_closed_and_counted() {
    let everything = guest("mcp_everything");
    let config = [
        "[host]\nbody_read_timeout_secs = 1\n".to_string(),
        tenant_toml("mcp", "alice", "active", &[("1.0.0", &everything)]),
    ]
    .concat();
    let host = HostProcess::multi(&config, &[]);
    let bearer = format!("authorization: Bearer {}\r\n", support::token("alice"));
    // Each declares 1000 bytes and sends 10: the dashboard's sign-in form,
    // the deploy API, a tenant.
    let heads = [
        "POST /login HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/x-www-form-urlencoded\r\n"
            .to_string(),
        format!("POST /api/servers HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\n{bearer}"),
        "POST /mcp HTTP/1.1\r\nHost: mcp.localhost\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n".to_string(),
    ];
    let per_kind = 10;
    let mut stalled = Vec::new();
    for head in &heads {
        for _ in 0..per_kind {
            let mut stream = TcpStream::connect(host.addr).await.unwrap();
            let request = format!("{head}content-length: 1000\r\n\r\n{{\"token\":");
            stream.write_all(request.as_bytes()).await.unwrap();
            stalled.push(stream);
        }
    }
    // While they stall, a well-formed request is served.
    let served = host.get("mcp.localhost", "/").await.status;
    assert!(served < 500, "{served}");
    for (i, stream) in stalled.iter_mut().enumerate() {
        let answer = until_closed(stream).await;
        let kind = &heads[i / per_kind];
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 408")
                || answer.starts_with("HTTP/1.1 500"),
            "{kind}: {answer}"
        );
    }
    let health = host.get("localhost", "/healthz").await.json();
    assert_eq!(
        health["refused"]["bodyStalled"],
        heads.len() * per_kind,
        "{health}"
    );
}
