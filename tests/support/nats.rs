//! A real `nats-server` for the cluster tests, and a host's view of the
//! cluster.

use super::host::HostProcess;
use super::{Lines, eventually};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        eventually(Duration::from_millis(20), async || {
            let status = self.cluster_status().await;
            if ready(&status) {
                Ok(())
            } else {
                Err(format!("cluster status never got there: {status}"))
            }
        })
        .await;
    }
}
