//! The sample tenants run unchanged under plain `wasmtime serve` (the
//! wasmtime-cli of our wasmtime version) and answer the same requests the
//! same way there as under `mctx-host serve`: status, content type, body.
//! The only differences allowed are the two headers mctx-host adds
//! (`X-Tenant-Slug`, `X-Tenant-Version`), which echoing guests show.
//!
//! Needs the `wasmtime` binary: `WASMTIME`, else `$MCTX_TOOLS_DIR/bin` or
//! `~/.cache/mctx-tools/bin` (where `.ci/run` installs and caches it), else
//! `PATH`. Components are served with `-Scli`, as standard toolchains'
//! components import `wasi:cli` interfaces beyond the proxy world.

use crate::support;

use std::path::Path;

use crate::support::{HostProcess, Reply, WasmtimeServe, guest, js_guest};
use bytes::Bytes;
use serde_json::Value;

struct Case {
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    /// Compare the status only (the host's own error page may differ).
    status_only: bool,
}

const fn get(path: &'static str) -> Case {
    Case {
        method: "GET",
        path,
        headers: &[],
        body: "",
        status_only: false,
    }
}

const fn post(path: &'static str, body: &'static str) -> Case {
    Case {
        method: "POST",
        path,
        headers: &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ],
        body,
        status_only: false,
    }
}

/// The body, with what mctx-host adds on purpose taken out.
fn comparable(reply: &Reply) -> Value {
    match serde_json::from_slice::<Value>(&reply.body) {
        Ok(mut json) => {
            if let Some(headers) = json.get_mut("headers").and_then(Value::as_object_mut) {
                headers.remove("x-tenant-slug");
                headers.remove("x-tenant-version");
            }
            if let Some(object) = json.as_object_mut() {
                object.remove("tenant");
                object.remove("version");
            }
            json
        }
        Err(_) => Value::String(reply.text()),
    }
}

async fn same_answers(component: &Path, cases: &[Case]) {
    same_answers_with(component, &[], cases).await;
}

/// Both binaries started with the same `wasmtime serve` flags.
async fn same_answers_with(component: &Path, flags: &[&str], cases: &[Case]) {
    let wasmtime = WasmtimeServe::start(component, flags);
    let mut ours = vec!["--guest-logs", "off"];
    ours.extend(flags);
    let host = HostProcess::single(component, &ours);
    for case in cases {
        let send = |addr| {
            support::send(
                addr,
                case.method,
                "localhost",
                case.path,
                case.headers,
                Bytes::from_static(case.body.as_bytes()),
            )
        };
        let (theirs, ours) = (send(wasmtime.addr).await, send(host.addr).await);
        let what = format!("{} {} {}", component.display(), case.method, case.path);
        assert_eq!(ours.status, theirs.status, "{what}: status");
        if case.status_only {
            continue;
        }
        assert_eq!(
            ours.header("content-type"),
            theirs.header("content-type"),
            "{what}: content-type"
        );
        assert_eq!(comparable(&ours), comparable(&theirs), "{what}: body");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_answers_the_same_under_wasmtime_serve() {
    same_answers(
        &guest("hello"),
        &[
            get("/"),
            get("/v1/path?with=query"),
            Case {
                headers: &[("x-custom", "kept"), ("x-tenant-slug", "spoof")],
                ..get("/headers")
            },
            post("/echo", "{}"),
            get("/quiet"),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehave_answers_the_same_under_wasmtime_serve() {
    same_answers(
        &guest("misbehave"),
        &[
            get("/ok"),
            get("/flood?lines=3"),
            get("/big?kb=1"),
            get("/slow?ms=10"),
            Case {
                status_only: true,
                ..get("/trap")
            },
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_everything_answers_the_same_under_wasmtime_serve() {
    const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"parity","version":"1"}}}"#;
    // Its tasks keep what later requests say in wasi:keyvalue.
    same_answers_with(
        &guest("mcp_everything"),
        &["-Skeyvalue"],
        &[
            post("/mcp", INITIALIZE),
            post("/mcp", r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"test_simple_text"}}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"test_tool_with_logging"}}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            get("/mcp"),
            Case { headers: &[("origin", "http://evil.example.com")], ..post("/mcp", INITIALIZE) },
            // MCP 2026-07-28: discovery, a multi-round request's first
            // round, a header that disagrees with the body.
            Case { headers: MODERN_DISCOVER, ..post("/mcp", DISCOVER) },
            Case { headers: MODERN_CALL, ..post("/mcp", ASK_NAME) },
            Case {
                headers: &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")],
                ..post("/mcp", ASK_NAME)
            },
        ],
    )
    .await;
}

/// `-S keyvalue` under both: the same store API, the same answers to a
/// request that stands alone. (What differs is by design: wasmtime's store
/// keeps a request's writes for that request only, so a later `/count`
/// there is 1 again; `tests/keyvalue.rs` checks ours keeps them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visits_answers_the_same_under_wasmtime_serve() {
    same_answers_with(
        &guest("visits"),
        &["-Skeyvalue", "-Skeyvalue-in-memory-data=greeting=hello"],
        &[
            get("/keys"),
            get("/kv/greeting"),
            get("/kv/missing"),
            get("/count"),
            get("/elsewhere"),
        ],
    )
    .await;
}

const DISCOVER: &str = r#"{"jsonrpc":"2.0","id":5,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
const MODERN_DISCOVER: &[(&str, &str)] = &[
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "server/discover"),
];
const ASK_NAME: &str = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"test_input_required_result_elicitation","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}"#;
const MODERN_CALL: &[(&str, &str)] = &[
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "test_input_required_result_elicitation"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_hello_answers_the_same_under_wasmtime_serve() {
    same_answers_with(
        &js_guest(),
        &["-Skeyvalue"],
        &[get("/hi?x=1"), get("/fail"), get("/kv?put=a&value=1")],
    )
    .await;
}

/// `wasmtime serve` command lines as READMEs and CI scripts write them, each
/// under both binaries with the same flags (`-Scli` and `--addr` come from
/// the harness): the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasmtime_serve_command_lines_mean_the_same_under_mctx_host() {
    let hello = guest("hello");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeting.txt"), "hello from the host\n").unwrap();
    let grant = format!("{}::/data", dir.path().display());
    let table: [(&[&str], Case); 9] = [
        (&["--env", "GREETING=hi"], get("/env?name=GREETING")),
        (
            &["-S", "cli,http", "--env", "GREETING=hi"],
            get("/env?name=GREETING"),
        ),
        (&["-S", "inherit-env", "--env", "A=1"], get("/env?name=A")),
        (&["-H", "x-added: yes"], get("/headers")),
        (
            &["-O", "pooling-allocator", "-W", "max-memory-size=67108864"],
            get("/"),
        ),
        (
            &[
                "-O",
                "pooling-allocator,pooling-total-memories=200,pooling-table-keep-resident=65536,memory-init-cow=y,pooling-decommit-batch-size=8",
            ],
            get("/"),
        ),
        (
            &[
                "-O",
                "pooling-allocator,pooling-pagemap-scan=auto,pooling-memory-keep-resident=262144",
            ],
            get("/"),
        ),
        (&["--dir", &grant], get("/read?path=/data/greeting.txt")),
        (
            &[
                "--max-concurrent-requests",
                "16",
                "--max-concurrent-connections",
                "64",
                "--max-instance-reuse-count",
                "128",
                "--idle-instance-timeout",
                "2s",
            ],
            get("/quiet"),
        ),
    ];
    for (flags, case) in table {
        same_answers_with(&hello, flags, &[case]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honoured_wasmtime_flags_take_effect() {
    // -W timeout: the guest is stopped at the limit (wasmtime traps, 500;
    // we answer 504, as for every tenant past its wall-clock limit).
    let host = HostProcess::single(&guest("misbehave"), &["-W", "timeout=300ms"]);
    let reply = host.get("localhost", "/slow?ms=60000").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("(300 ms)"), "{}", reply.text());

    // --no-logging-prefix: the guest's lines exactly as it wrote them.
    let host = HostProcess::single(&guest("hello"), &["--no-logging-prefix"]);
    assert_eq!(host.get("localhost", "/raw").await.status, 200);
    assert_eq!(
        host.wait_for_line(|l| l.contains("GET /raw")),
        "hello: GET /raw"
    );

    // --guest-logs wasmtime: wasmtime serve's prefixes, stdout lines on
    // stdout (the number is our request id where wasmtime counts instances).
    let host = HostProcess::single(&guest("hello"), &["--guest-logs", "wasmtime"]);
    let reply = host.get("localhost", "/wt").await;
    let id = reply.header("x-request-id").unwrap().to_string();
    assert_eq!(
        host.wait_for_line(|l| l.contains("GET /wt")),
        format!("stdout [{id}] :: hello: GET /wt")
    );

    // --shutdown-addr: connecting there shuts the host down, cleanly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let shutdown = format!("127.0.0.1:{port}");
    let mut host = HostProcess::single(&guest("hello"), &["--shutdown-addr", &shutdown]);
    assert_eq!(host.get("localhost", "/quiet").await.status, 200);
    tokio::net::TcpStream::connect(&shutdown).await.unwrap();
    assert!(
        host.wait_exit().success(),
        "exits 0 after a graceful shutdown"
    );
}

/// What both print for the same request: the guest's line exactly as it
/// wrote it with `--no-logging-prefix`; with wasmtime's prefixes by default
/// there and under `--guest-logs wasmtime` here (the number in brackets
/// differs: wasmtime counts instances, we print the request id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_output_prints_as_wasmtime_serve_prints_it() {
    let hello = guest("hello");
    for (theirs, ours) in [
        (&["--no-logging-prefix"][..], &["--no-logging-prefix"][..]),
        (&[][..], &["--guest-logs", "wasmtime"][..]),
    ] {
        let wasmtime = WasmtimeServe::start(&hello, theirs);
        let host = HostProcess::single(&hello, ours);
        for addr in [wasmtime.addr, host.addr] {
            let reply =
                support::send(addr, "GET", "localhost", "/printed", &[], Bytes::new()).await;
            assert_eq!(reply.status, 200);
        }
        let printed = |line: String| {
            // `stdout [0] :: x` and `stdout [9acc…] :: x` read the same.
            match (line.split_once(" ["), line.split_once("] :: ")) {
                (Some((stream, _)), Some((_, text))) => format!("{stream} [N] :: {text}"),
                _ => line,
            }
        };
        let wanted = |l: &str| l.contains("GET /printed");
        assert_eq!(
            printed(host.wait_for_line(wanted)),
            printed(wasmtime.wait_for_line(wanted)),
            "{ours:?}"
        );
    }
}

#[test]
fn unsupported_wasmtime_flags_are_refused_in_one_line_naming_the_flag() {
    let hello = guest("hello");
    let refused: [&[&str]; 9] = [
        &["-C", "cranelift-opt-level=0"],
        &["-D", "debug-info"],
        &["-R", "path=trace.bin"],
        &["--target", "x86_64-unknown-linux-gnu"],
        &["--allow-precompiled"],
        &["--profile", "perfmap"],
        &["-S", "nn"],
        &["-W", "fuel=1000"],
        &["-O", "memory-reservation=1048576"],
    ];
    for flags in refused {
        let mut args: Vec<std::ffi::OsString> = vec!["serve".into()];
        args.extend(flags.iter().map(Into::into));
        args.push(hello.clone().into());
        let stderr = support::run_failing(&args);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{flags:?}: one line, got {stderr}");
        assert!(
            lines[0].contains("not supported by mctx-host") && lines[0].contains(flags[0]),
            "{flags:?}: {stderr}"
        );
        assert!(
            !stderr.contains("unexpected argument"),
            "{flags:?}: {stderr}"
        );
    }
}

/// A WASIp3 component (`guests/hello-p3`) under both, with `wasmtime
/// serve`'s `-Sp3`: the same answers, the body written by a guest task after
/// the response head included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_p3_answers_the_same_under_wasmtime_serve() {
    same_answers_with(
        &guest("hello_p3"),
        &["-Sp3"],
        &[
            get("/"),
            get("/x?y=1"),
            get("/quiet"),
            get("/lines?n=3"),
            get("/stream?chunks=2"),
            Case {
                status_only: true,
                ..get("/trap")
            },
        ],
    )
    .await;
}

/// The same component with instances shared by concurrent requests
/// (`--max-instance-concurrent-reuse-count`, wasmtime's p3 default of 16):
/// both count the requests an instance served alike, and both start afresh
/// after a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_p3_in_shared_instances_answers_the_same_under_wasmtime_serve() {
    same_answers_with(
        &guest("hello_p3"),
        &[
            "-Sp3",
            "--max-instance-reuse-count",
            "128",
            "--max-instance-concurrent-reuse-count",
            "16",
        ],
        &[
            get("/counter"),
            get("/stream?chunks=2"),
            get("/counter"),
            Case {
                status_only: true,
                ..get("/trap")
            },
            get("/counter"),
        ],
    )
    .await;
}
