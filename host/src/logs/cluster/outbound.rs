//! Entries leaving this host: the queue that [`Outbound::push`] fills and
//! [`Outbound::run`] drains to `mctx.logs.{slug}`, in batches of at most
//! [`MAX_BATCH`] entries and about half a megabyte.
//!
//! Nothing waits for NATS on the request path: `push` only queues. What
//! cannot be sent (the link is down, the queue is full, a publish times
//! out) is counted as unsent, and its `seq` numbers are simply skipped, so
//! receivers report the gap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::claims::Claims;
use super::link::Link;
use super::{Batch, NATS_TIMEOUT, SUBJECT_PREFIX, lock};
use crate::logs::entry::LogEntry;
use crate::logs::wire::MAX_BATCH;

/// Entries waiting to go to NATS; past this the newest are dropped.
const MAX_PENDING_ENTRIES: usize = 100_000;

/// A message stays well under NATS's default 1 MiB payload limit.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

#[derive(Default)]
pub(super) struct Outbound {
    queue: Mutex<Queue>,
    ready: Notify,
    sent: AtomicU64,
    /// Entries meant for other hosts that never left this one.
    unsent: AtomicU64,
}

#[derive(Default)]
struct Queue {
    pending: HashMap<String, Vec<LogEntry>>,
    pending_entries: usize,
    /// Per slug, the `seq` after the last entry handed to `push`: what a
    /// marker announces.
    next_seq: HashMap<String, u64>,
    /// Send a marker per slug (the link came back).
    markers: bool,
}

impl Outbound {
    /// Queues a slug's numbered entries for the other hosts.
    pub(super) fn push(&self, slug: &str, mut entries: Vec<LogEntry>) {
        let mut queue = lock(&self.queue);
        if let Some(last) = entries.last() {
            queue.next_seq.insert(slug.to_string(), last.seq + 1);
        }
        let room = MAX_PENDING_ENTRIES.saturating_sub(queue.pending_entries);
        if entries.len() > room {
            let unsent = entries.len() - room;
            self.unsent.fetch_add(unsent as u64, Ordering::Relaxed);
            entries.truncate(room);
        }
        queue.pending_entries += entries.len();
        queue
            .pending
            .entry(slug.to_string())
            .or_default()
            .extend(entries);
        drop(queue);
        self.ready.notify_one();
    }

    /// After a reconnection: tells every watching host where each slug's
    /// numbering stands, so that a gap at the end of a stream is seen.
    pub(super) fn send_markers(&self) {
        lock(&self.queue).markers = true;
        self.ready.notify_one();
    }

    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(super) fn unsent(&self) -> u64 {
        self.unsent.load(Ordering::Relaxed)
    }

    /// Sends what is queued, for as long as the host runs.
    pub(super) async fn run(
        &self,
        client: &async_nats::Client,
        node: &str,
        link: &Link,
        claims: &Claims,
    ) {
        loop {
            self.ready.notified().await;
            let (pending, markers) = {
                let mut queue = lock(&self.queue);
                queue.pending_entries = 0;
                let markers = std::mem::take(&mut queue.markers).then(|| {
                    queue
                        .next_seq
                        .iter()
                        .map(|(slug, next)| (slug.clone(), *next))
                        .collect::<Vec<_>>()
                });
                (std::mem::take(&mut queue.pending), markers)
            };
            for (slug, entries) in pending {
                for chunk in chunks(&entries) {
                    let next = chunk.last().map_or(0, |e| e.seq + 1);
                    let delivered = link.is_up() && publish(client, node, &slug, next, chunk).await;
                    let counter = if delivered { &self.sent } else { &self.unsent };
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }
            for (slug, next) in markers.into_iter().flatten() {
                if claims.watched_elsewhere(&slug) {
                    publish(client, node, &slug, next, &[]).await;
                }
            }
        }
    }
}

/// Publishes one batch; false if NATS did not take it in time.
async fn publish(
    client: &async_nats::Client,
    node: &str,
    slug: &str,
    next: u64,
    entries: &[LogEntry],
) -> bool {
    let batch = Batch {
        node: node.to_string(),
        next,
        entries,
    };
    let payload = serde_json::to_vec(&batch).expect("entries serialize");
    let subject = format!("{SUBJECT_PREFIX}.{slug}");
    matches!(
        tokio::time::timeout(NATS_TIMEOUT, client.publish(subject, payload.into())).await,
        Ok(Ok(()))
    )
}

/// Splits entries into messages of at most [`MAX_BATCH`] entries and about
/// [`MAX_MESSAGE_BYTES`].
fn chunks(entries: &[LogEntry]) -> impl Iterator<Item = &[LogEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        for entry in rest.iter().take(MAX_BATCH) {
            bytes += entry.message.len() + 256;
            if len > 0 && bytes > MAX_MESSAGE_BYTES {
                break;
            }
            len += 1;
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    #[test]
    fn messages_hold_at_most_100_entries_and_about_half_a_megabyte() {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let small: Vec<LogEntry> = (0..250)
            .map(|_| LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".into()))
            .collect();
        let sizes: Vec<usize> = chunks(&small).map(<[_]>::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let big: Vec<LogEntry> = (0..100)
            .map(|_| LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".repeat(10_240)))
            .collect();
        let sizes: Vec<usize> = chunks(&big).map(<[_]>::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.len() >= 2 && sizes.iter().all(|&n| n * 10_496 <= MAX_MESSAGE_BYTES));
    }

    #[test]
    fn a_full_queue_counts_the_rest_as_unsent_and_markers_know_the_next_seq() {
        let outbound = Outbound::default();
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let numbered = |from: u64, n: u64| -> Vec<LogEntry> {
            (from..from + n)
                .map(|seq| {
                    let mut e = LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".into());
                    e.seq = seq;
                    e
                })
                .collect()
        };
        outbound.push("s", numbered(1, MAX_PENDING_ENTRIES as u64 - 1));
        outbound.push("s", numbered(MAX_PENDING_ENTRIES as u64, 3));
        assert_eq!(outbound.unsent(), 2);
        let queue = lock(&outbound.queue);
        assert_eq!(queue.pending_entries, MAX_PENDING_ENTRIES);
        assert_eq!(queue.next_seq["s"], MAX_PENDING_ENTRIES as u64 + 3);
    }
}
