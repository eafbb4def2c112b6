//! The dashboard in a real browser, over https: Debian's Chromium driven by
//! `tests/browser/dashboard.mjs` (playwright-core, no browser download)
//! against the real host. The script asserts; this test starts the host,
//! runs it and fails with its output if it fails.
//!
//! Needs `apt-get install chromium` and `npm ci --prefix tests/browser`
//! (`.ci/run` does both). `MCTX_SCREENSHOTS=docs` saves the screenshots the
//! README shows.

use crate::support;

use std::process::Command;

use crate::support::pki::Ca;
use crate::support::{HostProcess, guest, repo_root, tenant_toml};

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let browser_dir = repo_root().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run `apt-get install chromium` (or set CHROMIUM)"
    );

    let (hello, misbehave) = (guest("hello"), guest("misbehave"));
    let config = [
        tenant_toml(
            "hello",
            "alice",
            "active",
            &[("1.0.0", &hello), ("1.1.0", &hello)],
        ),
        // Its logs are kept: the modal's "Load earlier" pages back.
        "[tenants.logs]\nretain = \"1h\"\n".to_string(),
        tenant_toml("bad", "alice", "active", &[("1.0.0", &misbehave)]),
        tenant_toml("sleepy", "alice", "inactive", &[("1.0.0", &hello)]),
        tenant_toml("bobs", "bob", "active", &[("1.0.0", &hello)]),
    ]
    .concat();
    // Alice is an admin too: the script deploys a server of its own.
    let config = format!("[auth]\nadmins = [\"alice\"]\n{config}");
    // Over https, as a real deployment: a CA made here, trusted by Node
    // (NODE_EXTRA_CA_CERTS) and, in Chromium, only the host key this CA
    // signed (--ignore-certificate-errors-spki-list names that key alone;
    // every other certificate is still verified).
    let ca = Ca::new("dashboard test CA");
    let cert = ca.host("host");
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let host = HostProcess::multi(&config, &["--tls-cert", &cert_path, "--tls-key", &key_path]);

    let mut command = Command::new("node");
    command
        .arg(browser_dir.join("dashboard.mjs"))
        .env(
            "MCTX_URL",
            format!("https://localhost:{}", host.addr.port()),
        )
        .env("MCTX_SPKI", &cert.spki_sha256)
        .env("NODE_EXTRA_CA_CERTS", &ca.pem)
        .env("MCTX_TOKEN", support::token("alice"))
        .env("MCTX_WASM", &hello)
        .env("CHROMIUM", &chromium);
    if let Some(dir) = std::env::var_os("MCTX_SCREENSHOTS") {
        command.env("MCTX_SCREENSHOTS", repo_root().join(dir));
    }
    let output = command
        .output()
        .expect("running node (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser checks passed"), "{stdout}");
}
