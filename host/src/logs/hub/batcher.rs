//! A slug's batcher: one task per watched slug that takes what was
//! delivered and hands it to every viewer's queue, in frames of at most
//! [`MAX_BATCH`] entries serialized once per distinct filter. It never
//! waits to fill a batch, so a lone line goes out at once and a flood
//! coalesces into full batches.

use std::sync::Arc;

use super::viewer::ViewerQueue;
use super::{SlugHub, lock};
use crate::logs::entry::LogEntry;
use crate::logs::wire::{MAX_BATCH, logs_json};

/// Takes what producers queued and hands it to every viewer, until the
/// slug's last viewer leaves.
pub(super) async fn run(hub: Arc<SlugHub>) {
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
                queue.closing.clone(),
            )
        };
        let viewers = lock(&hub.viewers).clone();
        if overflow > 0 {
            tracing::warn!(overflow, "log hub fell behind; entries dropped");
        }
        if let Some(metrics) = &hub.metrics {
            if overflow > 0 {
                metrics.entries_dropped("hub", overflow);
            }
            if remote_missed > 0 {
                metrics.entries_dropped("cluster", remote_missed);
            }
        }
        // Other hosts' missing entries were due before the ones that
        // revealed the gap: report them first.
        if remote_missed > 0 {
            for viewer in &viewers {
                viewer.push_dropped(remote_missed);
            }
        }
        for chunk in batch.chunks(MAX_BATCH) {
            deliver_chunk(&viewers, chunk);
        }
        // Entries the hub itself had to drop come after everything queued
        // before them, so report them after those frames.
        if overflow > 0 {
            for viewer in &viewers {
                viewer.push_dropped(overflow);
            }
        }
        if let Some(why) = closing {
            for viewer in &viewers {
                viewer.close(why.clone());
            }
        }
        batch.clear();
    }
}

/// Sends one chunk to every viewer, serializing once per distinct filter.
fn deliver_chunk(viewers: &[Arc<ViewerQueue>], chunk: &[LogEntry]) {
    let mut unfiltered: Option<Arc<str>> = None;
    for viewer in viewers {
        if let Some(released) = viewer.release(chunk) {
            for part in released.chunks(MAX_BATCH) {
                viewer.push_logs(
                    logs_json(&part.iter().collect::<Vec<_>>()),
                    part.len() as u64,
                );
            }
            continue;
        }
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
        viewer.push_logs(json, count as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{entries_of, entry, hub};
    use crate::logs::filter::Filter;
    use crate::logs::hub::{Closed, Outgoing};

    #[tokio::test]
    async fn entries_go_out_in_batches_of_at_most_100_in_order() {
        let hub = hub();
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        let entries = (1..=250).map(|i| entry(&format!("line {i}"), i)).collect();
        hub.deliver("s", entries, 0);
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

    #[tokio::test]
    async fn closing_all_viewers_delivers_what_was_queued_first() {
        let hub = hub();
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        // Delivered and closed before the batcher has run: the entry must
        // still come first.
        hub.deliver("s", vec![entry("last words", 1)], 0);
        hub.close_all();
        let first = viewer.recv().await;
        assert_eq!(entries_of(&first)[0]["message"], "last words");
        assert_eq!(viewer.recv().await, Outgoing::Closed(Closed::ShuttingDown));
    }
}
