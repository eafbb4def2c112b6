//! The JavaScript sample tenant (`guests/js-hello`, a module-form Worker
//! built with `guests/js-kit`) hosted as a tenant: it answers, its five
//! console levels arrive as five entry levels, a thrown error arrives as
//! the request's exception with the tenant's function names; `env` carries
//! its secret (redacted when printed) and its KV binding; `ctx.waitUntil`
//! work ends before the request does; and with instance reuse every request
//! is answered by an instance whose module state carried over, an uncaught
//! error included.

use crate::support;

use crate::support::{HostProcess, js_guest, tenant_toml};

/// js-hello as tenant `js`, with `extra` keys in its table.
fn js_tenant(extra: &str) -> String {
    format!(
        "{}{extra}\n",
        tenant_toml("js", "alice", "active", &[("1.0.0", &js_guest())])
    )
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_gets_its_env_its_kv_binding_and_finishes_its_wait_until_work() {
    const API_KEY: &str = "sk-js-0123456789abcdef";
    let config = js_tenant(
        "env = { GREETING = \"hello\" }\nsecrets = { API_KEY = { env = \"MCTX_TEST_JS_KEY\" } }\n\
         keyvalue_max_bytes = 65536",
    );
    let host = HostProcess::multi_with_env(&config, &[], &[("MCTX_TEST_JS_KEY", API_KEY)]);
    let mut viewer = host.viewer("js", "", "alice").await;

    let reply = host.get("js.localhost", "/env").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "hasKey": true, "greeting": "hello" })
    );
    let entries = viewer
        .request_entries(reply.header("x-request-id").unwrap())
        .await;
    assert!(
        entries
            .iter()
            .any(|e| e["message"] == "calling the API with key [REDACTED]"),
        "the printed secret arrives redacted: {entries:?}"
    );

    for (path, value, keys) in [
        ("/kv?put=colour&value=blue", "blue", vec!["colour"]),
        ("/kv?put=size&value=9", "9", vec!["colour", "size"]),
        ("/kv?get=colour", "blue", vec!["colour", "size"]),
        (
            "/kv?delete=size&get=colour&prefix=c",
            "blue",
            vec!["colour"],
        ),
    ] {
        let reply = host.get("js.localhost", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(
            reply.json(),
            serde_json::json!({ "value": value, "keys": keys }),
            "{path}"
        );
    }

    // The response is sent first; the line written after it still belongs
    // to the request, and the request ends well once that work is done.
    let reply = host.get("js.localhost", "/later").await;
    assert_eq!(reply.text(), "sent before the work is done\n");
    let entries = viewer
        .request_entries(reply.header("x-request-id").unwrap())
        .await;
    let event = entries.last().unwrap();
    assert!(
        entries[..entries.len() - 1]
            .iter()
            .any(|e| e["message"] == "finished after the response"),
        "{entries:?}"
    );
    assert_eq!(
        (event["outcome"].as_str(), event["status"].as_u64()),
        (Some("ok"), Some(200)),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_instance_reuse_every_request_is_answered_and_module_state_carries_over() {
    let host = HostProcess::multi(&js_tenant("instance_reuse = 128"), &[]);
    let mut served = Vec::new();
    for _ in 0..100 {
        let reply = host.get("js.localhost", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        served.push(reply.json()["served"].as_u64().unwrap());
    }
    // An instance counts its requests; a new one starts again at 1.
    for pair in served.windows(2) {
        assert!(
            pair[1] == pair[0] + 1 || pair[1] == 1,
            "served counts: {served:?}"
        );
    }
    assert!(
        served.iter().filter(|&&n| n > 1).count() >= 90,
        "most requests reuse an instance: {served:?}"
    );

    // An uncaught error is the Worker's, not the instance's: the instance
    // answered it (500) intact and serves on, its state kept, as an
    // isolate would.
    assert_eq!(host.get("js.localhost", "/throw").await.status, 500);
    let after = host.get("js.localhost", "/").await;
    assert_eq!(after.status, 200);
    assert_eq!(
        after.json()["served"].as_u64().unwrap(),
        served.last().unwrap() + 2,
        "the instance that answered /throw serves the next request"
    );
}
