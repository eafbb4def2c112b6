//! Log hubs: one broadcast channel per slug, alive only while it has viewers.
//!
//! This is the contract's LogStream Durable Object, in process. Shape, after
//! neon's `storage_broker`: a registry of per-key channels, counted
//! subscribers, a [`Subscription`] whose `Drop` removes the channel with its
//! last viewer, and loss that is counted and reported, never silent.
//!
//! ```text
//!  guest writes ─► capture ─► LogHub::publish ─► SlugHub queue ─► batcher task
//!                                                (seq assigned)     │ ≤100 entries a frame,
//!                                                                   │ JSON once per filter
//!                                                   ┌───────────────┼───────────────┐
//!                                                   ▼               ▼               ▼
//!                                              ViewerQueue     ViewerQueue     ViewerQueue ─► WebSocket
//! ```
//!
//! - **No viewer, no cost.** With no hub for a slug, [`LogSink::wants`] says
//!   no and capture builds nothing; nothing is kept anywhere.
//! - **Batching.** The batcher takes everything queued whenever it wakes and
//!   sends it in frames of at most [`MAX_BATCH`] entries. It never waits to
//!   fill a batch, so a lone line goes out at once and a flood coalesces
//!   into full batches (well inside the contract's 1 s).
//! - **Order and loss.** `seq` is assigned per slug when an entry is
//!   published, so it is gapless in what tenants produced. A viewer whose
//!   queue is full misses frames; the entries it missed are counted and it
//!   gets `{"type":"dropped","count":N}` in their place, so every gap in its
//!   `seq` is accounted for. A viewer that stays behind past a grace period
//!   is closed. Producers and other viewers never wait for a slow viewer.
//! - **Other hosts.** On a cluster (`crate::cluster`), entries numbered by
//!   their producer come in through [`LogHub::publish_numbered`] and
//!   [`LogHub::deliver_remote`] (with the gaps seen in their `seq`), and
//!   notices about the cluster link reach viewers as `notice` frames.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;

use crate::capture::LogSink;
use crate::entry::{EntryKind, Level, LogEntry};

/// The most entries one `logs` frame carries (the contract's batch size).
pub const MAX_BATCH: usize = 100;

/// Limits of the hubs; see `[logs]` in the configuration.
#[derive(Clone, Debug)]
pub struct HubLimits {
    pub max_viewers_per_slug: usize,
    /// Entries a viewer may have waiting before it starts missing some.
    /// Counted in entries, not frames: a filtered viewer's frames can be
    /// small, and it should get as much slack as any other.
    pub viewer_queue_entries: usize,
    /// How long a viewer may stay behind (missing entries) before it is closed.
    pub slow_viewer_grace: Duration,
    /// Entries a slug may have queued for its batcher before new ones are
    /// dropped (and reported to every viewer).
    pub max_queued_entries: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            max_viewers_per_slug: 10,
            viewer_queue_entries: 25_600,
            slow_viewer_grace: Duration::from_secs(10),
            max_queued_entries: 100_000,
        }
    }
}

/// Which entries a viewer wants; applied in the hub, before sending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these levels (empty: all).
    pub levels: Vec<Level>,
    /// Only messages containing this text, case-insensitively (lower case).
    pub search: Option<String>,
    pub request_id: Option<String>,
    pub kind: Option<EntryKind>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, entry: &LogEntry) -> bool {
        (self.levels.is_empty() || self.levels.contains(&entry.level))
            && self.kind.is_none_or(|kind| kind == entry.kind)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| id == entry.meta.request_id)
            && self
                .search
                .as_deref()
                .is_none_or(|needle| entry.message.to_lowercase().contains(needle))
    }
}

/// What a viewer receives, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `{"type":"logs","entries":[…]}`, serialized once and shared.
    Logs(Arc<str>),
    /// `{"type":"dropped","count":N}`: N entries were missed here.
    Dropped(u64),
    /// `{"type":"notice","message":…}`: something the viewer should know
    /// about the stream itself (the cluster link went down, came back).
    Notice(Arc<str>),
    /// The hub closed this viewer; the reason goes in a `closing` frame.
    Closed(Closed),
}

impl Frame {
    /// The frame's JSON text (`Closed` becomes a `closing` frame).
    pub fn to_json(&self) -> String {
        match self {
            Frame::Logs(json) => json.to_string(),
            Frame::Dropped(count) => {
                serde_json::json!({ "type": "dropped", "count": count }).to_string()
            }
            Frame::Notice(message) => {
                serde_json::json!({ "type": "notice", "message": message }).to_string()
            }
            Frame::Closed(closed) => closing_frame(&closed.reason()),
        }
    }
}

/// Why the hub closed a viewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// It stayed behind the stream for too long (the reason says how long).
    TooSlow(String),
    /// The host is shutting down.
    ShuttingDown,
}

impl Closed {
    pub fn reason(&self) -> String {
        match self {
            Closed::TooSlow(reason) => reason.clone(),
            Closed::ShuttingDown => "the host is shutting down".to_string(),
        }
    }
}

/// `{"type":"closing","reason":…}`, sent before a close.
pub fn closing_frame(reason: &str) -> String {
    serde_json::json!({ "type": "closing", "reason": reason }).to_string()
}

#[derive(Serialize)]
struct LogsFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    entries: &'a [&'a LogEntry],
}

/// Why a viewer could not subscribe.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    /// The slug already has the maximum number of viewers.
    Full { max: usize },
}

/// The registry of per-slug hubs. Cheap to clone.
#[derive(Clone, Default)]
pub struct LogHub {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    slugs: Mutex<HashMap<String, Arc<SlugHub>>>,
    /// Viewers over all slugs: lets the producer path skip the lock when
    /// nobody is watching anything.
    viewers: AtomicUsize,
    limits: HubLimits,
    /// Woken whenever a viewer arrives or leaves (the cluster's viewer
    /// leases follow the local counts).
    viewers_changed: Notify,
}

/// One slug's channel.
struct SlugHub {
    slug: String,
    queue: Mutex<Queue>,
    wake: Notify,
    viewers: Mutex<Vec<Arc<ViewerQueue>>>,
    limits: HubLimits,
    /// Things that live exactly as long as this hub (the cluster's
    /// subscription to other hosts' entries): dropped with the last viewer.
    attachments: Mutex<Option<Box<dyn Any + Send>>>,
}

struct Queue {
    entries: Vec<LogEntry>,
    /// The next entry's `seq`; the first is 1 (0 means "not published").
    next_seq: u64,
    /// Entries dropped because the batcher fell behind (seq assigned).
    overflow: u64,
    /// Entries other hosts produced that never arrived (gaps in their `seq`).
    remote_missed: u64,
    /// The host is shutting down: after what is queued, close the viewers.
    closing: bool,
    closed: bool,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            entries: Vec::new(),
            next_seq: 1,
            overflow: 0,
            remote_missed: 0,
            closing: false,
            closed: false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent at each step,
    // so a panic elsewhere while holding the lock does not corrupt it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LogHub {
    pub fn new(limits: HubLimits) -> Self {
        LogHub {
            inner: Arc::new(Registry {
                limits,
                ..Registry::default()
            }),
        }
    }

    pub fn limits(&self) -> &HubLimits {
        &self.inner.limits
    }

    /// Viewers of `slug` right now.
    pub fn viewer_count(&self, slug: &str) -> usize {
        lock(&self.inner.slugs)
            .get(slug)
            .map_or(0, |hub| lock(&hub.viewers).len())
    }

    /// Slugs that have a hub (at least one viewer).
    pub fn active_slugs(&self) -> usize {
        lock(&self.inner.slugs).len()
    }

    /// Each watched slug with its number of viewers here.
    pub fn viewer_counts(&self) -> Vec<(String, usize)> {
        lock(&self.inner.slugs)
            .iter()
            .map(|(slug, hub)| (slug.clone(), lock(&hub.viewers).len()))
            .collect()
    }

    /// Resolves after a viewer arrives or leaves (at least once per
    /// change since the last call; changes in between coalesce).
    pub async fn viewers_changed(&self) {
        self.inner.viewers_changed.notified().await;
    }

    /// Tells every viewer of every slug something about the stream.
    pub fn notice_all(&self, message: &str) {
        let message: Arc<str> = message.into();
        let hubs: Vec<Arc<SlugHub>> = lock(&self.inner.slugs).values().cloned().collect();
        for hub in hubs {
            for viewer in lock(&hub.viewers).iter() {
                viewer.push_notice(message.clone());
            }
        }
    }

    /// Entries already numbered by their producer (this host, on a
    /// cluster), for this host's viewers.
    pub fn publish_numbered(&self, slug: &str, entries: Vec<LogEntry>) {
        self.enqueue(slug, entries, false, 0);
    }

    /// Entries another host produced, and how many of its entries went
    /// missing just before them; viewers get both, in that order's spirit
    /// (the count as a `dropped` frame after the entries).
    pub fn deliver_remote(&self, slug: &str, entries: Vec<LogEntry>, missed: u64) {
        self.enqueue(slug, entries, false, missed);
    }

    fn enqueue(&self, slug: &str, entries: Vec<LogEntry>, number: bool, remote_missed: u64) {
        let Some(hub) = lock(&self.inner.slugs).get(slug).cloned() else {
            return; // the last viewer left since `wants`
        };
        let mut queue = lock(&hub.queue);
        queue.remote_missed += remote_missed;
        for mut entry in entries {
            if number {
                entry.seq = queue.next_seq;
                queue.next_seq += 1;
            }
            if queue.entries.len() < hub.limits.max_queued_entries {
                queue.entries.push(entry);
            } else {
                queue.overflow += 1;
            }
        }
        drop(queue);
        hub.wake.notify_one();
    }

    /// Closes every viewer of every slug (host shutdown): each gets what is
    /// already published, then a `closing` frame. The batcher does the
    /// closing, after delivering what it has, so nothing published before
    /// this call is lost to the race.
    pub fn close_all(&self) {
        let hubs: Vec<Arc<SlugHub>> = lock(&self.inner.slugs).values().cloned().collect();
        for hub in hubs {
            lock(&hub.queue).closing = true;
            hub.wake.notify_one();
        }
    }

    /// Adds a viewer to `slug`'s hub, creating the hub (and its batcher
    /// task) for the first one. Must be called inside a tokio runtime.
    pub fn subscribe(&self, slug: &str, filter: Filter) -> Result<Subscription, SubscribeError> {
        let limits = &self.inner.limits;
        let mut slugs = lock(&self.inner.slugs);
        let hub = slugs
            .entry(slug.to_string())
            .or_insert_with(|| {
                let hub = Arc::new(SlugHub {
                    slug: slug.to_string(),
                    queue: Mutex::default(),
                    wake: Notify::new(),
                    viewers: Mutex::default(),
                    limits: limits.clone(),
                    attachments: Mutex::default(),
                });
                tokio::spawn(run_batcher(hub.clone()));
                hub
            })
            .clone();
        let mut viewers = lock(&hub.viewers);
        if viewers.len() >= limits.max_viewers_per_slug {
            return Err(SubscribeError::Full {
                max: limits.max_viewers_per_slug,
            });
        }
        let queue = Arc::new(ViewerQueue::new(filter));
        viewers.push(queue.clone());
        self.inner.viewers.fetch_add(1, Ordering::Relaxed);
        drop(viewers);
        drop(slugs);
        self.inner.viewers_changed.notify_one();
        Ok(Subscription {
            registry: Arc::downgrade(&self.inner),
            hub,
            queue,
        })
    }
}

impl LogSink for LogHub {
    fn wants(&self, slug: &str) -> bool {
        self.inner.viewers.load(Ordering::Relaxed) > 0 && lock(&self.inner.slugs).contains_key(slug)
    }

    fn publish(&self, slug: &str, entries: Vec<LogEntry>) {
        self.enqueue(slug, entries, true, 0);
    }
}

/// Takes what producers queued and hands it to every viewer, until the
/// slug's last viewer leaves.
async fn run_batcher(hub: Arc<SlugHub>) {
    let mut batch = Vec::new();
    loop {
        hub.wake.notified().await;
        // Let producers that are running right now finish their writes, so
        // that a busy slug's frames fill up; an idle slug loses microseconds.
        tokio::task::yield_now().await;
        let (overflow, remote_missed, closing) = {
            let mut queue = lock(&hub.queue);
            if queue.closed {
                return;
            }
            std::mem::swap(&mut batch, &mut queue.entries);
            (
                std::mem::take(&mut queue.overflow),
                std::mem::take(&mut queue.remote_missed),
                queue.closing,
            )
        };
        let viewers = lock(&hub.viewers).clone();
        if overflow > 0 {
            tracing::warn!(slug = %hub.slug, overflow, "log hub fell behind; entries dropped");
        }
        // Other hosts' missing entries were due before the ones that
        // revealed the gap: report them first.
        if remote_missed > 0 {
            for viewer in &viewers {
                viewer.push_dropped(remote_missed);
            }
        }
        for chunk in batch.chunks(MAX_BATCH) {
            deliver(&hub, &viewers, chunk);
        }
        // Entries the hub itself had to drop come after everything queued
        // before them, so report them after those frames.
        if overflow > 0 {
            for viewer in &viewers {
                viewer.push_dropped(overflow);
            }
        }
        if closing {
            for viewer in &viewers {
                viewer.close(Closed::ShuttingDown);
            }
        }
        batch.clear();
    }
}

/// Sends one chunk to every viewer, serializing once per distinct filter.
fn deliver(hub: &SlugHub, viewers: &[Arc<ViewerQueue>], chunk: &[LogEntry]) {
    let mut unfiltered: Option<Arc<str>> = None;
    for viewer in viewers {
        let (json, count) = if viewer.filter.is_empty() {
            let all =
                unfiltered.get_or_insert_with(|| logs_json(&chunk.iter().collect::<Vec<_>>()));
            (all.clone(), chunk.len())
        } else {
            let selected: Vec<&LogEntry> =
                chunk.iter().filter(|e| viewer.filter.matches(e)).collect();
            if selected.is_empty() {
                continue;
            }
            (logs_json(&selected), selected.len())
        };
        viewer.push_logs(json, count as u64, &hub.limits);
    }
}

fn logs_json(entries: &[&LogEntry]) -> Arc<str> {
    serde_json::to_string(&LogsFrame {
        kind: "logs",
        entries,
    })
    .expect("entries serialize")
    .into()
}

/// One viewer's bounded queue of frames.
struct ViewerQueue {
    filter: Filter,
    state: Mutex<ViewerState>,
    ready: Notify,
}

#[derive(Default)]
struct ViewerState {
    frames: VecDeque<Frame>,
    /// Entries in `frames`' `logs` frames, kept in step with `frames`.
    queued: VecDeque<u64>,
    queued_entries: u64,
    /// Entries missed since the last frame that got through.
    missed: u64,
    /// When this viewer started missing entries (cleared when it catches up).
    behind_since: Option<Instant>,
    closed: bool,
}

impl ViewerState {
    fn push(&mut self, frame: Frame, entries: u64) {
        self.frames.push_back(frame);
        self.queued.push_back(entries);
        self.queued_entries += entries;
    }
}

impl ViewerQueue {
    fn new(filter: Filter) -> Self {
        ViewerQueue {
            filter,
            state: Mutex::default(),
            ready: Notify::new(),
        }
    }

    fn push_logs(&self, json: Arc<str>, count: u64, limits: &HubLimits) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        // One frame always fits, however large, so a tiny limit cannot
        // starve a viewer.
        let full = !state.frames.is_empty()
            && state.queued_entries + count > limits.viewer_queue_entries as u64;
        if full {
            state.missed += count;
            let since = *state.behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= limits.slow_viewer_grace {
                let reason = format!(
                    "too slow: this viewer fell behind the log stream for {} s and missed {} entries",
                    limits.slow_viewer_grace.as_secs(),
                    state.missed
                );
                state.closed = true;
                state.push(Frame::Closed(Closed::TooSlow(reason)), 0);
            }
        } else {
            if state.missed > 0 {
                let missed = std::mem::take(&mut state.missed);
                state.push(Frame::Dropped(missed), 0);
            }
            state.push(Frame::Logs(json), count);
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Entries this viewer will never get (the hub dropped them): reported
    /// in order, before its next entries or as soon as it has caught up.
    fn push_dropped(&self, count: u64) {
        lock(&self.state).missed += count;
        self.ready.notify_one();
    }

    fn push_notice(&self, message: Arc<str>) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.push(Frame::Notice(message), 0);
        drop(state);
        self.ready.notify_one();
    }

    fn close(&self, why: Closed) {
        let mut state = lock(&self.state);
        if !std::mem::replace(&mut state.closed, true) {
            state.push(Frame::Closed(why), 0);
        }
        drop(state);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Frame> {
        let mut state = lock(&self.state);
        if let Some(frame) = state.frames.pop_front() {
            let entries = state.queued.pop_front().unwrap_or(0);
            state.queued_entries -= entries;
            return Some(frame);
        }
        if state.closed {
            return None; // the `Closed` frame said it all
        }
        // Caught up: say what was missed now rather than with the next
        // entries, which may be a long time coming.
        state.behind_since = None;
        let missed = std::mem::take(&mut state.missed);
        (missed > 0).then_some(Frame::Dropped(missed))
    }
}

/// A viewer's place in a slug's hub. Dropping it leaves the hub, and the
/// last one to leave removes the hub and stops its batcher.
pub struct Subscription {
    registry: Weak<Registry>,
    hub: Arc<SlugHub>,
    queue: Arc<ViewerQueue>,
}

impl Subscription {
    /// The next frame for this viewer; waits until there is one. After a
    /// `Closed` frame nothing more comes.
    pub async fn recv(&self) -> Frame {
        loop {
            if let Some(frame) = self.queue.pop() {
                return frame;
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next frame if one is waiting.
    pub fn try_recv(&self) -> Option<Frame> {
        self.queue.pop()
    }

    pub fn slug(&self) -> &str {
        &self.hub.slug
    }

    /// Tells this viewer something about its stream (a `notice` frame).
    pub fn notice(&self, message: &str) {
        self.queue.push_notice(message.into());
    }

    /// Attaches to this viewer's hub what `make` builds, unless something
    /// is attached already; it is dropped when the hub's last viewer leaves.
    pub fn attach_once(&self, make: impl FnOnce() -> Box<dyn Any + Send>) {
        let mut attachments = lock(&self.hub.attachments);
        if attachments.is_none() && !lock(&self.hub.queue).closed {
            *attachments = Some(make());
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut slugs = lock(&registry.slugs);
        let mut viewers = lock(&self.hub.viewers);
        viewers.retain(|viewer| !Arc::ptr_eq(viewer, &self.queue));
        registry.viewers.fetch_sub(1, Ordering::Relaxed);
        let attachments = if viewers.is_empty() {
            slugs.remove(&self.hub.slug);
            lock(&self.hub.queue).closed = true;
            self.hub.wake.notify_one();
            lock(&self.hub.attachments).take()
        } else {
            None
        };
        drop(viewers);
        drop(slugs);
        // Dropped outside the registry's locks: an attachment may do work
        // when it goes (a cluster subscription unsubscribes).
        drop(attachments);
        registry.viewers_changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{RequestMeta, Stream};

    fn entry(request_id: &str, stream: Stream, line: &str) -> LogEntry {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: request_id.into(),
        });
        LogEntry::from_line(meta, stream, 1, line.into())
    }

    fn limits(queue: usize, grace: Duration) -> HubLimits {
        HubLimits {
            max_viewers_per_slug: 2,
            viewer_queue_entries: queue,
            slow_viewer_grace: grace,
            ..HubLimits::default()
        }
    }

    fn entries_of(frame: &Frame) -> Vec<serde_json::Value> {
        let Frame::Logs(json) = frame else {
            panic!("not a logs frame: {frame:?}")
        };
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["entries"].as_array().unwrap().clone()
    }

    #[tokio::test]
    async fn a_hub_lives_exactly_as_long_as_its_viewers() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        assert!(!hub.wants("s"));
        hub.publish("s", vec![entry("r", Stream::Stdout, "nobody listens")]);
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("s", Filter::default()).unwrap();
        assert!(hub.wants("s") && !hub.wants("other"));
        assert_eq!(
            hub.subscribe("s", Filter::default()).err(),
            Some(SubscribeError::Full { max: 2 })
        );
        drop(first);
        assert_eq!((hub.viewer_count("s"), hub.active_slugs()), (1, 1));
        drop(second);
        assert_eq!(hub.active_slugs(), 0);
        assert!(!hub.wants("s"));
    }

    #[tokio::test]
    async fn entries_go_out_in_batches_of_at_most_100_with_gapless_seq() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        let entries = (0..250)
            .map(|i| entry("r", Stream::Stdout, &format!("line {i}")))
            .collect();
        hub.publish("s", entries);
        let mut sizes = Vec::new();
        let mut seqs = Vec::new();
        while seqs.len() < 250 {
            let batch = entries_of(&viewer.recv().await);
            sizes.push(batch.len());
            seqs.extend(batch.iter().map(|e| e["seq"].as_u64().unwrap()));
        }
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(seqs, (1..=250).collect::<Vec<u64>>());
    }

    #[test]
    fn a_full_viewer_queue_counts_what_it_missed_and_reports_it_in_order() {
        let limits = limits(1, Duration::from_secs(3600));
        let queue = ViewerQueue::new(Filter::default());
        queue.push_logs("a".into(), 3, &limits);
        queue.push_logs("b".into(), 5, &limits);
        queue.push_logs("c".into(), 7, &limits);
        assert_eq!(queue.pop(), Some(Frame::Logs("a".into())));
        // Caught up: the loss is reported at once.
        assert_eq!(queue.pop(), Some(Frame::Dropped(12)));
        assert_eq!(queue.pop(), None);
        queue.push_logs("d".into(), 1, &limits);
        queue.push_logs("e".into(), 2, &limits);
        queue.push_dropped(4);
        // Missed entries are reported before the next ones that get through.
        assert_eq!(queue.pop(), Some(Frame::Logs("d".into())));
        queue.push_logs("f".into(), 1, &limits);
        assert_eq!(queue.pop(), Some(Frame::Dropped(6)));
        assert_eq!(queue.pop(), Some(Frame::Logs("f".into())));
    }

    #[test]
    fn a_viewer_that_stays_behind_is_closed_with_a_reason() {
        let limits = limits(1, Duration::ZERO);
        let queue = ViewerQueue::new(Filter::default());
        queue.push_logs("a".into(), 1, &limits);
        queue.push_logs("b".into(), 1, &limits);
        assert_eq!(queue.pop(), Some(Frame::Logs("a".into())));
        match queue.pop() {
            Some(Frame::Closed(Closed::TooSlow(reason))) => {
                assert!(reason.contains("too slow"), "{reason}")
            }
            other => panic!("expected Closed, got {other:?}"),
        }
        queue.push_logs("c".into(), 1, &limits);
        assert_eq!(queue.pop(), None, "nothing after the close");
    }

    #[tokio::test]
    async fn closing_all_viewers_delivers_what_was_queued_first() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        // Published and closed before the batcher has run: the entry must
        // still come first.
        hub.publish("s", vec![entry("r", Stream::Stdout, "last words")]);
        hub.close_all();
        let first = viewer.recv().await;
        assert_eq!(entries_of(&first)[0]["message"], "last words");
        assert_eq!(viewer.recv().await, Frame::Closed(Closed::ShuttingDown));
    }

    #[tokio::test]
    async fn remote_entries_keep_their_numbers_and_gaps_are_reported_first() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        let numbered = |seq| {
            let mut e = entry("r", Stream::Stdout, "from a");
            e.node = Some("a".into());
            e.seq = seq;
            e
        };
        hub.deliver_remote("s", vec![numbered(7), numbered(8)], 0);
        let first = entries_of(&viewer.recv().await);
        assert_eq!(
            (first[0]["seq"].as_u64(), first[0]["node"].as_str()),
            (Some(7), Some("a"))
        );
        hub.deliver_remote("s", vec![numbered(12)], 3);
        assert_eq!(viewer.recv().await, Frame::Dropped(3));
        assert_eq!(entries_of(&viewer.recv().await)[0]["seq"], 12);
    }

    #[tokio::test]
    async fn notices_reach_every_viewer_in_order_and_changes_are_signalled() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("t", Filter::default()).unwrap();
        hub.viewers_changed().await; // the subscriptions left a signal
        hub.notice_all("link down");
        for viewer in [&first, &second] {
            let frame = viewer.recv().await;
            assert_eq!(frame, Frame::Notice("link down".into()));
            assert_eq!(
                frame.to_json(),
                r#"{"message":"link down","type":"notice"}"#
            );
        }
        let mut counts = hub.viewer_counts();
        counts.sort();
        assert_eq!(counts, [("s".to_string(), 1), ("t".to_string(), 1)]);
    }

    #[tokio::test]
    async fn attachments_live_as_long_as_the_hub() {
        let hub = LogHub::new(limits(1000, Duration::from_secs(1)));
        let alive = Arc::new(());
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("s", Filter::default()).unwrap();
        first.attach_once(|| Box::new(alive.clone()));
        second.attach_once(|| panic!("attached only once"));
        assert_eq!(Arc::strong_count(&alive), 2);
        drop(first);
        assert_eq!(Arc::strong_count(&alive), 2, "the hub still has a viewer");
        drop(second);
        assert_eq!(Arc::strong_count(&alive), 1, "dropped with the last viewer");
    }

    #[test]
    fn filters_match_level_kind_request_and_text() {
        let warn = entry("r1", Stream::Stderr, "[WARN] Disk Almost Full");
        let log = entry("r2", Stream::Stdout, "plain");
        let by_level = Filter {
            levels: vec![Level::Warn],
            ..Filter::default()
        };
        assert!(by_level.matches(&warn) && !by_level.matches(&log));
        let by_text = Filter {
            search: Some("almost".into()),
            ..Filter::default()
        };
        assert!(by_text.matches(&warn) && !by_text.matches(&log));
        let by_id = Filter {
            request_id: Some("r2".into()),
            ..Filter::default()
        };
        assert!(!by_id.matches(&warn) && by_id.matches(&log));
        let requests = Filter {
            kind: Some(EntryKind::Request),
            ..Filter::default()
        };
        assert!(!requests.matches(&log));
        assert!(Filter::default().is_empty() && !requests.is_empty());
    }
}
