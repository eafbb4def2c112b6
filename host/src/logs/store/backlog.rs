//! What waits for the writer: published entries (and flush barriers) in
//! the order they were published, bounded in bytes. A full backlog refuses
//! entries rather than grow or make a request wait for the disk; what it
//! refused is counted per slug and recorded by the writer (`unstored`,
//! reason `backlog`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::base::sync::lock;
use crate::logs::entry::LogEntry;

/// One thing for the writer to do.
pub(super) enum Command {
    /// Store these entries of one slug, in this order.
    Append {
        slug: String,
        entries: Vec<LogEntry>,
    },
    /// Say so once everything before this is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// What the writer takes at once.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) commands: Vec<Command>,
    /// Entries refused since the last batch, per slug.
    pub(super) refused: HashMap<String, u64>,
}

#[derive(Default)]
struct State {
    commands: VecDeque<Command>,
    bytes: usize,
    refused: HashMap<String, u64>,
    closed: bool,
}

pub(super) struct Backlog {
    state: Mutex<State>,
    ready: Condvar,
    max_bytes: usize,
}

/// About what an entry takes in memory beyond its message.
const ENTRY_OVERHEAD: usize = 256;

impl Backlog {
    pub(super) fn new(max_bytes: usize) -> Self {
        Backlog {
            state: Mutex::default(),
            ready: Condvar::new(),
            max_bytes,
        }
    }

    /// Queues `entries`, or counts them as refused when the backlog is
    /// full (or closed).
    pub(super) fn append(&self, slug: &str, entries: Vec<LogEntry>) {
        let bytes: usize = entries
            .iter()
            .map(|e| e.message.len() + ENTRY_OVERHEAD)
            .sum();
        let mut state = lock(&self.state);
        if state.closed || state.bytes + bytes > self.max_bytes {
            *state.refused.entry(slug.to_string()).or_default() += entries.len() as u64;
            return;
        }
        state.bytes += bytes;
        state.commands.push_back(Command::Append {
            slug: slug.to_string(),
            entries,
        });
        drop(state);
        self.ready.notify_one();
    }

    /// Queues a barrier; `false` when the writer is gone.
    pub(super) fn flush(&self, done: tokio::sync::oneshot::Sender<()>) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.commands.push_back(Command::Flush(done));
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Everything queued, once there is something (or `patience` has
    /// passed: an empty batch, so the writer can do its periodic work);
    /// `None` once closed and drained.
    pub(super) fn take(&self, patience: Duration) -> Option<Batch> {
        let mut state = lock(&self.state);
        if state.commands.is_empty() && state.refused.is_empty() && !state.closed {
            state = self
                .ready
                .wait_timeout(state, patience)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        if state.closed && state.commands.is_empty() && state.refused.is_empty() {
            return None;
        }
        state.bytes = 0;
        Some(Batch {
            commands: state.commands.drain(..).collect(),
            refused: std::mem::take(&mut state.refused),
        })
    }

    /// No more commands: the writer drains what is queued, then stops.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    fn line(text: &str) -> LogEntry {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        });
        LogEntry::from_line(meta, Stream::Stdout, 1, text.into())
    }

    #[test]
    fn a_full_backlog_refuses_and_counts_and_a_closed_one_drains() {
        let backlog = Backlog::new(2 * (ENTRY_OVERHEAD + 1));
        backlog.append("s", vec![line("a")]);
        backlog.append("s", vec![line("b")]);
        backlog.append("s", vec![line("c"), line("d")]);
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!(batch.commands.len(), 2);
        assert_eq!(batch.refused["s"], 2);
        // Taken, the bytes are free again.
        backlog.append("s", vec![line("e")]);
        backlog.close();
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!(
            batch.commands.len(),
            1,
            "queued before closing: still written"
        );
        backlog.append("s", vec![line("f")]);
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!((batch.commands.len(), batch.refused["s"]), (0, 1));
        assert!(backlog.take(Duration::ZERO).is_none());
        let (done, _) = tokio::sync::oneshot::channel();
        assert!(!backlog.flush(done));
    }
}
