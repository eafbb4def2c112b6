//! Log latency, end to end: a viewer is connected to a tenant; a request
//! makes the guest write one line and then sleep; we time from sending the
//! request to the viewer receiving that line. The figure includes the HTTP
//! request, a fresh instance, the guest's write, the hub and the WebSocket,
//! so it is an upper bound on the capture-to-viewer latency.
//!
//! Run: `cargo bench -p mctx-host --bench log_latency`

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{HostProcess, guest};

const ROUNDS: usize = 1000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let misbehave = guest("misbehave");
    let config = support::tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]);
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("bad", "type=log", "alice").await;
    let mut latencies = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let request = host.spawn_get("bad.localhost", "/slow?ms=5");
        let frame = viewer.frame().await;
        latencies.push(started.elapsed());
        assert_eq!(frame["entries"][0]["message"], "[INFO] sleeping 5 ms");
        assert_eq!(request.await.unwrap().status, 200);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "request sent -> log line at viewer, {ROUNDS} rounds: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap())
    );
}
