//! `mctx-js build` (guests/js-kit): a service-worker-form Worker built and
//! served, its instance reused; and what cannot work refused, each with a
//! message that says what to do: a Worker with no fetch handler (found when
//! its module runs at build time), a Node.js built-in, two KV bindings.

use std::process::Command;

use crate::support;
use crate::support::{HostProcess, WasmtimeServe, repo_root};

/// Runs the kit on `source` (written to a fresh project) with `args`;
/// its exit status and what it printed.
fn build(source: &str, args: &[&str]) -> (bool, String) {
    build_in(tempfile::tempdir().unwrap().path(), source, args)
}

/// [`build`] in `dir`, where the component is left as `out.wasm`.
fn build_in(dir: &std::path::Path, source: &str, args: &[&str]) -> (bool, String) {
    let kit = repo_root().join("guests/js-kit");
    assert!(
        kit.join("node_modules/esbuild").exists(),
        "the JS kit is not installed: run `npm ci --prefix guests/js-kit`"
    );
    std::fs::write(dir.join("worker.js"), source).unwrap();
    let output = Command::new("node")
        .arg(kit.join("bin/mctx-js.mjs"))
        .args(["build", "worker.js", "-o", "out.wasm"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running node");
    let said = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    assert_eq!(
        dir.join("out.wasm").exists(),
        output.status.success(),
        "a component only when the build succeeds: {said}"
    );
    (output.status.success(), said)
}

#[test]
fn a_worker_without_a_fetch_handler_fails_its_build_and_says_how_to_write_one() {
    let (built, said) = build("export const answer = 42;\n", &[]);
    assert!(!built, "{said}");
    assert!(
        said.contains(
            "this Worker has no fetch handler: export default { fetch(request, env, ctx)"
        ),
        "{said}"
    );
}

#[test]
fn a_node_builtin_and_a_second_kv_binding_are_refused_before_componentizing() {
    let (built, said) = build(
        "import { readFileSync } from \"node:fs\";\nexport default { fetch() { return new Response(readFileSync(\"x\")); } };\n",
        &[],
    );
    assert!(!built, "{said}");
    assert!(
        said.contains("Could not resolve \"node:fs\"")
            && said.contains("Node.js built-in modules are not available to a Worker"),
        "{said}"
    );

    let (built, said) = build(
        "export default { fetch() { return new Response(\"ok\"); } };\n",
        &["--kv", "A", "--kv", "B"],
    );
    assert!(!built, "{said}");
    assert!(said.contains("declare one binding"), "{said}");
}

/// The service-worker form, as older Workers are written: `respondWith`
/// answers, `event.waitUntil` work is done before the next request, and
/// the same instance serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_worker_form_worker_is_served_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (built, said) = build_in(
        dir.path(),
        "let n = 0;\n\
         addEventListener(\"fetch\", (event) => {\n\
           n += 1;\n\
           event.waitUntil(Promise.resolve().then(() => console.log(`done ${n}`)));\n\
           event.respondWith(new Response(`request ${n} at ${new URL(event.request.url).pathname}`));\n\
         });\n",
        &[],
    );
    assert!(built, "{said}");
    let host = HostProcess::single(
        &dir.path().join("out.wasm"),
        &["--max-instance-reuse-count", "10"],
    );
    for n in 1..=3 {
        let reply = host.get("localhost", "/sw").await;
        assert_eq!(
            (reply.status, reply.text()),
            (200, format!("request {n} at /sw"))
        );
    }
    drop(host);
    // A Host that is not an authority cannot move the path the Worker sees,
    // even under a host that passes it on (mctx-host refuses it at the edge).
    let wasmtime = WasmtimeServe::start(&dir.path().join("out.wasm"), &[]);
    let reply = support::send(
        wasmtime.addr,
        "GET",
        "localhost/admin?",
        "/sw",
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.text()),
        (200, "request 1 at /sw".to_string())
    );
}
