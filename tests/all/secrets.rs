//! What a tenant is given, against the real binary: `env` and `secrets`
//! reach the guest; a printed secret arrives redacted in every form; a
//! missing or unsafe secret source refuses the start.

use super::outbound::tenant;
use crate::support;
use crate::support::{HostProcess, run_failing};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_secrets_reach_the_guest_and_printed_secrets_arrive_redacted() {
    const API_KEY: &str = "sk-test-0123456789abcdef";
    const DB_URL: &str = "postgres://app:hunter22@db.internal/app";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-url");
    std::fs::write(&file, format!("{DB_URL}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = tenant(
        "secretive",
        &format!(
            "env = {{ MODE = \"demo\" }}\nsecrets = {{ API_KEY = {{ env = \"MCTX_TEST_API_KEY\" }}, \
             DB_URL = {{ file = {file:?} }} }}"
        ),
    );
    let host = HostProcess::multi_with_env(&config, &[], &[("MCTX_TEST_API_KEY", API_KEY)]);
    let mut viewer = host.viewer("secretive", "", "alice").await;
    for (name, value) in [("MODE", "demo"), ("API_KEY", API_KEY), ("DB_URL", DB_URL)] {
        let reply = host
            .get("secretive.localhost", &format!("/env?name={name}"))
            .await;
        assert_eq!(reply.json()["value"], value, "the guest sees {name}");
        let id = reply.header("x-request-id").unwrap().to_string();
        let entries = viewer.request_entries(&id).await;
        let printed = entries
            .iter()
            .find(|e| e["message"].as_str().unwrap().starts_with("env "))
            .unwrap();
        let expected = if name == "MODE" { value } else { "[REDACTED]" };
        assert_eq!(printed["message"], format!("env {name}={expected}"));
    }
    let cookie = format!("session={}", support::token("alice"));
    for (path, host_name) in [
        ("/healthz", "localhost"),
        ("/dev/servers/secretive", "localhost"),
    ] {
        let page = host
            .request("GET", host_name, path, &[("cookie", &cookie)])
            .await
            .text();
        assert!(
            !page.contains(API_KEY) && !page.contains("hunter22"),
            "{path} shows no secret"
        );
        if path.starts_with("/dev") {
            assert!(page.contains("MODE, API_KEY, DB_URL"), "names only: {page}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_in_every_form_a_guest_prints_them() {
    const API_KEY: &str = "sk-test-0123456789abcdef";
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    };
    let (lf, crlf) = (
        write("lf", "first-line-secret\nsecond-line-secret\n"),
        write("crlf", "first-crlf-secret\r\nsecond-crlf-secret\r\n"),
    );
    let config = tenant(
        "secretive",
        &format!(
            "secrets = {{ API_KEY = {{ env = \"MCTX_TEST_API_KEY\" }}, LF = {{ file = {lf:?} }}, \
             CRLF = {{ file = {crlf:?} }} }}"
        ),
    );
    let host = HostProcess::multi_with_env(&config, &[], &[("MCTX_TEST_API_KEY", API_KEY)]);
    let mut viewer = host.viewer("secretive", "", "alice").await;
    let clear = [
        API_KEY,
        "first-line-secret",
        "second-line-secret",
        "first-crlf-secret",
        "second-crlf-secret",
    ];
    for (name, form) in [
        ("LF", ""),
        ("CRLF", ""),
        ("API_KEY", "json"),
        ("LF", "json"),
        ("API_KEY", "url"),
        ("API_KEY", "base64"),
    ] {
        let reply = host
            .get(
                "secretive.localhost",
                &format!("/env?name={name}&as={form}"),
            )
            .await;
        assert_eq!(reply.status, 200);
        let id = reply.header("x-request-id").unwrap().to_string();
        let entries = viewer.request_entries(&id).await;
        let shown = serde_json::to_string(&entries).unwrap();
        assert!(shown.contains("[REDACTED]"), "{name} as {form:?}: {shown}");
        for secret in clear {
            assert!(
                !shown.contains(secret),
                "{name} as {form:?} shows {secret}: {shown}"
            );
        }
        let encoded: String = API_KEY.bytes().map(|b| format!("%{b:02X}")).collect();
        assert!(!shown.contains(&encoded), "{shown}");
        assert!(
            !shown.contains("c2stdGVzdC0wMTIzNDU2Nzg5YWJjZGVm"),
            "{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unsafe_secret_source_is_refused_naming_tenant_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::write(&shared, "x").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = tenant(
        "needy",
        &format!(
            "secrets = {{ TOKEN = {{ env = \"MCTX_TEST_NEVER_SET\" }}, CERT = {{ file = {shared:?} }} }}"
        ),
    );
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, config).unwrap();
    let args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
    let stderr = run_failing(&args);
    for expected in [
        r#"tenant "needy": secret "TOKEN""#,
        "MCTX_TEST_NEVER_SET",
        r#"tenant "needy": secret "CERT""#,
        "readable by group or others",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}
