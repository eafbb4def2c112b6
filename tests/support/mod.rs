//! Harness for the integration tests: builds the sample guests (once per
//! test binary; cargo makes it a no-op when they are fresh), starts the real
//! `mctx-host` binary on a free port and talks to it over real HTTP.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    unreachable_pub,
    reason = "the harness is a module of every test binary, its items shared across them"
)]

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

pub mod pki;

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

/// The JavaScript sample tenant, `guests/js-hello`, built with
/// componentize-js when its sources are newer than the last build (once per
/// test binary at most; a build takes about 10 s).
pub fn js_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = repo_root().join("guests/js-hello");
            assert!(
                dir.join("node_modules/@bytecodealliance/componentize-js")
                    .exists(),
                "componentize-js is not installed: run `npm ci --prefix guests/js-hello`"
            );
            let out = target_dir().join("js/js-hello.wasm");
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let sources = [
                "app.js",
                "exceptions.js",
                "console-levels.js",
                "build.mjs",
                "package-lock.json",
            ];
            let newest = sources.iter().filter_map(|f| modified(&dir.join(f))).max();
            if modified(&out).is_none() || modified(&out) < newest {
                let status = Command::new("node")
                    .arg(dir.join("build.mjs"))
                    .arg(&out)
                    .status()
                    .expect("running node to build the JS tenant");
                assert!(status.success(), "building guests/js-hello failed");
            }
            out
        })
        .clone()
}

/// A running `mctx-host`, killed when dropped.
pub struct HostProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Lines the host printed on stdout after its banner.
    stdout: Mutex<mpsc::Receiver<String>>,
    _dir: tempfile::TempDir,
}

impl HostProcess {
    /// `mctx-host serve <component> <extra…>` on a free port.
    pub fn single(component: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<OsString> = vec!["serve".into(), component.into()];
        args.extend(extra.iter().map(OsString::from));
        Self::start(args, tempfile::tempdir().unwrap())
    }

    /// `mctx-host serve --config <file> <extra…>` with `config` written to a
    /// temporary file.
    pub fn multi(config: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, config).unwrap();
        let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        Self::start(args, dir)
    }

    /// Like [`HostProcess::multi`], with extra environment variables for
    /// the host process (secrets from `{ env = "…" }`).
    pub fn multi_with_env(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, config).unwrap();
        let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        Self::start_with_env(args, dir, env)
    }

    /// `mctx-host serve --config <path> <extra…>` with a tenants file the
    /// test owns (to change it and reload, or to restart on it); pass
    /// `--state-dir` in `extra` to keep deployments across restarts.
    pub fn multi_at(path: &Path, extra: &[&str]) -> Self {
        let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        Self::start(args, tempfile::tempdir().unwrap())
    }

    fn start(args: Vec<OsString>, dir: tempfile::TempDir) -> Self {
        Self::start_with_env(args, dir, &[])
    }

    fn start_with_env(
        mut args: Vec<OsString>,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Self {
        if !args.iter().any(|a| a == "--addr") {
            args.extend(["--addr".into(), "127.0.0.1:0".into()]);
        }
        if !args.iter().any(|a| a == "--cache-dir" || a == "--no-cache") {
            args.push("--cache-dir".into());
            args.push(target_dir().join("test-artifact-cache").into());
        }
        // Each host its own deployments, never the user's.
        if args.iter().any(|a| a == "--config") && !args.iter().any(|a| a == "--state-dir") {
            args.push("--state-dir".into());
            args.push(dir.path().join("state").into());
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_mctx-host"));
        command.envs(env.iter().copied());
        // `--dev` is about running without a configured secret.
        if args.iter().any(|a| a == "--dev") {
            command.env_remove("MCTX_SESSION_SECRET");
        } else {
            command.env("MCTX_SESSION_SECRET", TEST_SECRET);
        }
        let mut child = command
            .args(&args)
            // Keep the test output to what matters; RUST_LOG still wins.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mctx-host");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        stdout.read_line(&mut banner).expect("reading the banner");
        let addr = banner
            .trim()
            .strip_prefix("mctx-host listening on http://")
            .or_else(|| {
                banner
                    .trim()
                    .strip_prefix("mctx-host listening on https://")
            })
            .unwrap_or_else(|| {
                panic!("unexpected first line from mctx-host: {banner:?} (args {args:?})")
            })
            .parse()
            .expect("banner has an address");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        HostProcess {
            child,
            addr,
            stdout: Mutex::new(rx),
            _dir: dir,
        }
    }

    /// The next stdout line that satisfies `wanted`, skipping others.
    pub fn wait_for_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        next_line(&self.stdout, wanted)
    }

    /// Sends a request with `Host: {host}` (the real port appended).
    pub async fn request(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        send(
            self.addr,
            method,
            &format!("{host}:{}", self.addr.port()),
            path,
            headers,
            Bytes::new(),
        )
        .await
    }

    pub async fn get(&self, host: &str, path: &str) -> Reply {
        self.request("GET", host, path, &[]).await
    }

    /// Sends a GET and returns as soon as the response head arrives, with
    /// the body still streaming, and the connection's task: abort it to
    /// hang up, as a client that leaves does.
    pub async fn get_head(
        &self,
        host: &str,
        path: &str,
    ) -> (
        http::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ) {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connecting to the host");
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        let connection = tokio::spawn(connection);
        let request = http::Request::get(path)
            .header("host", format!("{host}:{}", self.addr.port()))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let response = sender.send_request(request).await.expect("a response head");
        (response, connection)
    }

    /// Starts a GET in the background, for requests that run for a while.
    pub fn spawn_get(&self, host: &str, path: &str) -> tokio::task::JoinHandle<Reply> {
        let (addr, path) = (self.addr, path.to_string());
        let host = format!("{host}:{}", addr.port());
        tokio::spawn(async move { send(addr, "GET", &host, &path, &[], Bytes::new()).await })
    }
}

impl HostProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the host at once (SIGKILL), as a crash does.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the host to exit by itself (at most the harness's patience).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the host") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the host did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`HUP`, `TERM`…) without waiting for anything.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Sends SIGTERM and waits for the host to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("waiting for the host to exit")
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The next line from a process's stdout that satisfies `wanted`, within
/// the harness's patience.
fn next_line(lines: &Mutex<mpsc::Receiver<String>>, wanted: impl Fn(&str) -> bool) -> String {
    let rx = lines.lock().unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if wanted(&line) => return line,
            Ok(_) => continue,
            Err(e) => panic!("no matching line from the process: {e}"),
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connecting to the host");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body)).expect("valid request");
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("the host answered in time")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("reading the body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Runs `mctx-host <args>`, expecting it to refuse to start; returns its
/// stderr. If it starts serving instead, it is stopped and the test fails.
pub fn run_failing(args: &[OsString]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mctx-host"))
        .args(args)
        .env_remove("MCTX_SESSION_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running mctx-host");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    if !first_line.is_empty() {
        let _ = child.kill();
        panic!("mctx-host {args:?} started serving: {first_line}");
    }
    let output = child.wait_with_output().expect("waiting for mctx-host");
    assert!(
        !output.status.success(),
        "mctx-host {args:?} exited successfully"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `mctx-host <args>` to completion; returns (success, stdout, stderr).
pub fn run_command(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mctx-host"));
    command.args(args).env_remove("MCTX_SESSION_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("running mctx-host");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.success(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

/// Collects a child's output lines on a thread, for waiting on events.
struct Lines(Mutex<mpsc::Receiver<String>>);

impl Lines {
    fn spawn(reader: impl std::io::Read + Send + 'static) -> Self {
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
    fn wait(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
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
    fn arrived(&self) -> Vec<String> {
        self.0.lock().unwrap().try_iter().collect()
    }
}

/// A running `mctx-host tail`, killed when dropped.
pub struct TailProcess {
    child: Child,
    stdout: Lines,
    stderr: Lines,
}

impl TailProcess {
    /// `mctx-host tail <args…>` with `MCTX_TOKEN` set to `token` (if any).
    pub fn start(args: &[&str], token: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mctx-host"));
        command.arg("tail").args(args).env_remove("MCTX_TOKEN");
        if let Some(token) = token {
            command.env("MCTX_TOKEN", token);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting mctx-host tail");
        let stdout = Lines::spawn(child.stdout.take().unwrap());
        let stderr = Lines::spawn(child.stderr.take().unwrap());
        TailProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line satisfying `wanted`.
    pub fn stdout_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.stdout.wait(wanted).expect("tail's stdout ended")
    }

    /// The next stderr line satisfying `wanted`.
    pub fn stderr_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.stderr.wait(wanted).expect("tail's stderr ended")
    }

    /// What tail has written on stderr so far (and not yet been waited for).
    pub fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.arrived()
    }

    /// Waits for tail to exit; returns whether it succeeded and its stderr.
    pub fn exit(mut self) -> (bool, String) {
        let mut stderr = Vec::new();
        while let Some(line) = self.stderr.wait(|_| true) {
            stderr.push(line);
        }
        let status = self.child.wait().expect("waiting for tail");
        (status.success(), stderr.join("\n"))
    }
}

impl Drop for TailProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    stdout: Mutex<mpsc::Receiver<String>>,
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
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
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
            stdout: Mutex::new(rx),
        }
    }

    /// The next stdout line that satisfies `wanted`, skipping others.
    pub fn wait_for_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        next_line(&self.stdout, wanted)
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

/// A log viewer: a real WebSocket client on `/log-stream/{slug}`.
pub struct Viewer {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

/// Why a viewer was refused: the HTTP status and the JSON `error`.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

impl HostProcess {
    /// Opens `/log-stream/{slug}?{query}` on the control plane as `user`.
    pub async fn viewer(&self, slug: &str, query: &str, user: &str) -> Viewer {
        let cookie = format!("session={}", token(user));
        self.try_viewer(
            &format!("/log-stream/{slug}?{query}"),
            &[("cookie", &cookie)],
        )
        .await
        .unwrap_or_else(|refused| panic!("viewer refused: {refused:?}"))
    }

    /// Opens a log stream at `path` with exactly `headers`.
    pub async fn try_viewer(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Viewer, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://localhost:{}{path}", self.addr.port())
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(Viewer { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                let error = serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|v| v["error"].as_str().unwrap_or_default().to_string())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
                Err(Refused {
                    status: response.status().as_u16(),
                    error,
                })
            }
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        }
    }
}

/// What a viewer can receive.
#[derive(Debug)]
pub enum Received {
    /// A JSON frame (`logs`, `dropped`, `closing`).
    Frame(serde_json::Value),
    Ping,
    /// The close frame's code and reason, or `None` when the socket ended.
    Closed(Option<(u16, String)>),
}

impl Viewer {
    /// The next thing the host sent.
    pub async fn receive(&mut self) -> Received {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the host sent something in time");
            return match next {
                Some(Ok(Message::Text(text))) => {
                    Received::Frame(serde_json::from_str(&text).expect("frames are JSON"))
                }
                Some(Ok(Message::Ping(_))) => Received::Ping,
                Some(Ok(Message::Close(frame))) => {
                    Received::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Received::Closed(None),
            };
        }
    }

    /// The next text frame, unparsed (`None` once the stream has closed):
    /// for counting without paying for JSON parsing.
    pub async fn text_frame(&mut self) -> Option<String> {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => return Some(text.to_string()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// A frame that has already arrived, without waiting for one.
    pub fn try_frame(&mut self) -> Option<serde_json::Value> {
        use futures_util::FutureExt as _;
        loop {
            match self.receive().now_or_never()? {
                Received::Frame(frame) => return Some(frame),
                Received::Ping => continue,
                Received::Closed(close) => panic!("the stream closed: {close:?}"),
            }
        }
    }

    /// The next JSON frame (pings are answered and skipped). Pings do not
    /// extend the wait: a frame that never comes fails the test.
    pub async fn frame(&mut self) -> serde_json::Value {
        let next = async {
            loop {
                match self.receive().await {
                    Received::Frame(frame) => return frame,
                    Received::Ping => continue,
                    Received::Closed(close) => panic!("the stream closed: {close:?}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("a frame arrived in time")
    }

    /// Entries from `logs` frames until `done` says the last one is there;
    /// panics on any other frame.
    pub async fn entries_until(
        &mut self,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        loop {
            let frame = self.frame().await;
            assert_eq!(frame["type"], "logs", "unexpected frame {frame}");
            for entry in frame["entries"].as_array().unwrap() {
                entries.push(entry.clone());
                if done(entry) {
                    return entries;
                }
            }
        }
    }

    /// Closes the socket, as a browser closing the modal does.
    pub async fn close(&mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Every entry of one request, up to and including its request event.
    pub async fn request_entries(&mut self, request_id: &str) -> Vec<serde_json::Value> {
        self.entries_until(|e| e["type"] == "request" && e["requestId"] == request_id)
            .await
    }
}

/// A real `nats-server` with JetStream on a free port, killed when dropped.
/// Its storage directory outlives restarts, as a real server's disk does.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    store: tempfile::TempDir,
    jetstream: bool,
    /// Arguments that make clients authenticate (`--auth TOKEN`, `--user`…).
    auth: Vec<String>,
}

impl NatsServer {
    /// Debian's nats-server (tests/setup.sh installs it).
    fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("NATS_SERVER") {
            return path.into();
        }
        ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("no nats-server: apt-get install nats-server (tests/setup.sh does it)")
    }

    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// A server without JetStream: a misconfiguration the hosts must survive.
    pub fn start_without_jetstream() -> Self {
        Self::start_with(false)
    }

    /// A server (with JetStream) that admits only clients that authenticate
    /// as `auth` says: `["--auth", token]`, `["--user", u, "--pass", p]`.
    pub fn start_with_auth(auth: &[&str]) -> Self {
        let mut server = Self::unstarted(true);
        server.auth = auth.iter().map(|a| a.to_string()).collect();
        server.launch();
        server
    }

    fn start_with(jetstream: bool) -> Self {
        let mut server = Self::unstarted(jetstream);
        server.launch();
        server
    }

    fn unstarted(jetstream: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        NatsServer {
            child: None,
            port,
            store: tempfile::tempdir().unwrap(),
            jetstream,
            auth: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server and returns once it says it is ready.
    fn launch(&mut self) {
        let mut command = Command::new(Self::binary());
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            command.arg("-js").arg("-sd").arg(self.store.path());
        }
        command.args(&self.auth);
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting nats-server");
        let lines = Lines::spawn(child.stderr.take().unwrap());
        lines
            .wait(|line| line.contains("Server is ready"))
            .expect("nats-server exited before it was ready");
        // Keep draining its log so that it never blocks on a full pipe.
        let rx = lines.0.into_inner().unwrap();
        std::thread::spawn(move || rx.into_iter().for_each(drop));
        self.child = Some(child);
    }

    /// Kills the server at once (SIGKILL), as a crash does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a host's cluster status says another host watches `slug`.
pub fn watched_elsewhere(status: &serde_json::Value, slug: &str) -> bool {
    status["watchedElsewhere"]
        .as_array()
        .is_some_and(|slugs| slugs.iter().any(|s| s == slug))
}

impl HostProcess {
    /// The `cluster` part of the host's `/healthz`.
    pub async fn cluster_status(&self) -> serde_json::Value {
        self.get("localhost", "/healthz").await.json()["cluster"].clone()
    }

    /// Waits until the host's cluster status satisfies `ready` (it changes
    /// as NATS delivers other hosts' claims): polls, up to [`PATIENCE`].
    pub async fn wait_for_cluster(&self, ready: impl Fn(&serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let status = self.cluster_status().await;
            if ready(&status) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "cluster status never got there: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
