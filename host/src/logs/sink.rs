//! Where captured entries go: the [`LogSink`] trait, and the sinks that
//! only combine or discard. The real ones are the publisher (hubs and
//! cluster) and the console printer.

use std::sync::Arc;

use crate::logs::entry::LogEntry;

/// Where captured entries go. Implemented by the log hubs and the console
/// printer; `wants` lets capture skip building entries nobody will read.
pub trait LogSink: Send + Sync + 'static {
    /// Whether anyone is listening for this slug's entries right now.
    fn wants(&self, slug: &str) -> bool;
    /// Takes entries of one slug, in the order they were written.
    fn publish(&self, slug: &str, entries: Vec<LogEntry>);
    /// Whether a request's event should carry its headers: only for a
    /// reader that shows or filters on them (the log stream), so that a
    /// console alone does not copy every request's headers.
    fn wants_headers(&self, slug: &str) -> bool {
        self.wants(slug)
    }
}

/// A sink that discards everything: capture then only counts bytes.
pub struct Discard;

impl LogSink for Discard {
    fn wants(&self, _slug: &str) -> bool {
        false
    }
    fn publish(&self, _slug: &str, _entries: Vec<LogEntry>) {}
}

/// Two sinks at once (the log hub and the console). Entries are cloned only
/// when both want them.
pub struct Tee(pub Arc<dyn LogSink>, pub Arc<dyn LogSink>);

impl LogSink for Tee {
    fn wants(&self, slug: &str) -> bool {
        self.0.wants(slug) || self.1.wants(slug)
    }

    fn wants_headers(&self, slug: &str) -> bool {
        self.0.wants_headers(slug) || self.1.wants_headers(slug)
    }

    fn publish(&self, slug: &str, entries: Vec<LogEntry>) {
        match (self.0.wants(slug), self.1.wants(slug)) {
            (true, true) => {
                self.0.publish(slug, entries.clone());
                self.1.publish(slug, entries);
            }
            (true, false) => self.0.publish(slug, entries),
            (false, true) => self.1.publish(slug, entries),
            (false, false) => {}
        }
    }
}
