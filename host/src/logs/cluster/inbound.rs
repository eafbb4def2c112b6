//! Entries arriving from other hosts: while this host has viewers of a
//! slug, it follows `mctx.logs.{slug}` and checks each producer's `seq`
//! for gaps, which its viewers get as `dropped` frames before the entries
//! that revealed them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt as _;

use super::{Batch, SUBJECT_PREFIX};
use crate::logs::entry::LogEntry;
use crate::logs::hub::LogHub;

/// What arrived from other hosts, for `/healthz`.
#[derive(Default)]
pub(super) struct Inbound {
    received: AtomicU64,
    /// Entries of other hosts found missing (gaps in their `seq`).
    missed: AtomicU64,
}

impl Inbound {
    pub(super) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub(super) fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }
}

/// Delivers other hosts' entries of `slug` to this host's hub until the
/// task is stopped (with the slug's last viewer here).
pub(super) async fn follow(
    counts: Arc<Inbound>,
    client: async_nats::Client,
    node: Arc<str>,
    hub: LogHub,
    slug: String,
) {
    let subject = format!("{SUBJECT_PREFIX}.{slug}");
    let mut subscriber = match client.subscribe(subject).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!("cannot follow other hosts' entries: {e}");
            return;
        }
    };
    let mut gaps = Gaps::default();
    while let Some(message) = subscriber.next().await {
        let batch: Batch<Vec<LogEntry>> = match serde_json::from_slice(&message.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!("unreadable entries from the cluster: {e}");
                continue;
            }
        };
        if *batch.node == *node {
            continue;
        }
        let missed = gaps.missed_before(&batch);
        counts
            .received
            .fetch_add(batch.entries.len() as u64, Ordering::Relaxed);
        counts.missed.fetch_add(missed, Ordering::Relaxed);
        hub.deliver(&slug, batch.entries, missed);
    }
}

/// Per producer, the `seq` its next entry should have.
#[derive(Default)]
struct Gaps(HashMap<String, u64>);

impl Gaps {
    /// How many of the producer's entries are missing before this batch.
    fn missed_before(&mut self, batch: &Batch<Vec<LogEntry>>) -> u64 {
        let first = batch.entries.first().map_or(batch.next, |e| e.seq);
        match self.0.insert(batch.node.clone(), batch.next) {
            Some(expected) if first > expected => first - expected,
            // First news of this producer, or it restarted (seq from 1).
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    fn batch(node: &str, seqs: std::ops::Range<u64>, next: u64) -> Batch<Vec<LogEntry>> {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let entries = seqs
            .map(|seq| {
                let mut e = LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".into());
                e.seq = seq;
                e
            })
            .collect();
        Batch {
            node: node.into(),
            next,
            entries,
        }
    }

    #[test]
    fn gaps_are_counted_per_producer_and_markers_reveal_a_gap_at_the_end() {
        let mut gaps = Gaps::default();
        assert_eq!(gaps.missed_before(&batch("a", 5..8, 8)), 0, "first news");
        assert_eq!(gaps.missed_before(&batch("b", 1..2, 2)), 0);
        assert_eq!(gaps.missed_before(&batch("a", 8..10, 10)), 0);
        assert_eq!(gaps.missed_before(&batch("a", 13..14, 14)), 3);
        // A marker: no entries, only where the numbering stands.
        assert_eq!(gaps.missed_before(&batch("a", 0..0, 20)), 6);
        assert_eq!(gaps.missed_before(&batch("b", 2..3, 3)), 0);
        // A restarted producer counts from 1 again: no gap.
        assert_eq!(gaps.missed_before(&batch("a", 1..2, 2)), 0);
    }
}
