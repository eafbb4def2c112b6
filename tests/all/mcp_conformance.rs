//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! run with the Node 22 from `tests/mcp`) against `guests/mcp-everything`,
//! both lines of it: 0.1.16 for MCP 2025-11-25 and before, 0.2.0-alpha.12
//! `--requirements 2026-07-28` for the stateless revision,
//! hosted as a tenant (reached by path, `/t/everything/mcp`, since Node
//! cannot resolve `*.localhost`) and in single-component mode (`/mcp`).
//! Every server scenario runs; on the 2025 line only those in
//! `tests/mcp/expected-failures.yaml` may fail, on the 2026 line none.
//! The tenant is granted a key-value store (`keyvalue_max_bytes`; `-S
//! keyvalue` in single-component mode), where its tasks keep what later
//! requests say about them. The suite's own output goes to
//! `target/mcp-conformance/*.log`.
//!
//! Needs `npm ci --prefix tests/mcp` (`.ci/run` does it).

use std::path::PathBuf;
use std::process::Command;

use crate::support::{HostProcess, guest, mcp_ts_guest, repo_root, target_dir, tenant_toml};
use serde_json::Value;

/// The key `mcp-everything` signs its multi-round `requestState` with.
const STATE_KEY: &str = "conformance-state-key-0123456789";

/// One line of the suite: which release, which scenarios, and the only
/// ones allowed to fail (each with its reason in the YAML file).
struct Line {
    name: &'static str,
    /// Under `tests/mcp/node_modules`.
    package: &'static str,
    /// What selects the scenarios.
    selection: [&'static str; 2],
    /// Under `tests/mcp`; `None`: every scenario must pass.
    expected_failures_file: Option<&'static str>,
    expected_failures: &'static [&'static str],
    scenarios: usize,
}

/// MCP 2025-11-25 and before (`initialize`, sessions): conformance 0.1.16,
/// every server scenario.
const LINE_2025: Line = Line {
    name: "2025",
    package: "@modelcontextprotocol/conformance",
    selection: ["--suite", "all"],
    expected_failures_file: Some("expected-failures.yaml"),
    expected_failures: &[
        "tools-call-sampling",
        "tools-call-elicitation",
        "elicitation-sep1034-defaults",
        "elicitation-sep1330-enums",
    ],
    scenarios: 32,
};

/// The 2025 line against `guests/mcp-ts` (the TypeScript SDK 1.32, with no
/// session): what the SDK's server fails under Node too.
const LINE_2025_TS: Line = Line {
    name: "2025",
    package: "@modelcontextprotocol/conformance",
    selection: ["--suite", "all"],
    expected_failures_file: Some("expected-failures-mcp-ts.yaml"),
    expected_failures: &[
        "tools-call-sampling",
        "tools-call-elicitation",
        "json-schema-2020-12",
        "elicitation-sep1034-defaults",
        "server-sse-polling",
        "server-sse-multiple-streams",
        "elicitation-sep1330-enums",
    ],
    scenarios: 32,
};

/// MCP 2026-07-28 (stateless, multi-round-trip requests): conformance
/// 0.2.0-alpha.12, what the revision requires plus the tasks extension.
const LINE_2026: Line = Line {
    name: "2026",
    package: "conformance-2026",
    selection: ["--requirements", "2026-07-28"],
    expected_failures_file: None,
    expected_failures: &[],
    scenarios: 50,
};

struct SuiteRun {
    passed: bool,
    total_line: String,
    log: PathBuf,
}

/// Runs `line`'s server scenarios against `url`.
fn run_suite(line: &Line, url: &str, name: &str) -> SuiteRun {
    let dir = repo_root().join("tests/mcp");
    let node = dir.join("node_modules/.bin/node");
    let cli = dir
        .join("node_modules")
        .join(line.package)
        .join("dist/index.js");
    assert!(
        node.exists() && cli.exists(),
        "the suite is not installed: run `npm ci --prefix tests/mcp`"
    );
    let mut suite = Command::new(node);
    suite
        .arg(cli)
        .args(["server", "--url", url])
        .args(line.selection);
    if let Some(file) = line.expected_failures_file {
        suite.arg("--expected-failures").arg(dir.join(file));
    }
    let output = suite.output().expect("running the conformance suite");
    let log_dir = target_dir().join("mcp-conformance");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join(format!("{name}-{}.log", line.name));
    let text = [output.stdout, output.stderr].concat();
    std::fs::write(&log, &text).unwrap();
    let text = String::from_utf8_lossy(&text);
    let total_line = text
        .lines()
        .rfind(|l| l.starts_with("Total:"))
        .unwrap_or("no Total line")
        .to_string();
    SuiteRun {
        passed: output.status.success(),
        total_line,
        log,
    }
}

fn assert_suite(line: &Line, run: &SuiteRun) {
    assert!(
        run.passed,
        "unexpected {} conformance failures ({}); see {}",
        line.name,
        run.total_line,
        run.log.display()
    );
    let whole = std::fs::read_to_string(&run.log).unwrap();
    // One line per scenario above the Total; below it the suite may list
    // some again (those "not scored" for the revision).
    let log = whole
        .rsplit_once("\nTotal:")
        .map_or(whole.as_str(), |(above, _)| above);
    // A scenario the server gives nothing to check (no session to test)
    // shows as "0 passed, 0 failed", and the suite counts it as failed.
    let unchecked = |scenario: &&&str| log.contains(&format!("✓ {scenario}: 0 passed, 0 failed"));
    for scenario in line.expected_failures {
        assert!(
            log.contains(&format!("✗ {scenario}")) || unchecked(&scenario),
            "{scenario} was expected to fail"
        );
    }
    assert_eq!(
        log.matches("✓ ").count() + log.matches("✗ ").count(),
        line.scenarios,
        "all {} {} server scenarios ran",
        line.scenarios,
        line.name
    );
    let unchecked = line.expected_failures.iter().filter(unchecked).count();
    assert_eq!(
        log.matches("✗ ").count() + unchecked,
        line.expected_failures.len()
    );
}

/// Whether an entry at `level` has a message starting with `prefix`.
fn logged_starting(entries: &[Value], level: &str, prefix: &str) -> bool {
    entries.iter().any(|e| {
        e["level"] == level && e["message"].as_str().is_some_and(|m| m.starts_with(prefix))
    })
}

#[test]
fn the_expected_failures_files_list_exactly_the_justified_scenarios() {
    for line in [LINE_2025, LINE_2025_TS, LINE_2026] {
        let Some(file) = line.expected_failures_file else {
            assert!(line.expected_failures.is_empty());
            continue;
        };
        let text = std::fs::read_to_string(repo_root().join("tests/mcp").join(file)).unwrap();
        let listed: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim().strip_prefix("- "))
            .map(|entry| entry.split('#').next().unwrap().trim())
            .collect();
        assert_eq!(listed, line.expected_failures);
        for line in text.lines().filter(|l| l.trim().starts_with("- ")) {
            assert!(line.contains('#'), "each entry has a reason: {line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_against_a_tenant_while_its_owner_watches_the_logs() {
    let config =
        tenant_toml(
            "everything",
            "alice",
            "active",
            &[("1.0.0", &guest("mcp_everything"))],
        ) + &format!("env = {{ MCP_STATE_KEY = {STATE_KEY:?} }}\nkeyvalue_max_bytes = 1048576\n");
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("everything", "", "alice").await;
    let url = format!("http://localhost:{}/t/everything/mcp", host.addr.port());
    // Both generations, one after the other, on the same tenant.
    let suite = tokio::task::spawn_blocking(move || {
        (
            run_suite(&LINE_2025, &url, "tenant"),
            run_suite(&LINE_2026, &url, "tenant"),
        )
    });
    let (run, entries) = viewer.entries_while(suite).await;
    assert_suite(&LINE_2025, &run.0);
    assert_suite(&LINE_2026, &run.1);

    let has = |level: &str, message: &str| {
        entries
            .iter()
            .any(|e| e["level"] == level && e["message"] == message)
    };
    assert!(has("log", "POST /mcp"), "the plain console.log-style line");
    assert!(has("info", "[INFO] Tool called: test_simple_text"));
    assert!(
        has("info", "[INFO] Tool execution started"),
        "the logging tool's own lines"
    );
    assert!(logged_starting(
        &entries,
        "error",
        "[ERROR] Tool test_error_handling failed"
    ));
    assert!(logged_starting(&entries, "debug", "[DEBUG] Params:"));
    let events: Vec<&Value> = entries.iter().filter(|e| e["type"] == "request").collect();
    assert!(
        events.len() > 30,
        "a request event per call: {}",
        events.len()
    );
    assert!(
        events
            .iter()
            .all(|e| e["path"] == "/mcp" && e["slug"] == "everything")
    );
    assert!(
        events
            .iter()
            .any(|e| e["method"] == "POST" && e["status"] == 200 && e["outcome"] == "ok")
    );
}

#[test]
fn the_suite_passes_against_a_single_component_host() {
    let state_key = format!("MCP_STATE_KEY={STATE_KEY}");
    let host = HostProcess::single(
        &guest("mcp_everything"),
        &["--guest-logs", "off", "--env", &state_key, "-S", "keyvalue"],
    );
    let url = format!("http://localhost:{}/mcp", host.addr.port());
    for line in [LINE_2025, LINE_2026] {
        let run = run_suite(&line, &url, "single");
        assert_suite(&line, &run);
    }
}

/// The TypeScript-SDK sample as a tenant whose instances are reused: the
/// suite's 2025 line as far as the SDK goes, each request logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_sample_passes_what_the_sdk_does() {
    let config = tenant_toml("ts", "alice", "active", &[("1.0.0", &mcp_ts_guest())])
        + "instance_reuse = 64\n";
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("ts", "", "alice").await;
    let url = format!("http://localhost:{}/t/ts/mcp", host.addr.port());
    let suite = tokio::task::spawn_blocking(move || run_suite(&LINE_2025_TS, &url, "mcp-ts"));
    let (run, entries) = viewer.entries_while(suite).await;
    assert_suite(&LINE_2025_TS, &run);
    assert!(
        entries
            .iter()
            .any(|e| e["level"] == "info" && e["message"] == "[INFO] Tool execution started"),
        "the logging tool's console lines"
    );
    assert!(logged_starting(
        &entries,
        "error",
        "[ERROR] Tool test_error_handling failed"
    ));
}
