//! Lines waiting for their request's end: for a viewer whose filter asks
//! how a request ended (`status`, `method`, `header`), a line cannot be
//! judged when it is written, only when its request's `type:"request"`
//! event arrives. Until then the viewer's lines wait here, per request;
//! the event releases them (in order, then itself) or discards them.
//! `wrangler tail` shows a request whole, at its end, for the same reason.
//!
//! Bounded: past the viewer's queue size in waiting lines, the oldest
//! request's lines are given up and counted as missed (its event may still
//! come, with a `dropped` frame before it), so a request that never ends
//! (its host died) cannot hold memory forever.

use std::collections::{HashMap, VecDeque};

use crate::logs::entry::{EntryKind, LogEntry};
use crate::logs::filter::Filter;

#[derive(Debug)]
pub(super) struct Held {
    /// Waiting lines by request id, in `seq` order.
    requests: HashMap<String, Vec<LogEntry>>,
    /// Request ids in the order their first line came (ids whose lines
    /// were released are removed lazily).
    order: VecDeque<String>,
    entries: usize,
    limit: usize,
}

impl Held {
    pub(super) fn new(limit: usize) -> Self {
        Held {
            requests: HashMap::new(),
            order: VecDeque::new(),
            entries: 0,
            limit: limit.max(1),
        }
    }

    /// What of `chunk` the viewer gets now, in order, and how many waiting
    /// lines were given up to stay within the limit.
    pub(super) fn pass(&mut self, chunk: &[LogEntry], filter: &Filter) -> (Vec<LogEntry>, u64) {
        let mut out = Vec::new();
        let mut missed = 0;
        for entry in chunk {
            let id = &entry.meta.request_id;
            match (&entry.request, entry.kind) {
                (Some(event), EntryKind::Request) => {
                    let lines = self.requests.remove(id).unwrap_or_default();
                    self.entries -= lines.len();
                    if filter.request_matches(event) {
                        out.extend(lines);
                        if filter.matches(entry) {
                            out.push(entry.clone());
                        }
                    }
                }
                // Not of a request (deployments): nothing to wait for.
                _ if id.is_empty() => {
                    if filter.matches(entry) {
                        out.push(entry.clone());
                    }
                }
                _ => {
                    if !filter.matches(entry) {
                        continue;
                    }
                    let lines = self.requests.entry(id.clone()).or_insert_with(|| {
                        self.order.push_back(id.clone());
                        Vec::new()
                    });
                    lines.push(entry.clone());
                    self.entries += 1;
                    missed += self.evict();
                }
            }
        }
        if self.order.len() > 2 * self.requests.len() + 64 {
            let requests = &self.requests;
            self.order.retain(|id| requests.contains_key(id));
        }
        (out, missed)
    }

    /// Gives up the oldest requests' lines until within the limit.
    fn evict(&mut self) -> u64 {
        let mut given_up = 0;
        while self.entries > self.limit {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(lines) = self.requests.remove(&oldest) {
                self.entries -= lines.len();
                given_up += lines.len() as u64;
            }
        }
        given_up
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logs::entry::{Outcome, RequestEvent, RequestMeta, Stream};

    fn meta(id: &str) -> Arc<RequestMeta> {
        Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: id.into(),
        })
    }

    fn line(id: &str, text: &str) -> LogEntry {
        LogEntry::from_line(meta(id), Stream::Stdout, 1, text.into())
    }

    fn end(id: &str, outcome: Outcome) -> LogEntry {
        LogEntry::request_event(
            meta(id),
            RequestEvent {
                method: "GET".into(),
                path: "/".into(),
                status: Some(200),
                outcome,
                wall_ms: 1,
                cpu_ms: 1,
                subrequests: 0,
                exception: None,
                headers: Default::default(),
                mcp: None,
            },
        )
    }

    fn messages(entries: &[LogEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn lines_wait_for_their_request_and_go_with_it_or_not_at_all() {
        let errors = Filter::from_query("status=error").unwrap();
        let mut held = Held::new(100);
        let (now, missed) = held.pass(
            &[line("a", "a1"), line("b", "b1"), line("a", "a2")],
            &errors,
        );
        assert!(now.is_empty() && missed == 0);
        let (now, _) = held.pass(&[end("a", Outcome::Ok), line("b", "b2")], &errors);
        assert!(now.is_empty(), "an ok request's lines are discarded");
        let (now, _) = held.pass(&[end("b", Outcome::Exception)], &errors);
        assert_eq!(messages(&now), ["b1", "b2", "GET / 200 exception (1 ms)"]);
        assert_eq!((held.entries, held.requests.len()), (0, 0));
    }

    #[test]
    fn the_oldest_request_is_given_up_past_the_limit() {
        let errors = Filter::from_query("status=error").unwrap();
        let mut held = Held::new(3);
        let (_, missed) = held.pass(
            &[
                line("a", "a1"),
                line("a", "a2"),
                line("b", "b1"),
                line("b", "b2"),
            ],
            &errors,
        );
        assert_eq!(missed, 2, "a's two lines");
        let (now, _) = held.pass(&[end("a", Outcome::Exception)], &errors);
        assert_eq!(messages(&now), ["GET / 200 exception (1 ms)"]);
        let (now, _) = held.pass(&[end("b", Outcome::Exception)], &errors);
        assert_eq!(messages(&now)[..2], ["b1", "b2"]);
    }
}
