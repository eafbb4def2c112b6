//! Cloudflare's `workerd` (npm `workerd`, installed in `tests/workerd` by
//! `tests/setup.sh`), serving Workers from their source: the anchor the
//! benchmark measures JavaScript tenants against. Never part of the host.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, repo_root};

/// A running `workerd serve`, killed when dropped.
pub struct Workerd {
    child: Child,
    /// One address per Worker, in the order given.
    pub addrs: Vec<SocketAddr>,
    /// When it was spawned.
    pub spawned: Instant,
    _dir: tempfile::TempDir,
}

impl Workerd {
    /// `count` copies of the module-form Worker `worker` (one file, no
    /// bindings), each on a socket of its own; their console output goes to
    /// /dev/null.
    pub fn start(worker: &Path, count: usize) -> Self {
        let binary = repo_root().join("tests/workerd/node_modules/.bin/workerd");
        assert!(
            binary.exists(),
            "workerd is not installed: run `npm ci --prefix tests/workerd` (tests/setup.sh does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(worker, dir.path().join("worker.js")).unwrap();
        let addrs: Vec<SocketAddr> = (0..count)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let services: Vec<String> = (0..count)
            .map(|i| format!("(name = \"w{i}\", worker = .worker)"))
            .collect();
        let sockets: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                format!("(name = \"s{i}\", address = \"{addr}\", http = (), service = \"w{i}\")")
            })
            .collect();
        let config = format!(
            "using Workerd = import \"/workerd/workerd.capnp\";\n\
             const config :Workerd.Config = (\n  services = [{}],\n  sockets = [{}],\n);\n\
             const worker :Workerd.Worker = (\n  modules = [(name = \"worker.js\", esModule = embed \"worker.js\")],\n  \
             compatibilityDate = \"2025-09-01\",\n);\n",
            services.join(", "),
            sockets.join(", ")
        );
        std::fs::write(dir.path().join("config.capnp"), config).unwrap();
        let spawned = Instant::now();
        let child = Command::new(binary)
            .args(["serve", "config.capnp"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting workerd");
        let workerd = Workerd {
            child,
            addrs,
            spawned,
            _dir: dir,
        };
        workerd.wait_listening();
        workerd
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Until every socket accepts connections (what workerd prints is not
    /// meant to be read by programs, and there is one socket per Worker).
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in &self.addrs {
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "workerd did not listen on {addr}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
