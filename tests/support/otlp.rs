//! An OTLP/HTTP receiver as a child process: `tests/otlp/receiver.py`,
//! which decodes what it is sent with the OpenTelemetry project's protobuf
//! definitions (`opentelemetry-proto`, in the tests' Python venv).

use super::{Lines, repo_root};
use std::process::{Child, Command, Stdio};

/// A running receiver, killed when dropped.
pub struct OtlpReceiver {
    child: Child,
    records: Lines,
    pub port: u16,
}

impl OtlpReceiver {
    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub fn start(port: u16) -> Self {
        let root = repo_root();
        let python = root.join("tests/mcp-python/.venv/bin/python");
        assert!(
            python.exists(),
            "no Python venv at {}: run tests/setup.sh",
            python.display()
        );
        let mut child = Command::new(python)
            .arg(root.join("tests/otlp/receiver.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the OTLP receiver");
        let records = Lines::spawn(child.stdout.take().unwrap());
        let first = records.wait(|_| true).expect("the receiver started");
        let port = first
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the receiver: {first}"));
        OtlpReceiver {
            child,
            records,
            port,
        }
    }

    /// The next record received.
    pub fn record(&self) -> serde_json::Value {
        let line = self.records.wait(|_| true).expect("the receiver stopped");
        serde_json::from_str(&line).expect("each line is JSON")
    }

    /// The records received so far, without waiting.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.records
            .arrived()
            .iter()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }

    /// Stops it at once (as a crash does).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.kill();
    }
}
