//! One viewer's queue: bounded in entries and in bytes, with the
//! slow-viewer rule.
//!
//! A viewer whose queue is full misses frames; the entries it missed are
//! counted and it gets one `dropped` frame in their place, so every gap in
//! its `seq` is accounted for. A viewer that stays behind past a grace
//! period is closed with the reason. Producers and other viewers never wait
//! for a slow viewer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::held::Held;
use super::lock;
use crate::base::metrics::Metrics;
use crate::logs::entry::LogEntry;
use crate::logs::filter::Filter;
use crate::logs::wire::Frame;

/// What waits in a viewer's queue, in the order it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// A `logs` frame's JSON, serialized once and shared between viewers.
    Logs(Arc<str>),
    /// A `dropped` frame: this many entries were missed here.
    Dropped(u64),
    /// A `notice` frame.
    Notice(Arc<str>),
    /// The hub closed this viewer; the reason goes in a `closing` frame.
    Closed(Closed),
}

impl Outgoing {
    /// What this frame counts against `viewer_queue_bytes`: a `logs`
    /// frame's JSON; the small frames count nothing.
    fn queued_bytes(&self) -> u64 {
        match self {
            Outgoing::Logs(json) => json.len() as u64,
            _ => 0,
        }
    }

    /// The frame's JSON text (`Closed` becomes a `closing` frame).
    pub(crate) fn to_json(&self) -> String {
        match self {
            Outgoing::Logs(json) => json.to_string(),
            Outgoing::Dropped(count) => Frame::<()>::Dropped { count: *count }.json(),
            Outgoing::Notice(message) => Frame::<()>::Notice {
                message: message.to_string(),
            }
            .json(),
            Outgoing::Closed(closed) => Frame::<()>::Closing {
                reason: closed.reason(),
            }
            .json(),
        }
    }
}

/// Why the hub closed a viewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// It stayed behind the stream for too long (the reason says how long).
    TooSlow(String),
    /// The host is shutting down.
    ShuttingDown,
    /// The server is gone (deleted through the API, or removed from the
    /// tenants file); the reason says by whom.
    Removed(String),
}

impl Closed {
    pub(crate) fn reason(&self) -> String {
        match self {
            Closed::TooSlow(reason) | Closed::Removed(reason) => reason.clone(),
            Closed::ShuttingDown => "the host is shutting down".to_string(),
        }
    }
}

/// How much a viewer may lag (`[logs] viewer_queue_entries`,
/// `viewer_queue_bytes`, `slow_viewer_grace_secs`).
#[derive(Clone, Copy, Debug)]
pub(super) struct QueueLimits {
    pub(super) entries: u64,
    pub(super) bytes: u64,
    pub(super) grace: Duration,
}

/// One viewer's bounded queue of frames.
pub(super) struct ViewerQueue {
    pub(super) filter: Filter,
    /// Lines waiting for their request's end, when the filter asks how
    /// requests ended (only the batcher touches it).
    held: Option<Mutex<Held>>,
    limits: QueueLimits,
    state: Mutex<ViewerState>,
    pub(super) ready: Notify,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Default)]
struct ViewerState {
    frames: VecDeque<Outgoing>,
    /// Entries in `frames`' `logs` frames, kept in step with `frames`.
    queued: VecDeque<u64>,
    queued_entries: u64,
    queued_bytes: u64,
    /// Entries missed since the last frame that got through.
    missed: u64,
    /// When this viewer started missing entries (cleared when it catches up).
    behind_since: Option<Instant>,
    closed: bool,
}

impl ViewerState {
    fn push(&mut self, frame: Outgoing, entries: u64) {
        self.queued_bytes += frame.queued_bytes();
        self.frames.push_back(frame);
        self.queued.push_back(entries);
        self.queued_entries += entries;
    }
}

impl ViewerQueue {
    pub(super) fn new(filter: Filter, limits: QueueLimits, metrics: Option<Arc<Metrics>>) -> Self {
        ViewerQueue {
            held: filter
                .by_request()
                .then(|| Mutex::new(Held::new(limits.entries as usize))),
            filter,
            limits,
            state: Mutex::default(),
            ready: Notify::new(),
            metrics,
        }
    }

    /// A `logs` frame of `count` entries, unless the queue is full: then
    /// they are counted as missed (and the viewer closed if it has been
    /// behind for the grace period).
    pub(super) fn push_logs(&self, json: Arc<str>, count: u64) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        // One frame always fits, however large, so a tiny limit cannot
        // starve a viewer.
        let full = !state.frames.is_empty()
            && (state.queued_entries + count > self.limits.entries
                || state.queued_bytes + json.len() as u64 > self.limits.bytes);
        if full {
            state.missed += count;
            if let Some(metrics) = &self.metrics {
                metrics.entries_dropped("viewer", count);
            }
            let since = *state.behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.limits.grace {
                let reason = format!(
                    "too slow: this viewer fell behind the log stream for {} s and missed {} entries",
                    self.limits.grace.as_secs(),
                    state.missed
                );
                state.closed = true;
                state.push(Outgoing::Closed(Closed::TooSlow(reason)), 0);
            }
        } else {
            if state.missed > 0 {
                let missed = std::mem::take(&mut state.missed);
                state.push(Outgoing::Dropped(missed), 0);
            }
            state.push(Outgoing::Logs(json), count);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// What of `chunk` this viewer gets now, when its lines wait for their
    /// request's end (`None`: they do not, filter entry by entry). Lines
    /// given up while waiting are counted as missed.
    pub(super) fn release(&self, chunk: &[LogEntry]) -> Option<Vec<LogEntry>> {
        let (entries, given_up) = lock(self.held.as_ref()?).pass(chunk, &self.filter);
        if given_up > 0 {
            if let Some(metrics) = &self.metrics {
                metrics.entries_dropped("viewer", given_up);
            }
            self.push_dropped(given_up);
        }
        Some(entries)
    }

    /// Entries this viewer will never get (the hub dropped them): reported
    /// in order, before its next entries or as soon as it has caught up.
    pub(super) fn push_dropped(&self, count: u64) {
        lock(&self.state).missed += count;
        self.ready.notify_one();
    }

    pub(super) fn push_notice(&self, message: Arc<str>) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.push(Outgoing::Notice(message), 0);
        drop(state);
        self.ready.notify_one();
    }

    pub(super) fn close(&self, why: Closed) {
        let mut state = lock(&self.state);
        if !std::mem::replace(&mut state.closed, true) {
            state.push(Outgoing::Closed(why), 0);
        }
        drop(state);
        self.ready.notify_one();
    }

    pub(super) fn pop(&self) -> Option<Outgoing> {
        let mut state = lock(&self.state);
        if let Some(frame) = state.frames.pop_front() {
            let entries = state.queued.pop_front().unwrap_or(0);
            state.queued_entries -= entries;
            state.queued_bytes -= frame.queued_bytes();
            return Some(frame);
        }
        if state.closed {
            return None; // the `Closed` frame said it all
        }
        // Caught up: say what was missed now rather than with the next
        // entries, which may be a long time coming.
        state.behind_since = None;
        let missed = std::mem::take(&mut state.missed);
        (missed > 0).then_some(Outgoing::Dropped(missed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(entries: u64, grace: Duration) -> ViewerQueue {
        let bytes = u64::MAX;
        ViewerQueue::new(
            Filter::default(),
            QueueLimits {
                entries,
                bytes,
                grace,
            },
            None,
        )
    }

    #[test]
    fn a_full_viewer_queue_counts_what_it_missed_and_reports_it_in_order() {
        let queue = queue(1, Duration::from_secs(3600));
        queue.push_logs("a".into(), 3);
        queue.push_logs("b".into(), 5);
        queue.push_logs("c".into(), 7);
        assert_eq!(queue.pop(), Some(Outgoing::Logs("a".into())));
        // Caught up: the loss is reported at once.
        assert_eq!(queue.pop(), Some(Outgoing::Dropped(12)));
        assert_eq!(queue.pop(), None);
        queue.push_logs("d".into(), 1);
        queue.push_logs("e".into(), 2);
        queue.push_dropped(4);
        // Missed entries are reported before the next ones that get through.
        assert_eq!(queue.pop(), Some(Outgoing::Logs("d".into())));
        queue.push_logs("f".into(), 1);
        assert_eq!(queue.pop(), Some(Outgoing::Dropped(6)));
        assert_eq!(queue.pop(), Some(Outgoing::Logs("f".into())));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_entries() {
        let limits = QueueLimits {
            entries: 1000,
            bytes: 10,
            grace: Duration::from_secs(3600),
        };
        let queue = ViewerQueue::new(Filter::default(), limits, None);
        queue.push_logs("123456".into(), 1);
        queue.push_logs("7890".into(), 1); // 10 bytes: fits
        queue.push_logs("x".into(), 1); // 11: missed
        assert_eq!(queue.pop(), Some(Outgoing::Logs("123456".into())));
        queue.push_logs("abcdef".into(), 1); // 4 + 6: fits again
        assert_eq!(queue.pop(), Some(Outgoing::Logs("7890".into())));
        assert_eq!(queue.pop(), Some(Outgoing::Dropped(1)));
        assert_eq!(queue.pop(), Some(Outgoing::Logs("abcdef".into())));
        // One frame always fits, however large.
        queue.push_logs("far more than ten bytes".into(), 1);
        assert_eq!(
            queue.pop(),
            Some(Outgoing::Logs("far more than ten bytes".into()))
        );
    }

    #[test]
    fn a_viewer_that_stays_behind_is_closed_with_a_reason() {
        let queue = queue(1, Duration::ZERO);
        queue.push_logs("a".into(), 1);
        queue.push_logs("b".into(), 1);
        assert_eq!(queue.pop(), Some(Outgoing::Logs("a".into())));
        match queue.pop() {
            Some(Outgoing::Closed(Closed::TooSlow(reason))) => {
                assert!(reason.contains("too slow"), "{reason}")
            }
            other => panic!("expected Closed, got {other:?}"),
        }
        queue.push_logs("c".into(), 1);
        assert_eq!(queue.pop(), None, "nothing after the close");
    }

    #[test]
    fn frames_become_the_wire_protocol() {
        assert_eq!(
            Outgoing::Dropped(2).to_json(),
            r#"{"type":"dropped","count":2}"#
        );
        assert_eq!(
            Outgoing::Closed(Closed::ShuttingDown).to_json(),
            r#"{"type":"closing","reason":"the host is shutting down"}"#
        );
    }
}
