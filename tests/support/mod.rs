//! Harness for the integration tests: builds the sample guests (once per
//! test binary; cargo makes it a no-op when they are fresh), starts the real
//! `mctx-host` binary on a free port and talks to it over real HTTP.

#![allow(
    dead_code,
    unused_imports,
    reason = "the tests and each benchmark use different parts of the harness"
)]
#![allow(
    unreachable_pub,
    reason = "the harness is a module of every test binary, its items shared across them"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

pub mod pki;

mod host;
mod nats;
mod otlp;
mod tail;
mod viewer;
mod wasmtime;
mod workerd;

pub use host::*;
pub use nats::*;
pub use otlp::*;
pub use tail::*;
pub use viewer::*;
pub use wasmtime::*;
pub use workerd::*;

/// How long any single wait in a test may take before the test fails. A
/// safety net against hangs, never a synchronisation point.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// The target directory this test run uses (shared with the guests).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// A port nothing listens on now (for a listener the host opens itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Path of a built sample guest, e.g. `guest("hello")`.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo_root())
            .args([
                "build",
                "--manifest-path",
                "guests/Cargo.toml",
                "--target",
                "wasm32-wasip2",
                "--release",
            ])
            .status()
            .expect("running cargo to build the guests");
        assert!(
            status.success(),
            "building the guests failed (is the wasm32-wasip2 target installed?)"
        );
        target_dir().join("wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "no guest {}", path.display());
    path
}

/// One `[[tenants]]` table of a config file.
pub fn tenant_toml(slug: &str, owner: &str, status: &str, versions: &[(&str, &Path)]) -> String {
    let versions: Vec<String> = versions
        .iter()
        .map(|(v, path)| format!("{v:?} = {path:?}"))
        .collect();
    format!(
        "\n[[tenants]]\nslug = {slug:?}\nowner = {owner:?}\nstatus = {status:?}\nversions = {{ {} }}\n",
        versions.join(", ")
    )
}

/// The frames of a request event's `exception.stack`, innermost first.
pub fn stack_of(event: &serde_json::Value) -> Vec<&str> {
    event["exception"]["stack"]
        .as_array()
        .unwrap_or_else(|| panic!("no exception stack on {event}"))
        .iter()
        .map(|frame| frame.as_str().unwrap())
        .collect()
}

/// The session secret every test host runs with.
pub const TEST_SECRET: &str = "integration-tests-secret-0123456789abcdef";

/// A session token for `user`, signed with [`TEST_SECRET`].
pub fn token(user: &str) -> String {
    mctx_host::auth::Sessions::new(TEST_SECRET.as_bytes())
        .unwrap()
        .mint(user, Duration::from_secs(3600))
}

/// The JavaScript sample tenant, `guests/js-hello` (a module-form Worker
/// with a KV binding).
pub fn js_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| js_worker("js-hello")).clone()
}

/// `guests/mcp-ts`: an MCP server written with the official TypeScript SDK.
pub fn mcp_ts_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| js_worker("mcp-ts")).clone()
}

/// The Worker project `guests/{name}`, built with the repository's kit
/// (`guests/js-kit`, componentize-js) into `target/js/{name}.wasm` when it
/// or the kit is newer than the last build (a build takes about 10 s).
fn js_worker(name: &str) -> PathBuf {
    let kit = repo_root().join("guests/js-kit");
    assert!(
        kit.join("node_modules/@bytecodealliance/componentize-js")
            .exists(),
        "the JS kit is not installed: run `npm ci --prefix guests/js-kit`"
    );
    let dir = repo_root().join("guests").join(name);
    let out = target_dir().join(format!("js/{name}.wasm"));
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let files = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
    };
    let newest = files(dir.clone())
        .chain(files(dir.join("src")))
        .chain(files(kit.join("runtime")))
        .chain(files(kit.join("src")))
        .chain([kit.join("package-lock.json"), kit.join("bin/mctx-js.mjs")])
        .filter(|path| path.is_file())
        .filter_map(|path| modified(&path))
        .max();
    if modified(&out).is_none() || modified(&out) < newest {
        let status = Command::new("node")
            .arg(kit.join("bin/mctx-js.mjs"))
            .args(["build", "-o"])
            .arg(&out)
            .current_dir(&dir)
            .status()
            .expect("running node to build a JS tenant");
        assert!(status.success(), "building guests/{name} failed");
    }
    out
}

/// Runs `attempt` until it succeeds, every `every`, and fails the test
/// with its last `Err` after [`PATIENCE`]. Only for a state the test cannot
/// be told of (a count, a metric, a reload taking effect), never in place
/// of waiting on an event it can see.
pub async fn eventually<T>(
    every: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(last) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "not within {PATIENCE:?}: {last}"
                );
                tokio::time::sleep(every).await;
            }
        }
    }
}

/// Collects a child's output lines on a thread, for waiting on events.
pub(crate) struct Lines(Mutex<mpsc::Receiver<String>>);

impl Lines {
    pub(crate) fn spawn(reader: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines(Mutex::new(rx))
    }

    /// The next line satisfying `wanted` (others are skipped), or `None`
    /// when the stream ends first.
    pub(crate) fn wait(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let rx = self.0.lock().unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Some(line),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no matching line in time"),
            }
        }
    }

    /// The lines that have arrived, without waiting for more.
    pub(crate) fn arrived(&self) -> Vec<String> {
        self.0.lock().unwrap().try_iter().collect()
    }
}
