//! The host runtime over real HTTP against the real compiled guests:
//! routing, header injection, single-component mode, limits, trap
//! containment, configuration errors and per-request output capture.

use std::ffi::OsString;

use crate::support::{HostProcess, guest, run_failing, tenant_toml};
use serde_json::Value;

/// A config with every case routing has to tell apart.
fn tenants_config(extra_host: &str) -> String {
    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    let hello_versions = [
        ("1.0.0", hello.as_path()),
        ("1.2.0", &hello),
        ("2.0.0", &hello),
    ];
    [
        format!("[host]\n{extra_host}\n"),
        tenant_toml("hello", "alice", "active", &hello_versions),
        tenant_toml("sleepy", "alice", "inactive", &[("1.0.0", &hello)]),
        tenant_toml("bad", "bob", "active", &[("1.0.0", &misbehave)]),
    ]
    .concat()
}

fn header<'a>(echo: &'a Value, name: &str) -> &'a Value {
    &echo["headers"][name]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_subdomain_and_version() {
    let host = HostProcess::multi(&tenants_config(""), &[]);
    let cases = [
        ("/", "2.0.0", "/"),
        ("/v1/x?y=1", "1.2.0", "/x?y=1"),
        ("/v1.0.0/a/b", "1.0.0", "/a/b"),
        ("/v2", "2.0.0", "/"),
        ("/videos", "2.0.0", "/videos"),
    ];
    for (path, version, guest_path) in cases {
        let reply = host.get("hello.localhost", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(header(&echo, "x-tenant-version"), version, "{path}");
        assert_eq!(header(&echo, "x-tenant-slug"), "hello", "{path}");
        assert_eq!(echo["path"], guest_path, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_routing_on_the_base_domain_matches_subdomain_routing() {
    let host = HostProcess::multi(&tenants_config(""), &[]);
    for base in ["localhost", "127.0.0.1"] {
        let by_path = host.get(base, "/t/hello/v1/mcp?a=1").await.json();
        let by_host = host.get("hello.localhost", "/v1/mcp?a=1").await.json();
        assert_eq!(by_path["path"], "/mcp?a=1");
        assert_eq!(by_path["path"], by_host["path"]);
        for name in ["x-tenant-slug", "x-tenant-version"] {
            assert_eq!(header(&by_path, name), header(&by_host, name), "{name}");
        }
    }
    let root = host.get("localhost", "/t/hello").await.json();
    assert_eq!(root["path"], "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_inactive_and_foreign_get_json_errors() {
    let host = HostProcess::multi(&tenants_config(""), &[]);
    let cases = [
        ("nobody.localhost", "/", 404, "unknown tenant"),
        ("localhost", "/t/nobody/", 404, "unknown tenant"),
        ("hello.localhost", "/v3/x", 404, "no version matching v3"),
        (
            "hello.localhost",
            "/v1.1.0/",
            404,
            "no version matching v1.1.0",
        ),
        ("sleepy.localhost", "/", 503, "inactive"),
        ("localhost", "/t/sleepy/", 503, "inactive"),
        ("evil.example.com", "/t/hello/", 421, "does not serve"),
        ("localhost", "/no-such-endpoint", 404, "no such endpoint"),
    ];
    for (host_name, path, status, message) in cases {
        let reply = host.get(host_name, path).await;
        assert_eq!(reply.status, status, "{host_name}{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(message), "{host_name}{path}: {error}");
    }
    let health = host.get("localhost", "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["tenants"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_headers_are_injected_and_spoofs_overwritten() {
    let host = HostProcess::multi(&tenants_config(""), &[]);
    let reply = host
        .request(
            "POST",
            "hello.localhost",
            "/v1.0.0/echo",
            &[
                ("X-Tenant-Slug", "sleepy"),
                ("x-tenant-slug", "second-spoof"),
                ("X-Tenant-Version", "9.9.9"),
                ("X-Custom", "kept"),
                ("X-Multi", "one"),
                ("X-Multi", "two"),
                ("Authorization", "Bearer abc"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    let request_id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_string();
    assert_eq!(request_id.len(), 16);
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(header(&echo, "x-tenant-slug"), "hello", "one value, ours");
    assert_eq!(header(&echo, "x-tenant-version"), "1.0.0");
    assert_eq!(header(&echo, "x-custom"), "kept");
    assert_eq!(header(&echo, "x-multi"), &serde_json::json!(["one", "two"]));
    assert_eq!(header(&echo, "authorization"), "Bearer abc");
    // wasi:http gives the guest the Host as the request's authority.
    assert!(
        echo["authority"]
            .as_str()
            .unwrap()
            .starts_with("hello.localhost:"),
        "{echo}"
    );

    let again = host.get("hello.localhost", "/").await;
    assert_ne!(
        again.header("x-request-id"),
        Some(request_id.as_str()),
        "ids are per request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_component_mode_serves_every_path_unchanged() {
    let host = HostProcess::single(&guest("hello"), &["--guest-logs", "off"]);
    for path in ["/", "/v1/keep/this", "/t/not-routing?x=1", "/healthz"] {
        let reply = host.get("whatever.example", path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let echo = reply.json();
        assert_eq!(echo["path"], path);
        assert_eq!(header(&echo, "x-tenant-slug"), "default");
        assert_eq!(header(&echo, "x-tenant-version"), "0.0.0");
    }
    let health = host.get("localhost", "/.mctx/healthz").await;
    assert_eq!(health.json()["status"], "ok");

    let named = HostProcess::single(
        &guest("hello"),
        &["--slug", "my-app", "--guest-logs", "off"],
    );
    assert_eq!(
        header(&named.get("localhost", "/").await.json(), "x-tenant-slug"),
        "my-app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_guest_is_stopped_by_the_cpu_limit_while_others_keep_answering() {
    let host = HostProcess::multi(
        &tenants_config("cpu_limit_ms = 1000"),
        &["--guest-logs", "json"],
    );
    let spin = host.spawn_get("bad.localhost", "/spin");
    // Once the guest is spinning, another tenant must still answer.
    host.wait_for_line(|line| line.contains("[INFO] spinning"));
    for _ in 0..5 {
        assert_eq!(host.get("hello.localhost", "/quiet").await.status, 200);
    }
    let reply = spin.await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("CPU time limit (1000 ms)"), "{error}");
    // The guest was stopped on CPU time, well inside twice the limit (the
    // check runs every 10 ms epoch tick).
    let stopped = host.wait_for_line(|line| line.contains("exceeded the CPU limit"));
    let entry: Value = serde_json::from_str(&stopped).unwrap();
    assert_eq!(entry["level"], "error");
    assert_eq!(entry["requestId"], reply.header("x-request-id").unwrap());
    let message = entry["message"].as_str().unwrap();
    let used: u64 = message
        .split("(used ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..2000).contains(&used), "{message}");
    // The same tenant's next request gets a fresh instance.
    assert_eq!(host.get("bad.localhost", "/ok").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_past_the_limit_fails_only_that_request() {
    let host = HostProcess::multi(&tenants_config("memory_limit_mb = 32"), &[]);
    let reply = host.get("bad.localhost", "/oom").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("memory limit")
    );
    assert_eq!(host.get("bad.localhost", "/ok").await.status, 200);
    assert_eq!(host.get("hello.localhost", "/").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_are_contained_to_their_request() {
    let host = HostProcess::multi(&tenants_config(""), &["--guest-logs", "json"]);
    for path in ["/trap", "/stack"] {
        let reply = host.get("bad.localhost", path).await;
        assert_eq!(reply.status, 500, "{path}: {}", reply.text());
        assert!(reply.json()["error"].as_str().unwrap().contains("trap"));
        let id = reply.header("x-request-id").unwrap().to_string();
        if path == "/trap" {
            // The panic message the guest printed is captured too, before the trap.
            host.wait_for_line(|line| {
                line.contains(&id) && line.contains("misbehave: trap requested")
            });
        }
        let trap = host
            .wait_for_line(|line| line.contains(&id) && line.contains("[mctx] the guest trapped"));
        assert!(serde_json::from_str::<Value>(&trap).unwrap()["level"] == "error");
        assert_eq!(host.get("bad.localhost", "/ok").await.text(), "ok\n");
        assert_eq!(host.get("hello.localhost", "/").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_output_is_captured_with_its_request_id() {
    let host = HostProcess::single(&guest("hello"), &["--guest-logs", "json"]);
    let first = host.get("localhost", "/first").await;
    let second = host.get("localhost", "/second").await;
    for (reply, path) in [(first, "/first"), (second, "/second")] {
        let id = reply.header("x-request-id").unwrap().to_string();
        let mut got = Vec::new();
        while got.len() < 6 {
            let line = host.wait_for_line(|line| line.contains(&id));
            let entry: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(entry["slug"], "default");
            assert_eq!(entry["version"], "0.0.0");
            got.push((
                entry["level"].as_str().unwrap().to_string(),
                entry["message"].as_str().unwrap().to_string(),
            ));
        }
        let expected = [
            ("log", format!("hello: GET {path}")),
            ("info", format!("[INFO] request received: GET {path}")),
            ("debug", "[DEBUG] headers: 2".to_string()),
            (
                "warn",
                "[WARN] this is what a warning looks like".to_string(),
            ),
            (
                "error",
                "[ERROR] this is what an error looks like".to_string(),
            ),
            ("error", "stderr without a prefix".to_string()),
        ];
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(l, m)| (l.to_string(), m))
            .collect();
        assert_eq!(got, expected);
    }
}

fn config_error(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    // The smallest component: a header and nothing else, so no exports.
    std::fs::write(
        dir.path().join("empty-component.wasm"),
        b"\0asm\x0d\0\x01\0",
    )
    .unwrap();
    // Cut inside its last section (not at a fixed offset, which may fall
    // on a section boundary and leave a valid, smaller component).
    let hello_bytes = std::fs::read(guest("hello")).unwrap();
    std::fs::write(
        dir.path().join("truncated.wasm"),
        &hello_bytes[..hello_bytes.len() - 1],
    )
    .unwrap();
    let args: Vec<OsString> = vec![
        "serve".into(),
        "--config".into(),
        path.into(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    run_failing(&args)
}

fn tenant(slug: &str, versions: &str) -> String {
    format!(
        "[[tenants]]\nslug = {slug:?}\nowner = \"alice\"\nstatus = \"active\"\nversions = {{ {versions} }}\n"
    )
}

#[test]
fn broken_configs_are_refused_naming_file_tenant_and_problem() {
    let hello = format!("\"1.0.0\" = {:?}", guest("hello"));
    let cases = [
        (
            format!("{}\ncolour = \"red\"", tenant("a", &hello)),
            "unknown field `colour`",
        ),
        (
            tenant("Not_A_Slug", &hello),
            r#"tenant "Not_A_Slug" ([[tenants]] #1): invalid slug"#,
        ),
        (
            format!("{}{}", tenant("twin", &hello), tenant("twin", &hello)),
            "duplicate slug",
        ),
        (
            tenant("v", "\"latest\" = \"x.wasm\""),
            r#"tenant "v" ([[tenants]] #1): version "latest" is not semver"#,
        ),
        (
            tenant("gone", "\"1.0.0\" = \"missing.wasm\""),
            r#"tenant "gone" version 1.0.0: component"#,
        ),
        (
            tenant("core", "\"1.0.0\" = \"core.wasm\""),
            "core WebAssembly module, not a component",
        ),
        (
            tenant("empty", "\"1.0.0\" = \"empty-component.wasm\""),
            "not a wasi:http component",
        ),
        (
            tenant("cut", "\"1.0.0\" = \"truncated.wasm\""),
            "invalid or truncated component",
        ),
    ];
    for (config, expected) in cases {
        let stderr = config_error(&config);
        assert!(stderr.contains("broken.toml"), "names the file: {stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
    assert!(
        config_error(&tenant("gone", "\"1.0.0\" = \"missing.wasm\"")).contains("file not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_logging_levels_are_taken_as_given() {
    let host = HostProcess::single(&guest("structured_log"), &["--guest-logs", "json"]);
    let reply = host.get("localhost", "/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.header("x-request-id").unwrap().to_string();
    let expected = [
        ("debug", "trace message"),
        ("debug", "db: debug message"),
        ("info", "info message"),
        ("warn", "warn message"),
        ("error", "error message"),
        ("error", "critical message\nwith a second line"),
        ("info", "[ERROR] stays info"),
    ];
    for (level, message) in expected {
        let entry: Value =
            serde_json::from_str(&host.wait_for_line(|line| line.contains(&id))).unwrap();
        assert_eq!(
            (
                entry["level"].as_str().unwrap(),
                entry["message"].as_str().unwrap()
            ),
            (level, message)
        );
    }
}
