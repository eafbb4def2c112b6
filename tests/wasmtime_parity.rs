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

mod support;

use std::path::Path;

use bytes::Bytes;
use serde_json::Value;
use support::{HostProcess, Reply, WasmtimeServe, guest, js_guest};

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
    let wasmtime = WasmtimeServe::start(component, &[]);
    let host = HostProcess::single(component, &["--guest-logs", "off"]);
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
    same_answers(
        &guest("mcp_everything"),
        &[
            post("/mcp", INITIALIZE),
            post("/mcp", r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"test_simple_text"}}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"test_tool_with_logging"}}"#),
            post("/mcp", r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            get("/mcp"),
            Case { headers: &[("origin", "http://evil.example.com")], ..post("/mcp", INITIALIZE) },
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_hello_answers_the_same_under_wasmtime_serve() {
    same_answers(&js_guest(), &[get("/hi?x=1"), get("/fail")]).await;
}
