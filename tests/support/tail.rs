//! `mctx-host tail` as a child process.

use super::Lines;
use std::process::{Child, Command, Stdio};

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
