//! The publisher: where captured entries get their `seq` (and, on a
//! cluster, their `node`), in both modes, and go to whoever watches.
//!
//! ```text
//!  capture ─► Publisher (seq, node) ─┬─► LogHub::deliver ─► this host's viewers
//!                                    ├─► Cluster::send ─► NATS ─► other hosts' viewers
//!                                    └─► LogStore::append ─► disk (retained tenants)
//! ```
//!
//! `seq` counts a slug's entries from 1 for the life of the process, per
//! producing host (for a retained tenant, on from the last one stored), and
//! only entries somebody watches or the store keeps are numbered: a viewer
//! sees consecutive numbers unless it was told (`dropped`) what it missed.
//! Numbering and handing on happen under one lock, so every viewer and the
//! store get this host's entries in `seq` order even when several requests
//! of a slug write at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::base::metrics::Metrics;
use crate::logs::cluster::Cluster;
use crate::logs::entry::LogEntry;
use crate::logs::export::Exports;
use crate::logs::hub::LogHub;
use crate::logs::sink::LogSink;
use crate::logs::store::LogStore;

/// The sink capture writes to: numbers entries and hands them to this
/// host's hubs and, on a cluster, to the hosts that watch the slug.
pub(crate) struct Publisher {
    hub: LogHub,
    cluster: Option<Cluster>,
    metrics: Arc<Metrics>,
    /// Where retained tenants' entries are kept, when the host keeps any.
    store: Option<Arc<LogStore>>,
    /// Where entries are sent as they happen (OTLP destinations).
    exports: Option<Arc<Exports>>,
    /// Per slug, the `seq` of the next entry.
    next_seq: Mutex<HashMap<String, u64>>,
}

impl Publisher {
    pub(crate) fn new(hub: LogHub, cluster: Option<Cluster>, metrics: Arc<Metrics>) -> Self {
        Publisher {
            hub,
            cluster,
            metrics,
            store: None,
            exports: None,
            next_seq: Mutex::default(),
        }
    }

    /// Keeps retained tenants' entries in `store` too.
    pub(crate) fn storing(mut self, store: Arc<LogStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sends entries to their export destinations too.
    pub(crate) fn exporting(mut self, exports: Arc<Exports>) -> Self {
        self.exports = Some(exports);
        self
    }

    /// The exports, when `slug`'s entries go somewhere.
    fn exported(&self, slug: &str) -> Option<&Exports> {
        self.exports
            .as_deref()
            .filter(|exports| exports.wants(slug))
    }

    /// The store, when `slug`'s entries are kept.
    fn keeping(&self, slug: &str) -> Option<&LogStore> {
        self.store.as_deref().filter(|store| store.retains(slug))
    }

    /// The cluster, when this slug's entries are watched on another host.
    fn remote(&self, slug: &str) -> Option<&Cluster> {
        self.cluster
            .as_ref()
            .filter(|cluster| cluster.watched_elsewhere(slug))
    }
}

impl LogSink for Publisher {
    fn wants(&self, slug: &str) -> bool {
        self.hub.has_viewers(slug)
            || self.remote(slug).is_some()
            || self.keeping(slug).is_some()
            || self.exported(slug).is_some()
    }

    fn publish(&self, slug: &str, mut entries: Vec<LogEntry>) {
        let local = self.hub.has_viewers(slug);
        let remote = self.remote(slug);
        let store = self.keeping(slug);
        let exports = self.exported(slug);
        if !local && remote.is_none() && store.is_none() && exports.is_none() {
            return; // the last viewer left since `wants`
        }
        let node = self.cluster.as_ref().map(Cluster::node_name);
        let mut next_seq = crate::base::sync::lock(&self.next_seq);
        if !next_seq.contains_key(slug) {
            let stored = self.store.as_ref().map_or(0, |store| store.last_seq(slug));
            next_seq.insert(slug.to_string(), stored + 1);
        }
        let next = next_seq.get_mut(slug).expect("inserted above");
        for entry in &mut entries {
            entry.node = node.clone();
            entry.seq = *next;
            *next += 1;
            self.metrics
                .entry(slug, entry.level.as_str(), entry.truncated);
        }
        if let Some(exports) = exports {
            exports.send(slug, &entries);
        }
        // Copied only for a second reader.
        if let Some(store) = store {
            if !local && remote.is_none() {
                return store.append(slug, entries);
            }
            store.append(slug, entries.clone());
        }
        if !local && remote.is_none() {
            return; // exported only
        }
        match remote {
            Some(cluster) if local => cluster.send(slug, entries.clone()),
            Some(cluster) => return cluster.send(slug, entries),
            None => {}
        }
        self.hub.deliver(slug, entries, 0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::base::config::LogSettings;
    use crate::logs::entry::{RequestMeta, Stream};
    use crate::logs::filter::Filter;
    use crate::logs::hub::Outgoing;

    fn line(text: &str) -> LogEntry {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        });
        LogEntry::from_line(meta, Stream::Stdout, 1, text.into())
    }

    fn seqs(frame: Outgoing) -> Vec<u64> {
        let Outgoing::Logs(json) = frame else {
            panic!("not a logs frame: {frame:?}")
        };
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn entries_are_numbered_per_slug_from_1_without_gaps_only_when_watched() {
        let hub = LogHub::new(LogSettings::default());
        let metrics = Metrics::new();
        let publisher = Publisher::new(hub.clone(), None, metrics.clone());
        assert!(!publisher.wants("s"));
        publisher.publish("s", vec![line("nobody watches")]);
        let viewer = hub.subscribe("s", Filter::default()).unwrap();
        let other = hub.subscribe("t", Filter::default()).unwrap();
        assert!(publisher.wants("s"));
        publisher.publish("s", (0..250).map(|i| line(&format!("{i}"))).collect());
        publisher.publish("t", vec![line("elsewhere")]);
        let mut got = Vec::new();
        while got.len() < 250 {
            got.extend(seqs(viewer.recv().await));
        }
        assert_eq!(got, (1..=250).collect::<Vec<u64>>());
        assert_eq!(seqs(other.recv().await), [1], "each slug counts alone");
        let text = metrics.render();
        assert!(
            text.contains(r#"mctx_log_entries_total{slug="s",level="log"} 250"#),
            "published entries are counted, the unwatched one is not: {text}"
        );
    }
}
