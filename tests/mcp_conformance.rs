//! The official MCP conformance suite (`@modelcontextprotocol/conformance`,
//! run with the Node 22 from `tests/mcp`) against `guests/mcp-everything`,
//! hosted as a tenant (reached by path, `/t/everything/mcp`, since Node
//! cannot resolve `*.localhost`) and in single-component mode (`/mcp`).
//! Every server scenario runs; only those in `tests/mcp/expected-failures.yaml`
//! may fail. The suite's own output goes to `target/mcp-conformance/*.log`.
//!
//! Needs `npm ci --prefix tests/mcp` (`.ci/run` does it).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::{HostProcess, guest, repo_root, target_dir, tenant_toml};

/// The only scenarios allowed to fail, and why (see the YAML file).
const EXPECTED_FAILURES: [&str; 4] = [
    "tools-call-sampling",
    "tools-call-elicitation",
    "elicitation-sep1034-defaults",
    "elicitation-sep1330-enums",
];

struct SuiteRun {
    passed: bool,
    total_line: String,
    log: PathBuf,
}

/// Runs every server scenario against `url`.
fn run_suite(url: &str, name: &str) -> SuiteRun {
    let dir = repo_root().join("tests/mcp");
    let node = dir.join("node_modules/.bin/node");
    let cli = dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && cli.exists(),
        "the suite is not installed: run `npm ci --prefix tests/mcp`"
    );
    let output = Command::new(node)
        .arg(cli)
        .args([
            "server",
            "--url",
            url,
            "--suite",
            "all",
            "--expected-failures",
        ])
        .arg(dir.join("expected-failures.yaml"))
        .output()
        .expect("running the conformance suite");
    let log_dir = target_dir().join("mcp-conformance");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join(format!("{name}.log"));
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

fn assert_suite(run: &SuiteRun) {
    assert!(
        run.passed,
        "unexpected conformance failures ({}); see {}",
        run.total_line,
        run.log.display()
    );
    // 32 scenarios: 4 expected failures of one check each.
    let log = std::fs::read_to_string(&run.log).unwrap();
    for scenario in EXPECTED_FAILURES {
        assert!(
            log.contains(&format!("✗ {scenario}")),
            "{scenario} was expected to fail"
        );
    }
    assert_eq!(
        log.matches("✓ ").count() + log.matches("✗ ").count(),
        32,
        "all 32 server scenarios ran"
    );
    assert_eq!(log.matches("✗ ").count(), EXPECTED_FAILURES.len());
}

#[test]
fn the_expected_failures_file_lists_exactly_the_justified_scenarios() {
    let text =
        std::fs::read_to_string(repo_root().join("tests/mcp/expected-failures.yaml")).unwrap();
    let listed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(|entry| entry.split('#').next().unwrap().trim())
        .collect();
    assert_eq!(listed, EXPECTED_FAILURES);
    for line in text.lines().filter(|l| l.trim().starts_with("- ")) {
        assert!(line.contains('#'), "each entry has a reason: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_passes_against_a_tenant_while_its_owner_watches_the_logs() {
    let config = tenant_toml(
        "everything",
        "alice",
        "active",
        &[("1.0.0", &guest("mcp_everything"))],
    );
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("everything", "", "alice").await;
    let url = format!("http://localhost:{}/t/everything/mcp", host.addr.port());
    let mut suite = tokio::task::spawn_blocking(move || run_suite(&url, "tenant"));

    let mut entries: Vec<Value> = Vec::new();
    let run = loop {
        tokio::select! {
            run = &mut suite => break run.unwrap(),
            frame = viewer.frame() => {
                if frame["type"] == "logs" {
                    entries.extend(frame["entries"].as_array().unwrap().iter().cloned());
                }
            }
        }
    };
    assert_suite(&run);

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
    assert!(entries.iter().any(|e| {
        e["level"] == "error"
            && e["message"]
                .as_str()
                .unwrap()
                .starts_with("[ERROR] Tool test_error_handling failed")
    }));
    assert!(entries.iter().any(|e| {
        e["level"] == "debug"
            && e["message"]
                .as_str()
                .unwrap()
                .starts_with("[DEBUG] Params:")
    }));
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
    let host = HostProcess::single(&guest("mcp_everything"), &["--guest-logs", "off"]);
    let run = run_suite(
        &format!("http://localhost:{}/mcp", host.addr.port()),
        "single",
    );
    assert_suite(&run);
}
