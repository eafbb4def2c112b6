//! The operator's metrics, read the way an operator reads them: Debian's
//! real Prometheus scrapes the real host, and the answers come from
//! Prometheus's HTTP query API.
//!
//! Needs `apt-get install prometheus` (`tests/setup.sh` does it).

use crate::support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{HostProcess, guest, send, tenant_toml};
use bytes::Bytes;
use serde_json::Value;

/// A Prometheus server scraping one target every second, on free ports,
/// killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str) -> Prometheus {
        let binary = std::env::var("PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        assert!(
            std::path::Path::new(&binary).exists(),
            "no Prometheus at {binary}: run `apt-get install prometheus` (or set PROMETHEUS)"
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: mctx\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = support::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The result vector of an instant query (empty while Prometheus is
    /// starting).
    async fn query(&self, promql: &str) -> Vec<Value> {
        let query: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let Ok(stream) = tokio::net::TcpStream::connect(self.addr).await else {
            return Vec::new();
        };
        drop(stream);
        let reply = send(
            self.addr,
            "GET",
            "localhost",
            &format!("/api/v1/query?query={query}"),
            &[],
            Bytes::new(),
        )
        .await;
        if reply.status != 200 {
            return Vec::new();
        }
        reply.json()["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `promql` until `done` holds for its result (a scrape comes
    /// every second), up to the harness's patience.
    async fn until(&self, promql: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        support::eventually(Duration::from_millis(200), async || {
            let result = self.query(promql).await;
            if done(&result) {
                Ok(result)
            } else {
                Err(format!(
                    "Prometheus never answered {promql} as expected; last: {result:?}"
                ))
            }
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{slug: value}` of a `sum by (slug)` result.
fn by_slug(result: &[Value]) -> Vec<(String, f64)> {
    let mut pairs: Vec<(String, f64)> = result
        .iter()
        .map(|sample| {
            let slug = sample["metric"]["slug"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let value = sample["value"][1].as_str().unwrap().parse().unwrap();
            (slug, value)
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_host_did() {
    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    let config = [
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]),
    ]
    .concat();
    let metrics_port = support::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let host = HostProcess::multi(&config, &["--metrics-addr", &metrics_addr]);
    let prometheus = Prometheus::scraping(&metrics_addr);

    // The metrics listener is its own: the tenant-facing port has none.
    let front = host.get("localhost", "/metrics").await;
    assert_eq!(front.status, 404, "{}", front.text());
    let _viewer = host.viewer("hello", "", "alice").await;

    for _ in 0..30 {
        assert_eq!(host.get("hello.localhost", "/").await.status, 200);
    }
    for _ in 0..4 {
        assert_eq!(host.get("bad.localhost", "/trap").await.status, 500);
    }
    // Unknown tenants never become a label.
    for i in 0..5 {
        assert_eq!(
            host.get(&format!("made-up-{i}.localhost"), "/")
                .await
                .status,
            404
        );
    }

    let requests = prometheus
        .until("sum by (slug) (mctx_requests_total)", |r| {
            by_slug(r) == [("bad".to_string(), 4.0), ("hello".to_string(), 30.0)]
        })
        .await;
    assert_eq!(
        by_slug(&requests).len(),
        2,
        "only configured tenants: {requests:?}"
    );
    prometheus
        .until(
            r#"sum(mctx_requests_total{slug="bad",outcome="exception",status="5xx"})"#,
            |r| r.first().is_some_and(|s| s["value"][1] == "4"),
        )
        .await;
    prometheus
        .until(
            r#"sum(mctx_request_duration_seconds_count{slug="hello"})"#,
            |r| r.first().is_some_and(|s| s["value"][1] == "30"),
        )
        .await;
    // The viewer saw hello's entries: 7 a request (6 lines and the event).
    prometheus
        .until(r#"sum(mctx_log_entries_total{slug="hello"})"#, |r| {
            r.first().is_some_and(|s| s["value"][1] == "210")
        })
        .await;
    prometheus
        .until(r#"mctx_viewers{slug="hello"}"#, |r| {
            r.first().is_some_and(|s| s["value"][1] == "1")
        })
        .await;
    // What finished instances left resident in the pool (their tables,
    // rewritten in place): more than nothing once instances have ended.
    prometheus
        .until("mctx_pool_idle_resident_bytes", |r| {
            r.first().is_some_and(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|bytes| bytes > 0.0)
            })
        })
        .await;
    let up = prometheus
        .until("up{job=\"mctx\"}", |r| !r.is_empty())
        .await;
    assert_eq!(up[0]["value"][1], "1", "the scrape itself succeeds: {up:?}");
}
