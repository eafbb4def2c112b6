//! The JavaScript sample tenant (`guests/js-hello`, componentized with
//! componentize-js) hosted as a tenant: it answers, its five console
//! levels arrive as five entry levels, and a thrown error arrives as the
//! request's exception with the tenant's function names.

use crate::support;

use crate::support::{HostProcess, js_guest, tenant_toml};

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

    // A thrown error (one host: the 13 MB component compiles once): the
    // request ends as an exception whose stack names the tenant's functions.
    let thrown = host.get("localhost", "/t/js/throw").await;
    assert_eq!(thrown.status, 500);
    let entries = viewer
        .request_entries(thrown.header("x-request-id").unwrap())
        .await;
    let event = entries.last().unwrap();
    assert_eq!(
        (event["outcome"].as_str(), event["status"].as_u64()),
        (Some("exception"), Some(500)),
        "{event}"
    );
    let exception = &event["exception"];
    assert_eq!(exception["name"], "TypeError", "{event}");
    assert!(
        exception["message"]
            .as_str()
            .unwrap()
            .contains("cart is null"),
        "{exception}"
    );
    let stack = support::stack_of(event);
    assert!(
        stack[0].starts_with("priceOf (") && stack[1].starts_with("checkout ("),
        "innermost first, by function name: {stack:?}"
    );
    let reported = entries
        .iter()
        .find(|e| e["fields"]["exception"].is_object())
        .expect("the tenant's own line stays an entry");
    assert_eq!(reported["level"], "error");
}
