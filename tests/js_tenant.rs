//! The JavaScript sample tenant (`guests/js-hello`, componentized with
//! componentize-js) hosted as a tenant: it answers, and its five console
//! levels arrive as five entry levels.

mod support;

use support::{HostProcess, js_guest, tenant_toml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_levels_arrive_as_entry_levels() {
    let config = tenant_toml("js", "alice", "active", &[("1.0.0", &js_guest())]);
    let host = HostProcess::multi(&config, &[]);
    let mut viewer = host.viewer("js", "", "alice").await;

    let reply = host.get("localhost", "/t/js/v1/hi?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["runtime"], "javascript");
    assert_eq!(
        (
            echo["path"].as_str(),
            echo["tenant"].as_str(),
            echo["version"].as_str()
        ),
        (Some("/hi?x=1"), Some("js"), Some("1.0.0"))
    );

    let entries = viewer
        .request_entries(reply.header("x-request-id").unwrap())
        .await;
    let got: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["level"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(got[0], ("log", "GET /hi"), "console.log");
    assert_eq!(
        got[1],
        ("info", "[INFO] Request received: GET /hi?x=1"),
        "console.info"
    );
    assert_eq!(got[2].0, "debug", "console.debug: {}", got[2].1);
    assert_eq!(
        got[3],
        ("warn", "[WARN] This is what a warning looks like"),
        "console.warn"
    );
    assert_eq!(
        got[4],
        ("error", "[ERROR] This is what an error looks like"),
        "console.error"
    );
    assert_eq!(entries.last().unwrap()["type"], "request");

    let failed = host.get("localhost", "/t/js/fail").await;
    assert_eq!(failed.status, 500);
}
