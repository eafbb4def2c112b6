//! The real `mctx-host serve` as a child process, its HTTP client
//! (`send`, `Reply`) and one-shot runs of the binary.

use super::{Lines, PATIENCE, TEST_SECRET, target_dir};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `mctx-host`, killed when dropped.
pub struct HostProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Lines the host printed on stdout after its banner.
    stdout: Lines,
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

    /// [`HostProcess::multi_at`] with extra environment variables.
    pub fn multi_at_with_env(path: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
        args.extend(extra.iter().map(OsString::from));
        Self::start_with_env(args, tempfile::tempdir().unwrap(), env)
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
        let stdout = Lines::spawn(stdout);
        HostProcess {
            child,
            addr,
            stdout,
            _dir: dir,
        }
    }

    /// The next stdout line that satisfies `wanted`, skipping others.
    pub fn wait_for_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        self.stdout
            .wait(wanted)
            .expect("the process's stdout ended before such a line")
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

/// What `/metrics` answers on `addr` (a host's `--metrics-addr`).
pub async fn scrape(addr: &str) -> String {
    send(
        addr.parse().unwrap(),
        "GET",
        addr,
        "/metrics",
        &[],
        Bytes::new(),
    )
    .await
    .text()
}

/// The sum of the samples of `metrics` whose series starts with `prefix`
/// (0 when there is none).
pub fn metric_sum(metrics: &str, prefix: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(prefix))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
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
