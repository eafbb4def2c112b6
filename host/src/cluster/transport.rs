//! Entries between hosts: what a host sends on `mctx.logs.{slug}` and how
//! it follows other hosts' entries of the slugs it has viewers of.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Inner, NATS_TIMEOUT, SUBJECT_PREFIX, lock};
use crate::entry::LogEntry;
use crate::hub::MAX_BATCH;

/// A message stays well under NATS's default 1 MiB payload limit.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// What travels on `mctx.logs.{slug}`: a producer's entries in `seq`
/// order, and the `seq` its next entry will have. An empty batch is a
/// marker: it lets receivers see a gap at the end of a stream.
#[derive(Serialize, Deserialize)]
struct Batch<E> {
    node: String,
    next: u64,
    entries: E,
}

impl Inner {
    async fn send(&self, slug: &str, next: u64, entries: &[LogEntry]) -> bool {
        let batch = Batch {
            node: self.node.to_string(),
            next,
            entries,
        };
        let payload = serde_json::to_vec(&batch).expect("entries serialize");
        let subject = format!("{SUBJECT_PREFIX}.{slug}");
        matches!(
            tokio::time::timeout(NATS_TIMEOUT, self.client.publish(subject, payload.into())).await,
            Ok(Ok(()))
        )
    }
}

/// Sends queued entries to NATS in batches of at most [`MAX_BATCH`].
pub(super) async fn send_outbound(inner: Arc<Inner>) {
    loop {
        inner.outbound_ready.notified().await;
        let (pending, markers) = {
            let mut outbound = lock(&inner.outbound);
            outbound.pending_entries = 0;
            let markers = std::mem::take(&mut outbound.markers).then(|| {
                outbound
                    .next_seq
                    .iter()
                    .map(|(slug, next)| (slug.clone(), *next))
                    .collect::<Vec<_>>()
            });
            (std::mem::take(&mut outbound.pending), markers)
        };
        for (slug, entries) in pending {
            for chunk in chunks(&entries) {
                let next = chunk.last().map_or(0, |e| e.seq + 1);
                let count = chunk.len() as u64;
                let counter = if inner.link_is_up() && inner.send(&slug, next, chunk).await {
                    &inner.stats.sent_entries
                } else {
                    &inner.stats.unsent_entries
                };
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
        for (slug, next) in markers.into_iter().flatten() {
            if inner.watched_elsewhere(&slug) {
                inner.send(&slug, next, &[]).await;
            }
        }
    }
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

/// Receives other hosts' entries of `slug` for this host's viewers, while
/// it has any (the task is attached to the slug's hub).
pub(super) async fn follow_slug(inner: Arc<Inner>, slug: String) {
    let subject = format!("{SUBJECT_PREFIX}.{slug}");
    let mut subscriber = match inner.client.subscribe(subject).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!(slug, "cannot follow other hosts' entries: {e}");
            return;
        }
    };
    // Per producer, the `seq` its next entry should have.
    let mut expected: HashMap<String, u64> = HashMap::new();
    while let Some(message) = subscriber.next().await {
        let batch: Batch<Vec<LogEntry>> = match serde_json::from_slice(&message.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(slug, "unreadable entries from the cluster: {e}");
                continue;
            }
        };
        if *batch.node == *inner.node {
            continue;
        }
        let first = batch.entries.first().map_or(batch.next, |e| e.seq);
        let missed = match expected.insert(batch.node, batch.next) {
            Some(expected) if first > expected => first - expected,
            // First news of this producer, or it restarted (seq from 1).
            _ => 0,
        };
        let stats = &inner.stats;
        stats
            .received_entries
            .fetch_add(batch.entries.len() as u64, Ordering::Relaxed);
        stats.missed_entries.fetch_add(missed, Ordering::Relaxed);
        inner.hub.deliver_remote(&slug, batch.entries, missed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::entry::{RequestMeta, Stream};

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
}
