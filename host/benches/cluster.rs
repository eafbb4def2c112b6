//! The cost of crossing hosts: two hosts share a real `nats-server`; the
//! same measurements are made with the viewer on the host that serves the
//! requests (same host) and on the other one (cross host).
//!
//! - **Latency**: request sent → the guest's line at the viewer (as in the
//!   `log_latency` bench), rounds interleaved between the two set-ups.
//! - **Throughput**: flood requests (5,000 lines each, 4 at a time) on
//!   host A; entries per second the viewer receives, and any it is told it
//!   missed.
//!
//! Run: `cargo bench -p mctx-host --bench cluster` (needs Debian's
//! nats-server; tests/setup.sh installs it). Writes docs/cluster-benchmark.md.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::{HostProcess, NatsServer, Viewer, guest, watched_elsewhere};

const LATENCY_ROUNDS: usize = 500;
const FLOOD_REQUESTS: usize = 200;
const FLOOD_LINES: usize = 5_000;
const FLOOD_CONCURRENCY: usize = 4;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn config(nats: &NatsServer) -> String {
    let misbehave = guest("misbehave");
    format!(
        "[cluster]\nnats_url = \"{}\"\n{}",
        nats.url(),
        support::tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)])
    )
}

async fn run() {
    let nats = NatsServer::start();
    let a = HostProcess::multi(&config(&nats), &["--node", "a"]);
    let b = HostProcess::multi(&config(&nats), &["--node", "b"]);
    let mut same = a.viewer("bad", "type=log", "alice").await;
    let mut cross = b.viewer("bad", "type=log", "alice").await;
    a.wait_for_cluster(|s| watched_elsewhere(s, "bad")).await;

    // Latency: both viewers watch; each round times one of them.
    let mut same_ms = Vec::new();
    let mut cross_ms = Vec::new();
    for round in 0..LATENCY_ROUNDS * 2 {
        let started = Instant::now();
        let request = a.spawn_get("bad.localhost", "/slow?ms=5");
        let (timed, other) = if round % 2 == 0 {
            (&mut same, &mut cross)
        } else {
            (&mut cross, &mut same)
        };
        let frame = timed.frame().await;
        let elapsed = started.elapsed();
        assert_eq!(frame["entries"][0]["message"], "[INFO] sleeping 5 ms");
        other.frame().await;
        assert_eq!(request.await.unwrap().status, 200);
        if round % 2 == 0 {
            same_ms.push(ms(elapsed));
        } else {
            cross_ms.push(ms(elapsed));
        }
    }
    drop((same, cross));

    // Throughput: one set-up at a time, each with only its viewer.
    let mut viewer = a.viewer("bad", "", "alice").await;
    let same_flood = flood(&a, &mut viewer).await;
    viewer.close().await;
    drop(viewer);
    let mut viewer = b.viewer("bad", "", "alice").await;
    a.wait_for_cluster(|s| watched_elsewhere(s, "bad")).await;
    let cross_flood = flood(&a, &mut viewer).await;
    let (sender, receiver) = (a.cluster_status().await, b.cluster_status().await);
    let link = format!(
        "NATS link over the whole run: host A sent {} entries and could not send {}; \
         host B received {} and found {} missing (gaps in A's `seq`).",
        sender["sentEntries"],
        sender["unsentEntries"],
        receiver["receivedEntries"],
        receiver["missedEntries"]
    );

    let mut report = report(&mut same_ms, &mut cross_ms, &same_flood, &cross_flood);
    report.push_str(&format!("\n{link}\n"));
    print!("{report}");
    let path = support::repo_root().join("docs/cluster-benchmark.md");
    std::fs::write(&path, report).expect("writing docs/cluster-benchmark.md");
    println!("wrote {}", path.display());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Flood {
    entries: u64,
    missed: u64,
    seconds: f64,
}

/// Sends the flood requests to `host` and counts what `viewer` receives
/// (lines and request events) until every entry is in or reported missed.
async fn flood(host: &HostProcess, viewer: &mut Viewer) -> Flood {
    let started = Instant::now();
    let sender = {
        let (addr, port) = (host.addr, host.addr.port());
        tokio::spawn(async move {
            let path = format!("/flood?lines={FLOOD_LINES}");
            for _ in 0..FLOOD_REQUESTS / FLOOD_CONCURRENCY {
                let batch: Vec<_> = (0..FLOOD_CONCURRENCY)
                    .map(|_| {
                        let host = format!("bad.localhost:{port}");
                        let path = path.clone();
                        tokio::spawn(async move {
                            support::send(addr, "GET", &host, &path, &[], Default::default()).await
                        })
                    })
                    .collect();
                for request in batch {
                    assert_eq!(request.await.unwrap().status, 200);
                }
            }
        })
    };
    // Every line and every request's closing event, received or reported
    // missed: the hub accounts for each one.
    let expected = (FLOOD_REQUESTS * (FLOOD_LINES + 1)) as u64;
    let (mut entries, mut missed) = (0u64, 0u64);
    while entries + missed < expected {
        // Counted without parsing the entries: a viewer that parsed every
        // one would measure itself (and fall behind).
        let text = viewer.text_frame().await.expect("the stream stays open");
        if text.starts_with(r#"{"type":"logs""#) {
            entries += text.matches(r#""seq":"#).count() as u64;
        } else {
            let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
            if frame["type"] == "dropped" {
                missed += frame["count"].as_u64().unwrap();
            }
        }
    }
    assert_eq!(entries + missed, expected);
    let seconds = started.elapsed().as_secs_f64();
    sender.await.unwrap();
    Flood {
        entries,
        missed,
        seconds,
    }
}

fn report(same: &mut [f64], cross: &mut [f64], same_flood: &Flood, cross_flood: &Flood) -> String {
    let quantile = |v: &mut [f64], q: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    };
    let (s50, s99) = (quantile(same, 0.5), quantile(same, 0.99));
    let (c50, c99) = (quantile(cross, 0.5), quantile(cross, 0.99));
    let rate = |f: &Flood| f.entries as f64 / f.seconds;
    let mut out = String::new();
    let _ = writeln!(out, "# Two hosts on NATS: what crossing hosts costs\n");
    let _ = writeln!(
        out,
        "Written by `cargo bench -p mctx-host --bench cluster` (release build; one \
         nats-server {} with JetStream and two mctx-host processes on this 2-core machine, \
         all on loopback). Host A serves every request; a viewer on A (same host) and one \
         on B (cross host) watch the slug.\n",
        nats_version()
    );
    let _ = writeln!(
        out,
        "| | same host | cross host | added by crossing |\n|---|---:|---:|---:|"
    );
    let _ = writeln!(
        out,
        "| request sent → line at viewer, p50 ({LATENCY_ROUNDS} rounds each, interleaved) | {s50:.3} ms | {c50:.3} ms | {:+.3} ms |",
        c50 - s50
    );
    let _ = writeln!(
        out,
        "| same, p99 | {s99:.3} ms | {c99:.3} ms | {:+.3} ms |",
        c99 - s99
    );
    let _ = writeln!(
        out,
        "| entries/s delivered ({FLOOD_REQUESTS} requests × {FLOOD_LINES} lines, {FLOOD_CONCURRENCY} at a time) | {:.0} | {:.0} | {:.0} % |",
        rate(same_flood),
        rate(cross_flood),
        (rate(cross_flood) / rate(same_flood) - 1.0) * 100.0
    );
    let _ = writeln!(
        out,
        "| entries received / reported missed (of {}) | {} / {} | {} / {} | |",
        FLOOD_REQUESTS * (FLOOD_LINES + 1),
        same_flood.entries,
        same_flood.missed,
        cross_flood.entries,
        cross_flood.missed
    );
    let _ = writeln!(
        out,
        "\nThe flood's rate is bounded by the guests producing the lines (every request \
         is a fresh instance writing 5,000 lines) as much as by delivery; the \
         cross-host column adds JSON encoding on A, NATS, and decoding, filtering and \
         re-encoding on B. Entries are missed in two places, and every one is \
         reported (`dropped` frames), so received + missed is always every entry: \
         the viewer, a client on the same 2 cores as both hosts and the NATS \
         server, falls more than its queue (25,600 entries) behind; and, cross \
         host, host A produces faster than it can publish and its outbound queue \
         (100,000 entries) overflows: the entries it could not send are gaps in its \
         `seq` that host B counts (the line below)."
    );
    out
}

fn nats_version() -> String {
    std::process::Command::new(
        ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server"),
    )
    .arg("--version")
    .output()
    .map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .replace("nats-server: ", "")
    })
    .unwrap_or_default()
}
