//! Load: 1,000 viewers over 100 slugs while 50 tenants log steadily. Every
//! viewer of a busy slug receives every entry of its slug in order, or a
//! `dropped` count that accounts for each missing `seq`; viewers of idle
//! slugs receive nothing; host memory stays bounded.

use crate::support;

use crate::support::{HostProcess, Viewer, guest, tenant_toml};

const SLUGS: usize = 100;
const VIEWERS_PER_SLUG: usize = 10;
const BUSY: usize = 50;
const REQUESTS_PER_BUSY_SLUG: u64 = 20;
/// hello writes six lines per request, plus the request event.
const ENTRIES_PER_REQUEST: u64 = 7;

/// Reads until every one of `total` entries is received or accounted for
/// by `dropped` frames; returns (received, dropped).
async fn account(mut viewer: Viewer, slug: String, total: u64) -> (u64, u64) {
    let (mut next, mut announced, mut received, mut dropped) = (1u64, 0u64, 0u64, 0u64);
    while next + announced <= total {
        let frame = viewer.frame().await;
        match frame["type"].as_str() {
            Some("dropped") => {
                let count = frame["count"].as_u64().unwrap();
                announced += count;
                dropped += count;
            }
            Some("logs") => {
                for entry in frame["entries"].as_array().unwrap() {
                    assert_eq!(entry["slug"], slug.as_str(), "entries never cross slugs");
                    let seq = entry["seq"].as_u64().unwrap();
                    assert_eq!(
                        seq,
                        next + announced,
                        "{slug}: a gap no dropped frame accounts for"
                    );
                    (next, announced) = (seq + 1, 0);
                    received += 1;
                }
            }
            other => panic!("{slug}: unexpected frame {other:?}"),
        }
    }
    (received, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_viewers_over_a_hundred_slugs_miss_nothing_silently() {
    let hello = guest("hello");
    let config: String = (0..SLUGS)
        .map(|i| {
            tenant_toml(
                &format!("t{i}"),
                &format!("owner{}", i % 10),
                "active",
                &[("1.0.0", &hello)],
            )
        })
        .collect();
    let host = HostProcess::multi(&config, &[]);

    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for i in 0..SLUGS {
        for _ in 0..VIEWERS_PER_SLUG {
            let viewer = host
                .viewer(&format!("t{i}"), "", &format!("owner{}", i % 10))
                .await;
            if i < BUSY {
                let total = REQUESTS_PER_BUSY_SLUG * ENTRIES_PER_REQUEST;
                busy.push(tokio::spawn(account(viewer, format!("t{i}"), total)));
            } else {
                idle.push(viewer);
            }
        }
    }
    assert_eq!(
        host.get("localhost", "/healthz").await.json()["logHubs"],
        SLUGS
    );

    // 50 tenants log steadily: 8 clients take turns over the busy slugs.
    let mut clients = Vec::new();
    for client in 0..8 {
        let addr = host.addr;
        clients.push(tokio::spawn(async move {
            let mut sent = 0;
            for n in (client..BUSY * REQUESTS_PER_BUSY_SLUG as usize).step_by(8) {
                let host_header = format!("t{}.localhost:{}", n % BUSY, addr.port());
                let reply =
                    support::send(addr, "GET", &host_header, "/load", &[], Default::default())
                        .await;
                assert_eq!(reply.status, 200);
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for client in clients {
        sent += client.await.unwrap();
    }
    assert_eq!(sent, BUSY * REQUESTS_PER_BUSY_SLUG as usize);

    let (mut received, mut dropped) = (0, 0);
    for viewer in busy {
        let (r, d) = viewer.await.unwrap();
        received += r;
        dropped += d;
    }
    let expected = (BUSY * VIEWERS_PER_SLUG) as u64 * REQUESTS_PER_BUSY_SLUG * ENTRIES_PER_REQUEST;
    assert_eq!(
        received + dropped,
        expected,
        "every entry delivered or accounted for"
    );

    // Idle slugs' viewers got nothing at all (checked without waiting: a
    // frame would already be queued on the socket after everything above).
    for viewer in &mut idle {
        assert!(
            viewer.try_frame().is_none(),
            "an idle slug's viewer received a frame"
        );
    }

    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    eprintln!(
        "host RSS with 1,000 viewers after the load: {rss_kib} KiB; delivered {received}, dropped {dropped}"
    );
    assert!(
        rss_kib < 512 * 1024,
        "host memory stays bounded: {rss_kib} KiB"
    );
}
