//! Live log streams over real WebSockets against the real host and guests:
//! entries and levels, limits, request events (viewers: `log_stream_viewers`;
//! who may watch: `log_stream_auth`).

use crate::support;

use crate::support::{HostProcess, guest, tenant_toml};
use serde_json::Value;

pub(super) fn config(host: &str, logs: &str) -> String {
    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    [
        format!("[host]\n{host}\n[logs]\n{logs}\n"),
        tenant_toml("hello", "alice", "active", &[("1.0.0", &hello)]),
        tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]),
        tenant_toml("bobs", "bob", "active", &[("1.0.0", &hello)]),
        tenant_toml("sleepy", "alice", "inactive", &[("1.0.0", &hello)]),
    ]
    .concat()
}

pub(super) fn host() -> HostProcess {
    HostProcess::multi(&config("cpu_limit_ms = 500", ""), &[])
}

pub(super) fn request_id(reply: &support::Reply) -> String {
    reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string()
}

pub(super) fn levels_and_messages(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["level"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(super) fn seqs(entries: &[Value]) -> Vec<u64> {
    entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_and_prefix_arrives_with_a_request_event() {
    let host = host();
    let mut viewer = host.viewer("hello", "", "alice").await;
    let reply = host.get("hello.localhost", "/path?q=1").await;
    let id = request_id(&reply);
    let entries = viewer.request_entries(&id).await;
    assert_eq!(
        levels_and_messages(&entries[..6]),
        [
            ("log", "hello: GET /path?q=1"),
            ("info", "[INFO] request received: GET /path?q=1"),
            ("debug", "[DEBUG] headers: 2"),
            ("warn", "[WARN] this is what a warning looks like"),
            ("error", "[ERROR] this is what an error looks like"),
            ("error", "stderr without a prefix"),
        ]
        .map(|(l, m)| (l.to_string(), m.to_string()))
    );
    assert_eq!(seqs(&entries), (1..=7).collect::<Vec<_>>());
    for entry in &entries {
        assert_eq!(
            (entry["slug"].as_str(), entry["version"].as_str()),
            (Some("hello"), Some("1.0.0"))
        );
        assert_eq!(entry["requestId"], id.as_str());
        assert!(
            entry["timestamp"].as_u64().unwrap() > 1_700_000_000_000,
            "ms since the epoch"
        );
    }
    let event = &entries[6];
    assert_eq!(event["type"], "request");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("GET /path?q=1 200 ok (")
    );
    assert_eq!(
        (event["method"].as_str(), event["path"].as_str()),
        (Some("GET"), Some("/path?q=1"))
    );
    assert_eq!(
        (event["status"].as_u64(), event["outcome"].as_str()),
        (Some(200), Some("ok"))
    );
    assert!(event["wallMs"].is_u64() && event["cpuMs"].is_u64());
    assert!(entries[..6].iter().all(|e| e["type"] == "log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_line_writes_split_and_long_lines_are_truncated() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    let id = request_id(&host.get("bad.localhost", "/flood?lines=3").await);
    let entries = viewer.request_entries(&id).await;
    let messages: Vec<&str> = entries[..3]
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["flood line 0", "flood line 1", "flood line 2"]);

    let id = request_id(&host.get("bad.localhost", "/big?kb=20").await);
    let entries = viewer.request_entries(&id).await;
    let big = &entries[0];
    assert_eq!(big["truncated"], true);
    assert_eq!(big["message"].as_str().unwrap().len(), 10_240);
    assert!(
        entries[1].get("truncated").is_none(),
        "only the long line is flagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_line_arrives_structured_and_searchable() {
    let host = host();
    let mut viewer = host.viewer("hello", "", "alice").await;
    let mut searching = host.viewer("hello", "search=USER%3A42", "alice").await;
    let id = request_id(&host.get("hello.localhost", "/structured").await);
    let entries = viewer.request_entries(&id).await;
    let structured = &entries[0];
    assert_eq!(structured["level"], "warn");
    assert_eq!(structured["message"], "cache miss");
    assert_eq!(
        structured["fields"],
        serde_json::json!({ "key": "user:42", "ms": 12 })
    );
    assert_eq!(entries[1]["message"], "not JSON, a plain line");
    assert!(
        entries[1].get("fields").is_none(),
        "a plain line is untouched"
    );

    // The search looks inside the fields: only the structured line matches.
    let found = searching.frame().await;
    let found = found["entries"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["message"], "cache miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_nobody_reads_by_design_is_no_disconnection() {
    // hyper sends no body for HEAD (nor 204/304): the guest's unread body
    // must not be reported as the client going away.
    let host = host();
    let mut viewer = host.viewer("hello", "type=request", "alice").await;
    let reply = host.request("HEAD", "hello.localhost", "/", &[]).await;
    assert_eq!(reply.status, 200);
    let id = request_id(&reply);
    let event = viewer.request_entries(&id).await.pop().unwrap();
    assert_eq!(event["outcome"], "ok", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_past_256_kib_is_dropped_with_one_warning() {
    // 40,000 writes through a debug build's WASI and capture code cost real
    // CPU, charged to the guest, and more so on a loaded machine (a short
    // poll is charged by the clock, `run::limits`): this test is about the
    // output budget, so the CPU limit is far out of its way.
    let host = HostProcess::multi(&config("cpu_limit_ms = 60000", ""), &[]);
    let mut viewer = host.viewer("bad", "type=log", "alice").await;
    // 40,000 lines of 13-17 bytes: about 640 KB, well past the budget.
    let reply = host.get("bad.localhost", "/flood?lines=40000").await;
    assert_eq!(reply.status, 200, "the guest keeps running");
    let entries = viewer.entries_until(|e| e["level"] == "warn").await;
    // The entries are exactly the first 256 KiB of what the guest wrote,
    // split into lines (the last one cut mid-line).
    let output: String = (0..40_000).map(|i| format!("flood line {i}\n")).collect();
    let expected: Vec<&str> = output[..256 * 1024].split('\n').collect();
    let got: Vec<&str> = entries[..entries.len() - 1]
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(got, expected);
    let warning = entries.last().unwrap()["message"].as_str().unwrap();
    assert!(warning.contains("output limit reached"), "{warning}");
    let dropped = output.len() - 256 * 1024;
    assert!(
        warning.contains(&format!("remaining {dropped} bytes were dropped")),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_events_report_traps_and_the_cpu_limit() {
    let host = host();
    let mut viewer = host.viewer("bad", "type=request", "alice").await;
    for (path, status, outcome) in [
        ("/trap", 500, "exception"),
        ("/spin", 503, "exceededCpu"),
        ("/ok", 200, "ok"),
    ] {
        let reply = host.get("bad.localhost", path).await;
        assert_eq!(reply.status, status);
        let event = viewer
            .request_entries(&request_id(&reply))
            .await
            .pop()
            .unwrap();
        assert_eq!(
            (event["status"].as_u64(), event["outcome"].as_str()),
            (Some(u64::from(status)), Some(outcome)),
            "{path}"
        );
        assert_eq!(event["level"], if status == 200 { "info" } else { "error" });
        if outcome == "exceededCpu" {
            assert!(event["cpuMs"].as_u64().unwrap() >= 500, "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_message_becomes_an_error_entry() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    let id = request_id(&host.get("bad.localhost", "/trap").await);
    let entries = viewer.request_entries(&id).await;
    let trap = entries
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("[mctx] the guest trapped")
        })
        .unwrap();
    assert_eq!(trap["level"], "error");
    assert!(
        trap["message"].as_str().unwrap().contains("unreachable"),
        "{trap}"
    );

    // The request event carries the exception with the guest's own
    // functions, demangled, innermost first: the panic machinery, then the
    // handler that panicked (inlined into its export,
    // `wasi:http/incoming-handler@0.2.x#handle`, in a release build).
    let event = entries.last().unwrap();
    assert_eq!(event["outcome"], "exception");
    let exception = &event["exception"];
    assert_eq!(exception["name"], "UnreachableCodeReached", "{exception}");
    assert!(
        exception["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{exception}"
    );
    let stack = support::stack_of(event);
    let handler = stack
        .iter()
        .position(|f| f.ends_with("handle"))
        .unwrap_or_else(|| panic!("the handler is in the stack: {stack:#?}"));
    assert!(
        stack[..handler].iter().any(|f| f.contains("panic")),
        "the panic comes before the handler: {stack:#?}"
    );
    assert!(
        stack
            .iter()
            .all(|f| !f.starts_with("_ZN") && !f.starts_with("_R")),
        "demangled: {stack:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_line_arrives_while_its_request_is_still_running() {
    let host = host();
    let mut viewer = host.viewer("bad", "", "alice").await;
    // The guest logs one line, then sleeps 900 ms before answering. If the
    // hub held lines for a batch interval, the answer would come first.
    let slow = host.spawn_get("bad.localhost", "/slow?ms=900");
    let first = viewer.frame().await;
    assert_eq!(first["entries"][0]["message"], "[INFO] sleeping 900 ms");
    assert!(!slow.is_finished(), "the line came before the response");
    assert_eq!(slow.await.unwrap().status, 200);
}
