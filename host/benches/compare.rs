//! The benchmark: mctx-host side by side with `wasmtime serve`, and the
//! costs of its own features, on this machine, in one run.
//!
//! Run: `cargo bench -p mctx-host --bench compare` (needs `wrk` from Debian,
//! the cached wasmtime-cli and npm's `workerd` in `tests/workerd`, all
//! installed by `.ci/run`). It starts every
//! server itself, prints a table and writes `docs/benchmarks.md` and
//! `docs/benchmarks.svg`. `MCTX_BENCH_SECS` sets each load run's length
//! (default 5). `MCTX_BENCH_ONLY=kept` runs section 9 (kept and exported
//! logs) alone and writes nothing.
//!
//! Every comparison is a ratio of medians from interleaved runs (A, B, A,
//! B, … `ROUNDS` times) in this one invocation, because the machine is
//! shared and noisy; the spread (min–max) is printed beside each median.

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "compare/kept.rs"]
mod kept;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{
    HostProcess, Viewer, WasmtimeServe, Workerd, guest, js_guest, repo_root, rss_kib, tenant_toml,
};

const ROUNDS: usize = 3;

/// The head of every load table.
const HEADER: &str = "| configuration | req/s (median) | req/s (min–max) | p50 ms | p99 ms | server CPU µs/request |\n|---|---|---|---|---|---|";
const CONNECTIONS: usize = 16;

fn seconds() -> u64 {
    std::env::var("MCTX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// One load run's result.
#[derive(Clone, Copy, Debug)]
struct Load {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time the server process spent per request (user + system), µs.
    cpu_us: f64,
}

/// A process's CPU time so far (user + system), in µs.
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces, in parens).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
    let hz = command_output("getconf", &["CLK_TCK"])
        .parse::<f64>()
        .unwrap_or(100.0);
    ticks / hz * 1e6
}

/// `wrk` against `http://addr/path` with `Host: host`; `pid` is the server
/// whose CPU time to charge.
fn wrk(addr: SocketAddr, host: &str, path: &str, connections: usize, pid: u32) -> Load {
    wrk_url(&format!("http://{addr}{path}"), host, connections, pid)
}

/// `wrk` against `url` (http or https; wrk keeps connections alive, so a
/// TLS handshake is paid once per connection, as by a real client).
fn wrk_url(url: &str, host: &str, connections: usize, pid: u32) -> Load {
    let cpu_before = cpu_us(pid);
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", seconds()),
            "--latency",
        ])
        .args(["-H", &format!("Host: {host}")])
        .arg(url)
        .output()
        .expect("running wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(|v| duration_ms(v.trim())))
            .unwrap_or(f64::NAN)
    };
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    assert!(errors.is_none(), "wrk saw errors: {}", errors.unwrap());
    let requests: f64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .map(|(n, _)| n.trim().parse().unwrap_or(f64::NAN))
        })
        .unwrap_or(f64::NAN);
    let cpu_us = (cpu_us(pid) - cpu_before) / requests;
    Load {
        rps,
        p50_ms: percentile("50%"),
        p99_ms: percentile("99%"),
        cpu_us,
    }
}

/// `1.52ms`, `830.00us`, `1.01s` → milliseconds.
fn duration_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        _ => f64::NAN,
    }
}

/// Medians and spreads of a series of runs.
struct Series {
    name: String,
    runs: Vec<Load>,
}

impl Series {
    fn median(&self, f: impl Fn(&Load) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    }

    fn spread(&self) -> (f64, f64) {
        let rps = self.runs.iter().map(|r| r.rps);
        (
            rps.clone().fold(f64::INFINITY, f64::min),
            rps.fold(0.0, f64::max),
        )
    }

    fn row(&self) -> String {
        let (lo, hi) = self.spread();
        format!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.2} | {:.2} | {:.0} |",
            self.name,
            self.median(|r| r.rps),
            lo,
            hi,
            self.median(|r| r.p50_ms),
            self.median(|r| r.p99_ms),
            self.median(|r| r.cpu_us)
        )
    }
}

/// Runs `a` and `b` interleaved `ROUNDS` times.
fn interleave(
    a: (&str, &mut dyn FnMut() -> Load),
    b: (&str, &mut dyn FnMut() -> Load),
) -> (Series, Series) {
    let (mut sa, mut sb) = (
        Series {
            name: a.0.into(),
            runs: vec![],
        },
        Series {
            name: b.0.into(),
            runs: vec![],
        },
    );
    let (run_a, run_b) = (a.1, b.1);
    for _ in 0..ROUNDS {
        sa.runs.push(run_a());
        sb.runs.push(run_b());
    }
    (sa, sb)
}

/// Viewers that read everything, counting entries, until dropped.
struct Watchers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    entries: Arc<AtomicU64>,
}

impl Watchers {
    async fn connect(host: &HostProcess, slug: &str, owner: &str, count: usize) -> Self {
        let entries = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..count {
            let mut viewer: Viewer = host.viewer(slug, "", owner).await;
            let entries = entries.clone();
            tasks.push(tokio::spawn(async move {
                // Counted without parsing: the viewers share the machine with
                // the host, and JSON parsing here would be charged to it.
                while let Some(frame) = viewer.text_frame().await {
                    entries.fetch_add(frame.matches("\"seq\":").count() as u64, Ordering::Relaxed);
                }
            }));
        }
        Watchers { tasks, entries }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn hosts_config(tenants: usize, component: &std::path::Path) -> String {
    (0..tenants)
        .map(|i| {
            tenant_toml(
                &format!("t{i}"),
                &format!("owner{}", i % 10),
                "active",
                &[("1.0.0", component)],
            )
        })
        .collect()
}

/// What `against_wasmtime` runs: a component, each host's flags, and how
/// the section and its rows are named.
struct Matchup<'a> {
    component: &'a std::path::Path,
    ours: &'a [&'a str],
    theirs: &'a [&'a str],
    title: &'a str,
    /// Appended to each host's name in the rows, for each host.
    labels: (&'a str, &'a str),
    paths: &'a [&'a str],
}

/// `mctx-host serve` and `wasmtime serve -Scli` on `matchup`'s component
/// and paths, interleaved: the section's table (also printed) and the
/// medians added to `chart`.
fn against_wasmtime(matchup: Matchup<'_>, chart: &mut Vec<(String, f64)>) -> String {
    let wasmtime = WasmtimeServe::start(matchup.component, matchup.theirs);
    let ours: Vec<&str> = ["--guest-logs", "off"]
        .iter()
        .chain(matchup.ours)
        .copied()
        .collect();
    let single = HostProcess::single(matchup.component, &ours);
    let name = matchup.component.file_name().unwrap().to_string_lossy();
    let mut section = format!(
        "{} ({name}, {CONNECTIONS} connections)\n\n{HEADER}\n",
        matchup.title
    );
    let (our_label, their_label) = matchup.labels;
    for path in matchup.paths {
        let (ours, theirs) = interleave(
            (&format!("mctx-host serve{our_label}, {path}"), &mut || {
                wrk(single.addr, "localhost", path, CONNECTIONS, single.pid())
            }),
            (
                &format!("wasmtime serve -Scli{their_label}, {path}"),
                &mut || {
                    wrk(
                        wasmtime.addr,
                        "localhost",
                        path,
                        CONNECTIONS,
                        wasmtime.pid(),
                    )
                },
            ),
        );
        let ratio = ours.median(|r| r.rps) / theirs.median(|r| r.rps);
        let _ = writeln!(
            section,
            "{}\n{}\n| **ratio** | **{ratio:.2}×** | | | | |",
            ours.row(),
            theirs.row()
        );
        chart.push((ours.name.clone(), ours.median(|r| r.rps)));
        chart.push((theirs.name.clone(), theirs.median(|r| r.rps)));
    }
    println!("{section}");
    section
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    // `MCTX_BENCH_ONLY=kept`: section 9 alone, printed; docs/benchmarks.md
    // is only ever written by a whole run.
    if std::env::var("MCTX_BENCH_ONLY").as_deref() == Ok("kept") {
        kept::section().await;
        return;
    }
    let started = Instant::now();
    let hello = guest("hello");
    let misbehave = guest("misbehave");
    let mut report = String::new();
    let mut chart: Vec<(String, f64)> = Vec::new();
    let header = HEADER;

    // 1. Throughput against wasmtime serve, same component, same path:
    // each with one fresh instance per request (wasmtime's default for a
    // WASIp2 component), then both at their best, instances reused up to
    // 128 requests each (`--max-instance-reuse-count 128`).
    let both_paths: &[&str] = &["/quiet", "/"];
    let section = against_wasmtime(
        Matchup {
            component: &hello,
            ours: &[],
            theirs: &[],
            title: "### 1. Throughput: `mctx-host serve` vs `wasmtime serve`",
            labels: ("", ""),
            paths: both_paths,
        },
        &mut chart,
    );
    report.push_str(&section);
    let reuse: &[&str] = &["--max-instance-reuse-count", "128"];
    let section = against_wasmtime(
        Matchup {
            component: &hello,
            ours: reuse,
            theirs: reuse,
            title: "\n### 1a. Instances reused: `--max-instance-reuse-count 128` on both",
            labels: (", reuse 128", ", reuse 128"),
            paths: both_paths,
        },
        &mut chart,
    );
    report.push_str(&section);
    // 1b-1c. A WASIp3 component: fresh instances on both, then each host's
    // best: ours reused in turn, wasmtime's p3 default (128 in turn and 16
    // requests at once in one instance).
    let hello_p3 = guest("hello_p3");
    let section = against_wasmtime(
        Matchup {
            component: &hello_p3,
            ours: &[],
            theirs: &["-Sp3", "--max-instance-reuse-count", "1"],
            title: "\n### 1b. WASIp3 (`wasi:http/service@0.3`): fresh instances on both",
            labels: (" (p3)", " -Sp3, reuse 1"),
            paths: &["/quiet"],
        },
        &mut chart,
    );
    report.push_str(&section);
    let section = against_wasmtime(
        Matchup {
            component: &hello_p3,
            ours: reuse,
            theirs: &["-Sp3"],
            title: "\n### 1c. WASIp3, each at its best: ours reused in turn (128), wasmtime's default (128 in turn, 16 at once)",
            labels: (" (p3), reuse 128", " -Sp3"),
            paths: &["/quiet"],
        },
        &mut chart,
    );
    report.push_str(&section);
    // 1d. The same host over TLS (rustls, keep-alive) against plain HTTP.
    let ca = support::pki::Ca::new("bench CA");
    let cert = ca.host("bench");
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let plain = HostProcess::single(&hello, &["--guest-logs", "off"]);
    let tls = HostProcess::single(
        &hello,
        &[
            "--guest-logs",
            "off",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ],
    );
    let mut section = format!(
        "\n### 1d. Over TLS: `mctx-host serve --tls-cert …` vs plain HTTP (hello.wasm, {CONNECTIONS} keep-alive connections)\n\n{header}\n"
    );
    for path in ["/quiet", "/"] {
        let (secure, clear) = interleave(
            (&format!("https, {path}"), &mut || {
                wrk_url(
                    &format!("https://{}{path}", tls.addr),
                    "localhost",
                    CONNECTIONS,
                    tls.pid(),
                )
            }),
            (&format!("http, {path}"), &mut || {
                wrk(plain.addr, "localhost", path, CONNECTIONS, plain.pid())
            }),
        );
        let _ = writeln!(
            section,
            "{}\n{}\n| **https/http** | **{:.2}×** | | | | |",
            secure.row(),
            clear.row(),
            secure.median(|r| r.rps) / clear.median(|r| r.rps)
        );
    }
    drop((plain, tls));
    println!("{section}");
    report.push_str(&section);

    // 1e. The same flags on both: one p3 instance serving up to 16
    // requests at once (`run::shared`).
    let section = against_wasmtime(
        Matchup {
            component: &hello_p3,
            ours: &[
                "--max-instance-reuse-count",
                "128",
                "--max-instance-concurrent-reuse-count",
                "16",
            ],
            theirs: &["-Sp3"],
            title: "\n### 1e. WASIp3, the same on both: 128 requests an instance, 16 at once",
            labels: (" (p3), 128, 16 at once", " -Sp3"),
            paths: &["/quiet"],
        },
        &mut chart,
    );
    report.push_str(&section);
    // 1f. Fresh instances again, both resetting finished instances' memory
    // in place (`-O pooling-pagemap-scan`, off by default on both: README
    // "Instance pool"), with one command line for both hosts: ours with its
    // defaults written out (wasmtime's table keep-resident is 0, and its
    // tables' decommit alone halves its throughput here: 10.0k vs 20.9k).
    let in_place: &[&str] = &[
        "-O",
        "pooling-allocator",
        "-O",
        "pooling-pagemap-scan=y",
        "-O",
        "pooling-memory-keep-resident=262144",
        "-O",
        "pooling-table-keep-resident=65536",
    ];
    let section = against_wasmtime(
        Matchup {
            component: &hello,
            ours: in_place,
            theirs: in_place,
            title: "\n### 1f. Fresh instances, memories reset in place: `-O pooling-allocator -O pooling-pagemap-scan=y -O pooling-memory-keep-resident=262144 -O pooling-table-keep-resident=65536` on both",
            labels: (", in place", ", in place"),
            paths: both_paths,
        },
        &mut chart,
    );
    report.push_str(&section);

    // 2. Multi-tenant: 1 vs 50 tenants, then 0 vs 10 viewers on the busy slug.
    let one = HostProcess::multi(&hosts_config(1, &hello), &[]);
    let fifty = HostProcess::multi(&hosts_config(50, &hello), &[]);
    let mut section =
        format!("\n### 2. Multi-tenant host (hello.wasm `/`, busy slug `t0`)\n\n{header}\n");
    let (a, b) = interleave(
        ("1 tenant", &mut || {
            wrk(one.addr, "t0.localhost", "/", CONNECTIONS, one.pid())
        }),
        ("50 tenants", &mut || {
            wrk(fifty.addr, "t0.localhost", "/", CONNECTIONS, fifty.pid())
        }),
    );
    let _ = writeln!(
        section,
        "{}\n{}\n| **ratio 50/1** | **{:.2}×** | | | | |",
        a.row(),
        b.row(),
        b.median(|r| r.rps) / a.median(|r| r.rps)
    );
    chart.push(("50 tenants, 0 viewers".into(), b.median(|r| r.rps)));
    let mut no_viewers = Series {
        name: "50 tenants, 0 viewers".into(),
        runs: vec![],
    };
    let mut ten_viewers = Series {
        name: "50 tenants, 10 viewers on t0".into(),
        runs: vec![],
    };
    let mut delivered = 0u64;
    for _ in 0..ROUNDS {
        no_viewers.runs.push(wrk(
            fifty.addr,
            "t0.localhost",
            "/",
            CONNECTIONS,
            fifty.pid(),
        ));
        let watchers = Watchers::connect(&fifty, "t0", "owner0", 10).await;
        ten_viewers.runs.push(wrk(
            fifty.addr,
            "t0.localhost",
            "/",
            CONNECTIONS,
            fifty.pid(),
        ));
        delivered = delivered.max(watchers.entries.load(Ordering::Relaxed));
    }
    let overhead = 1.0 - ten_viewers.median(|r| r.rps) / no_viewers.median(|r| r.rps);
    let _ = writeln!(
        section,
        "{}\n{}\n| **capture + fan-out overhead** | **{:.1} %** | | | | **{:.1} %** |",
        no_viewers.row(),
        ten_viewers.row(),
        overhead * 100.0,
        (ten_viewers.median(|r| r.cpu_us) / no_viewers.median(|r| r.cpu_us) - 1.0) * 100.0
    );
    let _ = writeln!(
        section,
        "\n10 viewers received up to {} entries in one {} s run ({:.0} entries/s summed).",
        delivered,
        seconds(),
        delivered as f64 / seconds() as f64
    );
    chart.push((ten_viewers.name.clone(), ten_viewers.median(|r| r.rps)));
    drop((one, fifty));
    println!("{section}");
    report.push_str(&section);

    // 3. Capture cost: a path that logs nothing vs one that logs 10 lines.
    // Room for the slow viewer of section 4 beside ten fast ones.
    let roomy = format!(
        "[logs]\nmax_viewers_per_slug = 100\n{}",
        tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)])
    );
    let host = HostProcess::multi(&roomy, &[]);
    let mut section = format!(
        "\n### 3. Capture cost (misbehave.wasm: `/ok` logs nothing, `/flood?lines=10` logs 10 lines)\n\n{header}\n"
    );
    for viewers in [0, 10] {
        let watchers = Watchers::connect(&host, "bad", "alice", viewers).await;
        let (quiet, loud) = interleave(
            (&format!("0 lines, {viewers} viewers"), &mut || {
                wrk(host.addr, "bad.localhost", "/ok", CONNECTIONS, host.pid())
            }),
            (&format!("10 lines, {viewers} viewers"), &mut || {
                wrk(
                    host.addr,
                    "bad.localhost",
                    "/flood?lines=10",
                    CONNECTIONS,
                    host.pid(),
                )
            }),
        );
        let _ = writeln!(
            section,
            "{}\n{}\n| **10 lines cost** | **{:.1} %** | | | | **{:.1} %** |",
            quiet.row(),
            loud.row(),
            (1.0 - loud.median(|r| r.rps) / quiet.median(|r| r.rps)) * 100.0,
            (loud.median(|r| r.cpu_us) / quiet.median(|r| r.cpu_us) - 1.0) * 100.0
        );
        drop(watchers);
    }
    println!("{section}");
    report.push_str(&section);

    // 4. Fan-out: 10 viewers while the guest floods; then with a viewer that never reads.
    let mut section = "\n### 4. Fan-out (10 viewers, guest flooding 1,000 lines per request, 4 connections)\n\n| viewers | entries/s delivered (summed over the 10 fast viewers) |\n|---|---|\n".to_string();
    for slow in [false, true] {
        let watchers = Watchers::connect(&host, "bad", "alice", 10).await;
        let _stalled = if slow {
            Some(host.viewer("bad", "", "alice").await)
        } else {
            None
        };
        let before = watchers.entries.load(Ordering::Relaxed);
        let t = Instant::now();
        wrk(
            host.addr,
            "bad.localhost",
            "/flood?lines=1000",
            4,
            host.pid(),
        );
        let rate =
            (watchers.entries.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
        let _ = writeln!(
            section,
            "| 10 fast{} | {:.0} |",
            if slow { " + 1 that never reads" } else { "" },
            rate
        );
    }
    drop(host);
    println!("{section}");
    report.push_str(&section);

    // 5. Log latency: the guest stamps each line as it writes it; the
    // viewer compares with its own clock on receipt (same machine).
    let host = HostProcess::multi(
        &tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]),
        &[],
    );
    let mut section = "\n### 5. Log latency (guest's write → viewer's receipt, per line; 10 lines per request)\n\n| guest logging rate | lines measured | p50 | p99 | max |\n|---|---|---|---|---|\n".to_string();
    let mut distribution = Vec::new();
    for lines_per_second in [1_000u64, 10_000] {
        let latencies = line_latencies(&host, lines_per_second).await;
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        let _ = writeln!(
            section,
            "| {lines_per_second} lines/s | {} | {:.3} ms | {:.3} ms | {:.3} ms |",
            latencies.len(),
            at(0.5),
            at(0.99),
            latencies.last().unwrap()
        );
        distribution = latencies;
    }
    drop(host);
    println!("{section}");
    report.push_str(&section);
    report.push_str("\n![log latency distribution at 10,000 lines/s](latency.svg)\n");
    latency_chart(&distribution);

    // 6. Memory.
    let idle = HostProcess::single(&hello, &["--guest-logs", "off"]);
    let idle_rss = rss_kib(idle.pid());
    drop(idle);
    let hundred = HostProcess::multi(&hosts_config(100, &hello), &[]);
    let hundred_rss = rss_kib(hundred.pid());
    let mut viewers = Vec::new();
    for i in 0..100 {
        for _ in 0..10 {
            viewers.push(
                hundred
                    .viewer(&format!("t{i}"), "", &format!("owner{}", i % 10))
                    .await,
            );
        }
    }
    let healthz = hundred.get("localhost", "/healthz").await.json();
    assert_eq!(healthz["logHubs"], 100);
    let viewers_rss = rss_kib(hundred.pid());
    let mut section = format!(
        "\n### 6. Memory (host RSS)\n\n| state | RSS | per unit |\n|---|---|---|\n| idle, 1 component | {idle_rss} KiB | |\n| 100 tenants | {hundred_rss} KiB | {:.1} KiB per tenant |\n| 100 tenants + 1,000 idle viewers over 100 slugs | {viewers_rss} KiB | {:.1} KiB per viewer |\n",
        (hundred_rss.saturating_sub(idle_rss)) as f64 / 99.0,
        (viewers_rss.saturating_sub(hundred_rss)) as f64 / 1000.0
    );
    drop(viewers);
    drop(hundred);

    // After a burst of 1,200 concurrent requests (misbehave /slow, 1.5 s
    // each, through wrk): what stays resident once it is over.
    let burst_config = format!(
        "[host]\nmax_connections_per_ip = 5000\n{}",
        tenant_toml("slow", "alice", "active", &[("1.0.0", &misbehave)])
    );
    let bursty = HostProcess::multi(&burst_config, &[]);
    assert_eq!(bursty.get("slow.localhost", "/ok").await.status, 200);
    let before = rss_kib(bursty.pid());
    let pid = bursty.pid();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let url = format!("http://127.0.0.1:{}/slow?ms=1500", bursty.addr.port());
    let status = std::process::Command::new("wrk")
        .args([
            "-t2",
            "-c1200",
            "-d6s",
            "--timeout",
            "20s",
            "-H",
            "Host: slow.localhost",
            &url,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running wrk");
    assert!(status.success());
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(bursty.pid());
    let _ = writeln!(
        section,
        "| before a burst of 1,200 concurrent requests (misbehave `/slow`, 1.5 s each) | {before} KiB | |\n\
         | during the burst (peak sampled every 100 ms) | {peak} KiB | |\n\
         | 2 s after the burst | {after} KiB | {:.2}× before (heap trimmed once the burst is over) |",
        after as f64 / before as f64
    );
    drop(bursty);
    println!("{section}");
    report.push_str(&section);

    // 7. Start-up: first response after start, cold vs warm artifact cache.
    let mut section = "\n### 7. Start-up (spawn → first 200 response)\n\n| component | empty cache | warm cache |\n|---|---|---|\n".to_string();
    for (name, component) in [
        ("hello.wasm (Rust, 0.1 MB)", hello.clone()),
        ("js-hello.wasm (JavaScript, 13 MB)", js_guest()),
    ] {
        let cache = tempfile::tempdir().unwrap();
        let cache_arg = cache.path().to_str().unwrap().to_string();
        let mut times = Vec::new();
        for _ in 0..2 {
            let t = Instant::now();
            let host = HostProcess::single(
                &component,
                &["--guest-logs", "off", "--cache-dir", &cache_arg],
            );
            assert_eq!(host.get("localhost", "/").await.status, 200);
            times.push(t.elapsed());
        }
        let _ = writeln!(
            section,
            "| {name} | {} ms | {} ms |",
            times[0].as_millis(),
            times[1].as_millis()
        );
    }
    println!("{section}");
    report.push_str(&section);

    report.push_str(&against_workerd(&mut chart).await);

    report.push_str(&kept::section().await);

    write_docs(&report, &chart, started.elapsed());
}

/// Section 8, JavaScript: the same Worker source (`guests/js-hello/worker.js`)
/// under Cloudflare's `workerd` and as a component built by the kit under
/// `mctx-host serve`, fresh instances and reused ones; the first response
/// after start; memory with 1 and 50 of them loaded.
async fn against_workerd(chart: &mut Vec<(String, f64)>) -> String {
    let js = js_guest();
    let source = repo_root().join("guests/js-hello/worker.js");
    let mut section = format!(
        "\n### 8. JavaScript Workers against workerd (guests/js-hello/worker.js, {CONNECTIONS} connections; guest output discarded on both)\n\n{HEADER}\n"
    );
    let workerd = Workerd::start(&source, 1);
    let fresh = HostProcess::single(&js, &["--guest-logs", "off", "-S", "keyvalue"]);
    let reused = HostProcess::single(
        &js,
        &[
            "--guest-logs",
            "off",
            "-S",
            "keyvalue",
            "--max-instance-reuse-count",
            "100000",
        ],
    );
    for path in ["/quiet", "/"] {
        let mut theirs = Series {
            name: format!("workerd, {path}"),
            runs: vec![],
        };
        let mut ours_fresh = Series {
            name: format!("mctx-host serve, fresh instances, {path}"),
            runs: vec![],
        };
        let mut ours_reused = Series {
            name: format!("mctx-host serve --max-instance-reuse-count 100000, {path}"),
            runs: vec![],
        };
        for _ in 0..ROUNDS {
            theirs.runs.push(wrk(
                workerd.addrs[0],
                "localhost",
                path,
                CONNECTIONS,
                workerd.pid(),
            ));
            ours_fresh
                .runs
                .push(wrk(fresh.addr, "localhost", path, CONNECTIONS, fresh.pid()));
            ours_reused.runs.push(wrk(
                reused.addr,
                "localhost",
                path,
                CONNECTIONS,
                reused.pid(),
            ));
        }
        let rps = |s: &Series| s.median(|r| r.rps);
        let _ = writeln!(
            section,
            "{}\n{}\n{}\n| **ratio to workerd, fresh / reused** | **{:.3}× / {:.2}×** | | | | |",
            theirs.row(),
            ours_fresh.row(),
            ours_reused.row(),
            rps(&ours_fresh) / rps(&theirs),
            rps(&ours_reused) / rps(&theirs),
        );
        for series in [&theirs, &ours_fresh, &ours_reused] {
            chart.push((series.name.clone(), rps(series)));
        }
    }
    drop((workerd, fresh, reused));

    // First response after start (mctx-host with its artifact cache warm,
    // as after any earlier start), and memory once every Worker answered.
    let mut first = Vec::new();
    let mut memory = Vec::new();
    for count in [1usize, 50] {
        let workerd = Workerd::start(&source, count);
        for addr in &workerd.addrs {
            let reply =
                support::send(*addr, "GET", "localhost", "/quiet", &[], Default::default()).await;
            assert_eq!(reply.status, 200);
            if count == 1 {
                first.push(("workerd", workerd.spawned.elapsed()));
            }
        }
        let theirs = rss_kib(workerd.pid());
        drop(workerd);
        let spawned = Instant::now();
        let host = HostProcess::multi(&hosts_config(count, &js), &[]);
        for i in 0..count {
            let reply = host.get(&format!("t{i}.localhost"), "/quiet").await;
            assert_eq!(reply.status, 200);
            if count == 1 {
                first.push(("mctx-host", spawned.elapsed()));
            }
        }
        memory.push((count, theirs, rss_kib(host.pid())));
    }
    let _ = writeln!(
        section,
        "\n| start → first 200 | workerd | mctx-host (warm artifact cache) |\n|---|---|---|\n| 1 Worker | {} ms | {} ms |",
        first[0].1.as_millis(),
        first[1].1.as_millis()
    );
    let _ = writeln!(
        section,
        "\n| RSS, every Worker answered once | workerd | mctx-host |\n|---|---|---|"
    );
    for (count, theirs, ours) in memory {
        let _ = writeln!(section, "| {count} Worker(s) | {theirs} KiB | {ours} KiB |");
    }
    println!("{section}");
    section
}

/// Drives `/tick?lines=10` at `lines_per_second / 10` requests per second
/// for the run's length and returns every line's latency in ms, sorted.
async fn line_latencies(host: &HostProcess, lines_per_second: u64) -> Vec<f64> {
    let mut viewer = host.viewer("bad", "search=tick", "alice").await;
    let requests = lines_per_second / 10;
    let total_lines = requests * seconds() * 10;
    let mut interval = tokio::time::interval(Duration::from_nanos(1_000_000_000 / requests));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let driver = {
        let addr = host.addr;
        let host_header = format!("bad.localhost:{}", addr.port());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for _ in 0..requests * seconds() {
                interval.tick().await;
                let host_header = host_header.clone();
                sent.push(tokio::spawn(async move {
                    support::send(
                        addr,
                        "GET",
                        &host_header,
                        "/tick?lines=10",
                        &[],
                        Default::default(),
                    )
                    .await
                }));
            }
            for request in sent {
                assert_eq!(request.await.unwrap().status, 200);
            }
        })
    };
    let mut latencies = Vec::with_capacity(total_lines as usize);
    while (latencies.len() as u64) < total_lines {
        let Some(text) = viewer.text_frame().await else {
            break;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        for entry in frame["entries"].as_array().into_iter().flatten() {
            if let Some(stamp) = entry["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("tick "))
                .and_then(|n| n.parse::<u128>().ok())
            {
                latencies.push(now.saturating_sub(stamp) as f64 / 1e6);
            }
        }
    }
    driver.await.unwrap();
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    format!(
        "{cores} cores ({}), {:.0} GiB",
        model.unwrap_or_else(|| "unknown CPU".into()),
        memory.unwrap_or(0) as f64 / 1024.0 / 1024.0
    )
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn write_docs(report: &str, chart: &[(String, f64)], elapsed: Duration) {
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let wasmtime = command_output(support::wasmtime_binary().to_str().unwrap(), &["--version"]);
    let wrk_version = Command::new("wrk")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let rustc = command_output("rustc", &["--version"]);
    let doc = format!(
        "# Benchmarks\n\nMeasured by `cargo bench -p mctx-host --bench compare` on {date}, in {:.0} s.\n\n\
         - Machine: {} (shared: every comparison is a ratio of medians from interleaved runs, {ROUNDS} rounds each, in one invocation)\n\
         - mctx-host {} (release build), {wasmtime}, {rustc}, load from {wrk_version} (`-t2 -c{CONNECTIONS} -d{}s`)\n\n\
         ![throughput by configuration](benchmarks.svg)\n\n\
         Where the time goes, from a `perf` profile, and what the CPU limit costs (1-3 %, measured \
         against a build without it, which this benchmark cannot make): [profile.md](profile.md). \
         Two hosts sharing log hubs on NATS: [cluster-benchmark.md](cluster-benchmark.md) \
         (`cargo bench -p mctx-host --bench cluster`).\n\n{report}",
        elapsed.as_secs_f64(),
        machine(),
        env!("CARGO_PKG_VERSION"),
        seconds(),
    );
    let docs = repo_root().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("benchmarks.md"), doc).unwrap();
    std::fs::write(
        docs.join("benchmarks.svg"),
        bar_chart("Throughput (requests/s, median)", chart),
    )
    .unwrap();
    println!("wrote docs/benchmarks.md and docs/benchmarks.svg");
}

/// The latency distribution as a histogram (docs/latency.svg).
fn latency_chart(latencies: &[f64]) {
    const EDGES: [f64; 9] = [0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, f64::INFINITY];
    let mut bars = Vec::new();
    let mut lower = 0.0;
    for edge in EDGES {
        let count = latencies
            .iter()
            .filter(|&&l| l >= lower && l < edge)
            .count();
        let label = if edge.is_finite() {
            format!("{lower}–{edge} ms")
        } else {
            format!("≥ {lower} ms")
        };
        bars.push((label, count as f64));
        lower = edge;
    }
    let svg = bar_chart("Log latency at 10,000 lines/s (lines per bucket)", &bars);
    std::fs::write(repo_root().join("docs/latency.svg"), svg).unwrap();
}

/// A horizontal bar chart as SVG.
fn bar_chart(title: &str, bars: &[(String, f64)]) -> String {
    let max = bars.iter().map(|(_, v)| *v).fold(1.0, f64::max);
    let (label_w, bar_w, row_h) = (300.0, 420.0, 28.0);
    let height = 50.0 + row_h * bars.len() as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="24" font-size="15" font-weight="bold">{title}</text>
"##,
        w = label_w + bar_w + 90.0
    );
    for (i, (name, value)) in bars.iter().enumerate() {
        let y = 40.0 + row_h * i as f64;
        let width = bar_w * value / max;
        let color = if name.starts_with("wasmtime") {
            "#9ca3af"
        } else {
            "#2563eb"
        };
        let _ = writeln!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end">{name}</text><rect x="{bx}" y="{y}" width="{width:.1}" height="20" fill="{color}"/><text x="{vx:.1}" y="{ty}">{value:.0}</text>"#,
            x = label_w - 8.0,
            ty = y + 15.0,
            bx = label_w,
            vx = label_w + width + 6.0,
            name = name.replace('&', "&amp;").replace('<', "&lt;"),
        );
    }
    svg.push_str("</svg>\n");
    svg
}
