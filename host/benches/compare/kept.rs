//! Section 9: what keeping a tenant's logs (SQLite, `[tenants.logs]
//! retain`) and exporting them (OTLP/HTTP to a sink that takes everything)
//! cost against neither, on a path that logs 10 lines a request, at full
//! load: the bound is "≤ 5 % at 10,000 lines/s", and full load is
//! many more lines a second than that.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{CONNECTIONS, HEADER, ROUNDS, Series, wrk};
use crate::support::{self, HostProcess, guest, tenant_toml};

/// An OTLP/HTTP endpoint that reads each POST whole and answers 200: the
/// fastest destination there can be, so the rows measure the host.
struct Sink {
    addr: std::net::SocketAddr,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(AtomicU64::new(0));
        let counted = bytes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let counted = counted.clone();
                            async move {
                                let body =
                                    request.into_body().collect().await.map(|b| b.to_bytes());
                                counted.fetch_add(
                                    body.map_or(0, |b| b.len() as u64),
                                    Ordering::Relaxed,
                                );
                                Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<
                                    bytes::Bytes,
                                >::new(
                                )))
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { addr, bytes }
    }
}

/// A `/metrics` counter of `host`'s.
async fn counter(metrics: &str, series: &str) -> u64 {
    support::metric_sum(&support::scrape(metrics).await, series)
}

pub(super) async fn section() -> String {
    let misbehave = guest("misbehave");
    let tenant = tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]);
    let sink = Sink::start().await;
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let quiet = ["--guest-logs", "off"];
    let off = HostProcess::multi(&tenant, &quiet);
    let kept = HostProcess::multi(
        &format!("{tenant}[tenants.logs]\nretain = \"1h\"\n"),
        &quiet,
    );
    let exported = HostProcess::multi(
        &format!(
            "{tenant}[[tenants.logs.export]]\notlp = \"http://{}/v1/logs\"\n",
            sink.addr
        ),
        &["--guest-logs", "off", "--metrics-addr", &metrics],
    );
    let path = "/flood?lines=10";
    let mut rows = [
        (
            &off,
            Series {
                name: "neither (the default)".into(),
                runs: vec![],
            },
        ),
        (
            &kept,
            Series {
                name: "kept: `retain = \"1h\"`, 64 MiB quota (SQLite)".into(),
                runs: vec![],
            },
        ),
        (
            &exported,
            Series {
                name: "exported: OTLP/HTTP to a local sink".into(),
                runs: vec![],
            },
        ),
    ];
    for _ in 0..ROUNDS {
        for (host, series) in &mut rows {
            series.runs.push(wrk(
                host.addr,
                "bad.localhost",
                path,
                CONNECTIONS,
                host.pid(),
            ));
        }
    }
    let base = rows[0].1.median(|r| r.rps);
    let base_cpu = rows[0].1.median(|r| r.cpu_us);
    let mut section = format!(
        "\n### 9. Kept and exported logs (misbehave.wasm `{path}`: 10 lines and a request event a request, {CONNECTIONS} connections)\n\n{HEADER}\n"
    );
    for (_, series) in &rows {
        let _ = writeln!(section, "{}", series.row());
    }
    for (_, series) in &rows[1..] {
        let _ = writeln!(
            section,
            "| **{} costs** | **{:.1} %** | | | | **{:+.1} %** |",
            series.name.split(':').next().unwrap_or(""),
            (1.0 - series.median(|r| r.rps) / base) * 100.0,
            (series.median(|r| r.cpu_us) / base_cpu - 1.0) * 100.0
        );
    }
    let total = counter(&metrics, "mctx_log_export_entries_total{destination=").await;
    let dropped_series = format!(
        "mctx_log_export_entries_total{{destination=\"http://{}/v1/logs\",result=\"dropped\"}}",
        sink.addr
    );
    let dropped = counter(&metrics, &dropped_series).await;
    let _ = writeln!(
        section,
        "\nAt {:.0} lines/s (11 entries a request) the exporter handed the sink {} entries of {} \
         ({} dropped while its queue was full), {:.1} MB of gzipped protobuf; the store kept the newest \
         64 MiB and dropped the rest, oldest first, as its quota says.",
        rows[2].1.median(|r| r.rps) * 11.0,
        total.saturating_sub(dropped),
        total,
        dropped,
        sink.bytes.load(Ordering::Relaxed) as f64 / 1e6
    );
    section.push_str(&at_ten_thousand_lines(&misbehave).await);
    println!("{section}");
    section
}

/// The target's own terms: a tenant logging 10,000 lines a second (kept,
/// exported, or neither) beside another tenant under full load, whose
/// requests/s is what the cost is measured in.
async fn at_ten_thousand_lines(misbehave: &std::path::Path) -> String {
    let hello = guest("hello");
    let tenants = [
        tenant_toml("bad", "alice", "active", &[("1.0.0", misbehave)]),
        "{logs}".to_string(),
        tenant_toml("hello", "bob", "active", &[("1.0.0", &hello)]),
    ]
    .concat();
    let sink = Sink::start().await;
    let quiet = ["--guest-logs", "off"];
    let with = |logs: &str| tenants.replace("{logs}", logs);
    let hosts = [
        ("neither", HostProcess::multi(&with(""), &quiet)),
        (
            "kept",
            HostProcess::multi(&with("[tenants.logs]\nretain = \"1h\"\n"), &quiet),
        ),
        (
            "exported",
            HostProcess::multi(
                &with(&format!(
                    "[[tenants.logs.export]]\notlp = \"http://{}/v1/logs\"\n",
                    sink.addr
                )),
                &quiet,
            ),
        ),
    ];
    let mut rows: Vec<Series> = hosts
        .iter()
        .map(|(name, _)| Series {
            name: format!("hello `/quiet` beside 10,000 lines/s, {name}"),
            runs: vec![],
        })
        .collect();
    for _ in 0..ROUNDS {
        for ((_, host), series) in hosts.iter().zip(&mut rows) {
            let logging = ten_thousand_lines(host.addr);
            let addr = host.addr;
            let pid = host.pid();
            let load = tokio::task::spawn_blocking(move || {
                wrk(addr, "hello.localhost", "/quiet", CONNECTIONS, pid)
            })
            .await
            .unwrap();
            logging.abort();
            series.runs.push(load);
        }
    }
    let base = rows[0].median(|r| r.rps);
    let mut section = format!(
        "\nThe target's terms: `bad` logs 10,000 lines a second (910 requests of 11 entries) while `hello` takes full load on a path that logs nothing; what keeping or exporting `bad`'s entries costs `hello`:\n\n{HEADER}\n"
    );
    for series in &rows {
        let _ = writeln!(section, "{}", series.row());
    }
    for series in &rows[1..] {
        let _ = writeln!(
            section,
            "| **{} costs** | **{:.1} %** | | | | |",
            series.name.rsplit(", ").next().unwrap_or(""),
            (1.0 - series.median(|r| r.rps) / base) * 100.0
        );
    }
    section
}

/// `/flood?lines=10` on `bad` 910 times a second (10,010 entries/s), each
/// on a connection of its own, until aborted.
fn ten_thousand_lines(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_micros(1_000_000 / 910));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let host = format!("bad.localhost:{}", addr.port());
        loop {
            every.tick().await;
            let host = host.clone();
            tokio::spawn(async move {
                support::send(
                    addr,
                    "GET",
                    &host,
                    "/flood?lines=10",
                    &[],
                    Default::default(),
                )
                .await;
            });
        }
    })
}
