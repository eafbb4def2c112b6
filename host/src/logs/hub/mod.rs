//! Log hubs: one broadcast channel per slug, alive only while it has viewers.
//!
//! This is the contract's LogStream Durable Object, in process. Shape, after
//! neon's `storage_broker`: a registry of per-key channels, counted
//! subscribers, a [`Subscription`] whose `Drop` removes the channel with its
//! last viewer, and loss that is counted and reported, never silent.
//!
//! ```text
//!  Publisher ─► LogHub::deliver ─► SlugHub queue ─► batcher task
//!  (seq given)                                       │ ≤100 entries a frame,
//!                                                    │ JSON once per filter
//!                                    ┌───────────────┼───────────────┐
//!                                    ▼               ▼               ▼
//!                               ViewerQueue     ViewerQueue     ViewerQueue ─► WebSocket
//! ```
//!
//! - **No viewer, no cost.** With no hub for a slug, [`LogHub::has_viewers`]
//!   says no and capture builds nothing; nothing is kept anywhere.
//! - **Batching.** The batcher takes everything queued whenever it wakes and
//!   sends it in frames of at most [`MAX_BATCH`] entries. It never waits to
//!   fill a batch, so a lone line goes out at once and a flood coalesces
//!   into full batches (well inside the contract's 1 s).
//! - **Order and loss.** Entries arrive numbered (`crate::logs::publish`
//!   gives `seq`); a hub that falls behind drops the newest and reports
//!   them as `dropped`, and each viewer's queue does the same for it alone
//!   (`viewer.rs`).
//! - **Other hosts.** On a cluster, a [`Remote`] follows other hosts'
//!   entries of a slug for exactly as long as the slug has a hub here, and
//!   hears when viewer counts change (for the cluster-wide limit).

mod batcher;
mod held;
mod remote;
mod viewer;

use crate::base::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::Notify;
use tracing::Instrument as _;

use crate::base::config::LogSettings;
use crate::base::metrics::Metrics;
use crate::logs::entry::LogEntry;
use crate::logs::filter::Filter;
pub(crate) use remote::{Following, Remote};
pub(crate) use viewer::{Closed, Outgoing};
use viewer::{QueueLimits, ViewerQueue};

/// Entries a slug may have queued for its batcher before new ones are
/// dropped (and reported to every viewer).
const MAX_QUEUED_ENTRIES: usize = 100_000;

/// Why a viewer could not subscribe.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The slug already has the maximum number of viewers.
    Full { max: usize },
}

/// The registry of per-slug hubs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct LogHub {
    inner: Arc<Registry>,
}

struct Registry {
    slugs: Mutex<HashMap<String, Arc<SlugHub>>>,
    /// Viewers over all slugs: lets the producer path skip the lock when
    /// nobody is watching anything.
    viewers: AtomicUsize,
    settings: LogSettings,
    /// Set once on a cluster. Weak: the cluster holds this hub.
    remote: OnceLock<Weak<dyn Remote>>,
    /// Where lost entries are counted, once set.
    metrics: OnceLock<Arc<Metrics>>,
}

/// One slug's channel.
struct SlugHub {
    slug: String,
    queue: Mutex<Queue>,
    wake: Notify,
    viewers: Mutex<Vec<Arc<ViewerQueue>>>,
    /// Other hosts' entries of this slug, followed while this hub lives.
    following: Mutex<Option<Following>>,
    metrics: Option<Arc<Metrics>>,
}

#[derive(Default)]
struct Queue {
    entries: Vec<LogEntry>,
    /// Entries dropped because the batcher fell behind.
    overflow: u64,
    /// Entries other hosts produced that never arrived (gaps in their `seq`).
    remote_missed: u64,
    /// After what is queued, close the viewers, for this reason (the host
    /// is shutting down, the server was deleted).
    closing: Option<Closed>,
    closed: bool,
}

impl LogHub {
    pub(crate) fn new(settings: LogSettings) -> Self {
        LogHub {
            inner: Arc::new(Registry {
                slugs: Mutex::default(),
                viewers: AtomicUsize::new(0),
                settings,
                remote: OnceLock::new(),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Counts the entries viewers lose into `metrics` from now on.
    pub(crate) fn count_losses(&self, metrics: Arc<Metrics>) {
        let _ = self.inner.metrics.set(metrics);
    }

    pub(crate) fn settings(&self) -> &LogSettings {
        &self.inner.settings
    }

    /// Makes `remote` follow every slug that has viewers here, from now on.
    pub(crate) fn connect_remote(&self, remote: Weak<dyn Remote>) {
        if self.inner.remote.set(remote).is_err() {
            tracing::error!("a second cluster was connected to the log hubs; ignored");
        }
    }

    fn remote(&self) -> Option<Arc<dyn Remote>> {
        self.inner.remote.get().and_then(Weak::upgrade)
    }

    /// Whether `slug` has a viewer here (so its entries are worth building).
    pub(crate) fn has_viewers(&self, slug: &str) -> bool {
        self.inner.viewers.load(Ordering::Relaxed) > 0 && lock(&self.inner.slugs).contains_key(slug)
    }

    /// Viewers of `slug` right now.
    pub(crate) fn viewer_count(&self, slug: &str) -> usize {
        lock(&self.inner.slugs)
            .get(slug)
            .map_or(0, |hub| lock(&hub.viewers).len())
    }

    /// Slugs that have a hub (at least one viewer).
    pub(crate) fn active_slugs(&self) -> usize {
        lock(&self.inner.slugs).len()
    }

    /// Each watched slug with its number of viewers here.
    pub(crate) fn viewer_counts(&self) -> Vec<(String, usize)> {
        lock(&self.inner.slugs)
            .iter()
            .map(|(slug, hub)| (slug.clone(), lock(&hub.viewers).len()))
            .collect()
    }

    fn hubs(&self) -> Vec<Arc<SlugHub>> {
        lock(&self.inner.slugs).values().cloned().collect()
    }

    /// Tells every viewer of every slug something about the stream.
    pub(crate) fn notice_all(&self, message: &str) {
        let message: Arc<str> = message.into();
        for hub in self.hubs() {
            for viewer in lock(&hub.viewers).iter() {
                viewer.push_notice(message.clone());
            }
        }
    }

    /// Hands numbered entries of `slug` to its viewers here, after telling
    /// them of `missed_before` entries (another host's) that never arrived.
    pub(crate) fn deliver(&self, slug: &str, entries: Vec<LogEntry>, missed_before: u64) {
        let Some(hub) = lock(&self.inner.slugs).get(slug).cloned() else {
            return; // the last viewer left meanwhile
        };
        let mut queue = lock(&hub.queue);
        queue.remote_missed += missed_before;
        let room = MAX_QUEUED_ENTRIES.saturating_sub(queue.entries.len());
        let total = entries.len();
        queue.entries.extend(entries.into_iter().take(room));
        queue.overflow += total.saturating_sub(room) as u64;
        drop(queue);
        hub.wake.notify_one();
    }

    /// Closes every viewer of every slug (host shutdown): each gets what is
    /// already delivered, then a `closing` frame. The batcher does the
    /// closing, after delivering what it has, so nothing delivered before
    /// this call is lost to the race.
    pub(crate) fn close_all(&self) {
        for hub in self.hubs() {
            lock(&hub.queue).closing = Some(Closed::ShuttingDown);
            hub.wake.notify_one();
        }
    }

    /// Closes every viewer of `slug` here the same way, with `reason` in
    /// their `closing` frame (the server was deleted).
    pub(crate) fn close_slug(&self, slug: &str, reason: &str) {
        let Some(hub) = lock(&self.inner.slugs).get(slug).cloned() else {
            return;
        };
        lock(&hub.queue).closing = Some(Closed::Removed(reason.to_string()));
        hub.wake.notify_one();
    }

    /// Adds a viewer to `slug`'s hub, creating the hub (and its batcher
    /// task) for the first one. Must be called inside a tokio runtime.
    pub(crate) fn subscribe(
        &self,
        slug: &str,
        filter: Filter,
    ) -> Result<Subscription, SubscribeError> {
        let settings = &self.inner.settings;
        let remote = self.remote();
        let mut slugs = lock(&self.inner.slugs);
        let hub = slugs
            .entry(slug.to_string())
            .or_insert_with(|| {
                let hub = Arc::new(SlugHub {
                    slug: slug.to_string(),
                    queue: Mutex::default(),
                    wake: Notify::new(),
                    viewers: Mutex::default(),
                    following: Mutex::new(remote.as_ref().map(|r| r.follow(slug))),
                    metrics: self.inner.metrics.get().cloned(),
                });
                let span = tracing::info_span!("hub", slug);
                tokio::spawn(batcher::run(hub.clone()).instrument(span));
                hub
            })
            .clone();
        let mut viewers = lock(&hub.viewers);
        if viewers.len() >= settings.max_viewers_per_slug {
            return Err(SubscribeError::Full {
                max: settings.max_viewers_per_slug,
            });
        }
        let limits = QueueLimits {
            entries: settings.viewer_queue_entries as u64,
            bytes: settings.viewer_queue_bytes as u64,
            grace: settings.slow_viewer_grace(),
        };
        let queue = Arc::new(ViewerQueue::new(filter, limits, hub.metrics.clone()));
        viewers.push(queue.clone());
        self.inner.viewers.fetch_add(1, Ordering::Relaxed);
        drop(viewers);
        drop(slugs);
        if let Some(remote) = remote {
            remote.viewers_changed();
        }
        Ok(Subscription {
            hubs: Arc::downgrade(&self.inner),
            hub,
            queue,
        })
    }
}

/// A viewer's place in a slug's hub. Dropping it leaves the hub, and the
/// last one to leave removes the hub, stops its batcher and stops following
/// other hosts' entries of the slug.
pub(crate) struct Subscription {
    hubs: Weak<Registry>,
    hub: Arc<SlugHub>,
    queue: Arc<ViewerQueue>,
}

impl Subscription {
    /// The next frame for this viewer; waits until there is one. After a
    /// `Closed` frame nothing more comes.
    pub(crate) async fn recv(&self) -> Outgoing {
        loop {
            if let Some(frame) = self.queue.pop() {
                return frame;
            }
            self.queue.ready.notified().await;
        }
    }

    /// The next frame if one is waiting.
    pub(crate) fn try_recv(&self) -> Option<Outgoing> {
        self.queue.pop()
    }

    pub(crate) fn slug(&self) -> &str {
        &self.hub.slug
    }

    /// Tells this viewer something about its stream (a `notice` frame).
    pub(crate) fn notice(&self, message: &str) {
        self.queue.push_notice(message.into());
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(registry) = self.hubs.upgrade() else {
            return;
        };
        let mut slugs = lock(&registry.slugs);
        let mut viewers = lock(&self.hub.viewers);
        viewers.retain(|viewer| !Arc::ptr_eq(viewer, &self.queue));
        registry.viewers.fetch_sub(1, Ordering::Relaxed);
        let following = if viewers.is_empty() {
            slugs.remove(&self.hub.slug);
            lock(&self.hub.queue).closed = true;
            self.hub.wake.notify_one();
            lock(&self.hub.following).take()
        } else {
            None
        };
        drop(viewers);
        drop(slugs);
        // Outside the registry's locks: stopping a follower unsubscribes.
        drop(following);
        if let Some(remote) = registry.remote.get().and_then(Weak::upgrade) {
            remote.viewers_changed();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    pub(super) fn entry(line: &str, seq: u64) -> LogEntry {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        });
        let mut entry = LogEntry::from_line(meta, Stream::Stdout, 1, line.into());
        entry.seq = seq;
        entry
    }

    pub(super) fn hub() -> LogHub {
        LogHub::new(LogSettings {
            max_viewers_per_slug: 2,
            viewer_queue_entries: 1000,
            slow_viewer_grace_secs: 1,
            ..LogSettings::default()
        })
    }

    pub(super) fn entries_of(frame: &Outgoing) -> Vec<serde_json::Value> {
        let Outgoing::Logs(json) = frame else {
            panic!("not a logs frame: {frame:?}")
        };
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["entries"].as_array().unwrap().clone()
    }

    #[tokio::test]
    async fn a_hub_lives_exactly_as_long_as_its_viewers() {
        let hub = hub();
        assert!(!hub.has_viewers("s"));
        hub.deliver("s", vec![entry("nobody listens", 1)], 0);
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("s", Filter::default()).unwrap();
        assert!(hub.has_viewers("s") && !hub.has_viewers("other"));
        assert_eq!(
            hub.subscribe("s", Filter::default()).err(),
            Some(SubscribeError::Full { max: 2 })
        );
        drop(first);
        assert_eq!((hub.viewer_count("s"), hub.active_slugs()), (1, 1));
        drop(second);
        assert_eq!(hub.active_slugs(), 0);
        assert!(!hub.has_viewers("s"));
    }

    #[tokio::test]
    async fn remote_entries_keep_their_numbers_and_gaps_are_reported_first() {
        let hub = hub();
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        let numbered = |seq| {
            let mut e = entry("from a", seq);
            e.node = Some("a".into());
            e
        };
        hub.deliver("s", vec![numbered(7), numbered(8)], 0);
        let first = entries_of(&viewer.recv().await);
        assert_eq!(
            (first[0]["seq"].as_u64(), first[0]["node"].as_str()),
            (Some(7), Some("a"))
        );
        hub.deliver("s", vec![numbered(12)], 3);
        assert_eq!(viewer.recv().await, Outgoing::Dropped(3));
        assert_eq!(entries_of(&viewer.recv().await)[0]["seq"], 12);
    }

    #[tokio::test]
    async fn notices_reach_every_viewer_in_order() {
        let hub = hub();
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("t", Filter::default()).unwrap();
        hub.notice_all("link down");
        for viewer in [&first, &second] {
            let frame = viewer.recv().await;
            assert_eq!(frame, Outgoing::Notice("link down".into()));
            assert_eq!(
                frame.to_json(),
                r#"{"type":"notice","message":"link down"}"#
            );
        }
        let mut counts = hub.viewer_counts();
        counts.sort();
        assert_eq!(counts, [("s".to_string(), 1), ("t".to_string(), 1)]);
    }
}
