//! What waits for the writer: published entries (and flush barriers) in
//! the order they were published, bounded in bytes. A full backlog refuses
//! entries rather than grow or make a request wait for the disk; what it
//! refused is counted per slug and recorded by the writer (`unstored`,
//! reason `backlog`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::base::sync::lock;
use crate::logs::entry::LogEntry;

/// One thing for the writer to do.
pub(super) enum Command {
    /// Store these entries of one slug, in this order.
    Append {
        slug: String,
        entries: Vec<LogEntry>,
        /// On a cluster: the stream message these came in.
        followed: Option<u64>,
    },
    /// Say so once everything before this is written.
    Flush(tokio::sync::oneshot::Sender<()>),
    /// Who is retained from here on: the writer forgets at once a tenant
    /// no longer retained, or whose slug now has another owner.
    Policies(Arc<HashMap<String, super::Policy>>),
}

/// What the writer takes at once.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) commands: Vec<Command>,
    /// Entries refused since the last batch, per slug: how many, and the
    /// highest `seq` of each producer among them (so that a restart does
    /// not number an entry with it again).
    pub(super) refused: HashMap<String, Refused>,
    /// What the batch's entries take in memory, given back by
    /// [`Backlog::release`] once written.
    pub(super) bytes: usize,
}

/// Entries of one slug refused.
#[derive(Debug, Default)]
pub(super) struct Refused {
    pub(super) count: u64,
    pub(super) last_seq: HashMap<String, u64>,
}

impl Refused {
    pub(super) fn add(&mut self, entries: &[LogEntry]) {
        self.count += entries.len() as u64;
        note_last_seqs(entries, &mut self.last_seq);
    }
}

/// Per producer (`""` on one host), the highest `seq` among `entries`,
/// into `last_seq`.
pub(super) fn note_last_seqs(entries: &[LogEntry], last_seq: &mut HashMap<String, u64>) {
    for entry in entries {
        let node = entry.node.as_deref().unwrap_or("");
        match last_seq.get_mut(node) {
            Some(last) => *last = (*last).max(entry.seq),
            None => {
                last_seq.insert(node.to_string(), entry.seq);
            }
        }
    }
}

#[derive(Default)]
struct State {
    commands: VecDeque<Command>,
    /// Bytes queued or being written.
    bytes: usize,
    /// Of those, bytes queued (not yet taken).
    queued: usize,
    refused: HashMap<String, Refused>,
    /// A barrier or new policies wait: the writer takes the batch at once.
    urgent: bool,
    closed: bool,
}

pub(super) struct Backlog {
    state: Mutex<State>,
    ready: Condvar,
    max_bytes: usize,
}

/// About what an entry takes in memory beyond its texts.
const ENTRY_OVERHEAD: usize = 256;

/// How long the writer lets entries gather after the first, so that one
/// commit writes many: a commit rewrites the pages it touched, and
/// committing each line alone at 10,000 lines/s cost a neighbour tenant 16 %
/// of its requests/s (bench section 9). A query does not wait for it.
const LINGER: Duration = Duration::from_millis(100);

/// Bytes gathered that are worth a commit without lingering further.
const LINGER_BYTES: usize = 1 << 20;

/// About what `entry` takes in memory: its texts (message, structured
/// fields, a request event's headers and exception) and the rest.
pub(super) fn entry_bytes(entry: &LogEntry) -> usize {
    let fields = entry.fields.as_ref().map_or(0, |f| {
        f.iter().map(|(k, v)| k.len() + v.to_string().len()).sum()
    });
    let request = entry.request.as_ref().map_or(0, |event| {
        event.path.len()
            + event
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + event.exception.as_ref().map_or(0, |e| {
                e.message.len() + e.stack.iter().map(String::len).sum::<usize>()
            })
    });
    entry.message.len() + fields + request + ENTRY_OVERHEAD
}

impl Backlog {
    pub(super) fn new(max_bytes: usize) -> Self {
        Backlog {
            state: Mutex::default(),
            ready: Condvar::new(),
            max_bytes,
        }
    }

    /// Queues `entries` (`followed`: the stream message they came in, on a
    /// cluster), or counts them as refused when the backlog is full (or
    /// closed).
    pub(super) fn append(&self, slug: &str, entries: Vec<LogEntry>, followed: Option<u64>) {
        let bytes: usize = entries.iter().map(entry_bytes).sum();
        let mut state = lock(&self.state);
        if state.closed || state.bytes + bytes > self.max_bytes {
            state
                .refused
                .entry(slug.to_string())
                .or_default()
                .add(&entries);
            return;
        }
        state.bytes += bytes;
        state.queued += bytes;
        state.commands.push_back(Command::Append {
            slug: slug.to_string(),
            entries,
            followed,
        });
        drop(state);
        self.ready.notify_one();
    }

    /// Queues a barrier; `false` when the writer is gone.
    pub(super) fn flush(&self, done: tokio::sync::oneshot::Sender<()>) -> bool {
        self.command(Command::Flush(done))
    }

    /// Queues new policies; `false` when the writer is gone.
    pub(super) fn policies(&self, policies: Arc<HashMap<String, super::Policy>>) -> bool {
        self.command(Command::Policies(policies))
    }

    fn command(&self, command: Command) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.commands.push_back(command);
        state.urgent = true;
        drop(state);
        self.ready.notify_one();
        true
    }

    /// A batch of `bytes` is written: its memory is free again.
    pub(super) fn release(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.bytes = state.bytes.saturating_sub(bytes);
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
        // Let more gather, unless something waits for this batch.
        let deadline = Instant::now() + LINGER;
        while !state.urgent && !state.closed && state.queued < LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .ready
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        state.urgent = false;
        let bytes = std::mem::take(&mut state.queued);
        Some(Batch {
            commands: state.commands.drain(..).collect(),
            refused: std::mem::take(&mut state.refused),
            bytes,
        })
    }

    /// No more commands: the writer drains what is queued, then stops.
    pub(super) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        drop(state);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
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
        backlog.append("s", vec![line("a")], None);
        backlog.append("s", vec![line("b")], None);
        backlog.append("s", vec![line("c"), line("d")], None);
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!(batch.commands.len(), 2);
        assert_eq!(batch.refused["s"].count, 2);
        // Taken, the bytes are still held until written…
        backlog.append("s", vec![line("e")], None);
        assert_eq!(backlog.take(Duration::ZERO).unwrap().refused["s"].count, 1);
        // …and free again once they are.
        backlog.release(batch.bytes);
        backlog.append("s", vec![line("e")], None);
        backlog.close();
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!(
            batch.commands.len(),
            1,
            "queued before closing: still written"
        );
        backlog.append("s", vec![line("f")], None);
        let batch = backlog.take(Duration::ZERO).unwrap();
        assert_eq!((batch.commands.len(), batch.refused["s"].count), (0, 1));
        assert!(backlog.take(Duration::ZERO).is_none());
        let (done, _) = tokio::sync::oneshot::channel();
        assert!(!backlog.flush(done));
    }
}
