//! An official MCP client — the Python SDK (`mcp` 2.3.0, in the venv
//! `tests/setup.sh` makes) — through a full MCP 2026-07-28 elicitation
//! round trip with `mcp-everything` hosted as a tenant: `server/discover`,
//! `tools/call` answered with an input request, the user's answer, the call
//! again with it. Each round is its own HTTP request (a fresh instance each,
//! continuing from what the client sent back) and its log lines reach the
//! owner's viewer under that request's id.

use std::process::Command;

use crate::support::{HostProcess, guest, mcp_ts_guest, repo_root, tenant_toml};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_completes_an_elicitation_round_trip_whose_rounds_are_logged() {
    let python = repo_root().join("tests/mcp-python/.venv/bin/python");
    assert!(
        python.exists(),
        "no MCP Python SDK: run tests/setup.sh (it makes tests/mcp-python/.venv)"
    );
    let config = tenant_toml(
        "everything",
        "alice",
        "active",
        &[("1.0.0", &guest("mcp_everything"))],
    ) + "env = { MCP_STATE_KEY = \"client-test-state-key-0123456789\" }\n";
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("everything", "", "alice").await;
    let url = format!("http://localhost:{}/t/everything/mcp", host.addr.port());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(repo_root().join("tests/mcp-python/elicit.py"))
            .arg(url)
            .output()
            .expect("running the Python client")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the client failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(said[0]["protocol"], "2026-07-28", "{said:?}");
    assert_eq!(said[1]["asked"], "What is your name?");
    assert_eq!(said[2]["text"], "Hello, Ada!");

    // The two tools/call rounds, each with its own lines.
    let mut entries: Vec<Value> = Vec::new();
    let calls = |entries: &[Value]| -> Vec<Value> {
        entries
            .iter()
            .filter(|e| e["type"] == "request" && e["mcpMethod"] == "tools/call")
            .cloned()
            .collect()
    };
    while calls(&entries).len() < 2 {
        let frame = viewer.frame().await;
        entries.extend(frame["entries"].as_array().unwrap().iter().cloned());
    }
    let rounds = calls(&entries);
    assert!(
        rounds
            .iter()
            .all(|e| e["mcpName"] == "test_input_required_result_elicitation"),
        "{rounds:?}"
    );
    let lines_of = |event: &Value| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["type"] == "log" && e["requestId"] == event["requestId"])
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let (first, second) = (lines_of(&rounds[0]), lines_of(&rounds[1]));
    assert!(
        first
            .iter()
            .any(|l| l == "[INFO] Input required: user_name"),
        "round 1 asks: {first:?}"
    );
    assert!(
        second
            .iter()
            .any(|l| l == "[INFO] Input received; answered: Hello, Ada!"),
        "round 2 answers: {second:?}"
    );
    assert_ne!(rounds[0]["requestId"], rounds[1]["requestId"]);
}

/// The Python SDK against the TypeScript-SDK sample (a JS tenant, its
/// instances reused): MCP 2025-11-25 negotiated, a secret from `env` seen
/// by the tool (and never printed), a tool with arguments answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_calls_the_typescript_sdk_sample_with_its_secret() {
    let python = repo_root().join("tests/mcp-python/.venv/bin/python");
    assert!(python.exists(), "no MCP Python SDK: run tests/setup.sh");
    let config = tenant_toml("ts", "alice", "active", &[("1.0.0", &mcp_ts_guest())])
        + "instance_reuse = 16\nsecrets = { API_KEY = { env = \"MCTX_TEST_TS_KEY\" } }\n";
    let host = HostProcess::multi_with_env(&config, &[], &[("MCTX_TEST_TS_KEY", "ts-key-123456")]);
    let url = format!("http://localhost:{}/t/ts/mcp", host.addr.port());
    let call = |tool: &'static str, arguments: &'static str| {
        let (python, url) = (python.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            let output = Command::new(python)
                .arg(repo_root().join("tests/mcp-python/call.py"))
                .args([url.as_str(), tool, arguments])
                .output()
                .expect("running the Python client");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(
                output.status.success(),
                "the client failed: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
    };
    let said = call("whoami", "{}").await.unwrap();
    assert_eq!(said[0]["protocol"], "2025-11-25", "{said:?}");
    assert!(
        said[1]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "add"),
        "{said:?}"
    );
    assert_eq!(said[2]["text"], "mcp-ts, API key set");
    let said = call("add", r#"{"a": 2, "b": 40}"#).await.unwrap();
    assert_eq!(
        (said[2]["text"].as_str(), said[2]["isError"].as_bool()),
        (Some("42"), Some(false))
    );
}

/// A state key set but too short is named as such, with the length it
/// needs (a user who set a 14-byte key was told it was "not set").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_key_too_short_is_reported_as_too_short() {
    let host = HostProcess::single(
        &guest("mcp_everything"),
        &[
            "--guest-logs",
            "off",
            "--env",
            "MCP_STATE_KEY=fourteen-bytes",
        ],
    );
    let call = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"test_input_required_result_request_state","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}}}"#;
    let reply = crate::support::send(
        host.addr,
        "POST",
        "localhost",
        "/mcp",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "test_input_required_result_request_state"),
        ],
        bytes::Bytes::from_static(call.as_bytes()),
    )
    .await;
    assert!(
        reply
            .text()
            .contains("MCP_STATE_KEY is too short: 14 bytes, it must be at least 16"),
        "{}",
        reply.text()
    );
}
