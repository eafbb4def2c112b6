//! Plain `wasmtime serve`, for the parity tests and the benchmark.

use super::Lines;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `wasmtime` binary: `WASMTIME`, else `$MCTX_TOOLS_DIR/bin` or
/// `~/.cache/mctx-tools/bin` (where `.ci/run` caches it), else `PATH`.
pub fn wasmtime_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WASMTIME") {
        return path.into();
    }
    let tools = std::env::var_os("MCTX_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/mctx-tools"))
        });
    if let Some(cached) = tools
        .map(|dir| dir.join("bin/wasmtime"))
        .filter(|p| p.exists())
    {
        return cached;
    }
    let on_path = Command::new("wasmtime")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        on_path,
        "no wasmtime binary: cargo install wasmtime-cli@48.0.8 --locked --root ~/.cache/mctx-tools (.ci/run does it)"
    );
    "wasmtime".into()
}

/// A running `wasmtime serve -Scli`, killed when dropped.
pub struct WasmtimeServe {
    child: Child,
    pub addr: SocketAddr,
    /// Lines it printed on stdout (the guests' stdout).
    stdout: Lines,
}

impl WasmtimeServe {
    pub fn start(component: &Path, extra: &[&str]) -> Self {
        let binary = wasmtime_binary();
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .expect("running wasmtime");
        let version = String::from_utf8_lossy(&version.stdout).into_owned();
        assert!(
            version.starts_with("wasmtime 48."),
            "expected wasmtime 48, found {version}"
        );
        // A free port: wasmtime serve does not report the one it got for :0.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(binary)
            .args(["serve", "-Scli", "--addr", &addr.to_string()])
            .args(extra)
            .arg(component)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wasmtime serve");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stdout = Lines::spawn(stdout);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("Serving HTTP on") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "wasmtime serve exited before serving"
            );
        }
        // Keep draining its stderr so it never blocks.
        std::thread::spawn(move || for _ in stderr.lines() {});
        WasmtimeServe {
            child,
            addr,
            stdout,
        }
    }

    /// The next stdout line that satisfies `wanted`, skipping others.
    pub fn wait_for_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.stdout
            .wait(wanted)
            .expect("the process's stdout ended before such a line")
    }
}

impl WasmtimeServe {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
