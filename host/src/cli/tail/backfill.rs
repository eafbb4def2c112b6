//! `tail --since` and reconnections: the stored entries a connection
//! starts with (`GET /api/servers/{slug}/logs`, every page, oldest first),
//! and what was printed, so that the overlap with the live stream is
//! printed once.

use std::collections::{HashSet, VecDeque};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::TailArgs;
use crate::logs::entry::LogEntry;

/// What `tail` printed, so that the overlap of stored entries and the
/// live stream is printed once — and only that: a host that restarts
/// numbers a tenant it does not keep from 1 again, so live entries are
/// never judged by what earlier connections printed.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The entries of this connection's fetch, by node (`""` on one host)
    /// and `seq`: a live entry among them was printed already.
    fetched: HashSet<(String, u64)>,
    /// The last [`Seen::REMEMBERED`] live entries printed: a reconnection's
    /// fetch (from a second before the last one) skips them. Not the
    /// highest `seq` alone: a filter on how requests ended releases a
    /// request's lines when it ends, out of `seq` order.
    recent: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
    /// The newest timestamp printed: where a reconnection's gap starts.
    pub(super) last_timestamp: Option<u64>,
    /// Whether the host keeps this server's logs (a fetch succeeded).
    pub(super) stored: bool,
}

/// Where an entry being printed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum From {
    Live,
    Stored,
}

fn key(entry: &LogEntry) -> (String, u64) {
    (entry.node.as_deref().unwrap_or("").to_string(), entry.seq)
}

impl Seen {
    /// Enough for the overlap of a fetch and the live stream.
    const REMEMBERED: usize = 100_000;

    /// A new connection's fetch begins: the last one's overlap is over.
    pub(super) fn new_fetch(&mut self) {
        self.fetched.clear();
    }

    /// Whether `entry` is to be printed, marking it printed if so.
    pub(super) fn first_time(&mut self, entry: &LogEntry, from: From) -> bool {
        if entry.seq > 0 {
            let key = key(entry);
            match from {
                From::Live if self.fetched.contains(&key) => return false,
                From::Live => {
                    if self.recent.insert(key.clone()) {
                        self.order.push_back(key);
                        if self.order.len() > Self::REMEMBERED {
                            let oldest = self.order.pop_front().expect("not empty");
                            self.recent.remove(&oldest);
                        }
                    }
                }
                From::Stored if self.recent.contains(&key) => return false,
                From::Stored => {
                    self.fetched.insert(key);
                }
            }
        }
        self.last_timestamp = Some(self.last_timestamp.unwrap_or(0).max(entry.timestamp));
        true
    }
}

impl TailArgs {
    /// Where stored entries start on this connection: `--since` the first
    /// time, the last entry printed after a reconnection (when the host
    /// keeps this server's logs); `None`: live only.
    pub(super) fn stored_since(&self) -> Option<String> {
        let seen = crate::base::sync::lock(&self.seen);
        match (seen.last_timestamp, &self.since) {
            // A second back: lines of one request are stamped as written,
            // not in seq order, so the gap starts a little earlier.
            (Some(last), _) if seen.stored => Some(last.saturating_sub(1000).to_string()),
            (None, Some(since)) => Some(since.clone()),
            _ => None,
        }
    }

    /// Every stored entry matching the filters from `since` on, oldest
    /// first, with its pages' note of what the host did not keep.
    pub(super) async fn fetch_stored(&self, since: String) -> Result<Vec<LogEntry>> {
        let (entries, unstored) = self.fetch(&format!("since={}", urlencode(&since))).await?;
        report_unstored(&unstored);
        eprintln!(
            "mctx-host tail: {} stored entries from {since}, then live",
            entries.len()
        );
        let mut seen = crate::base::sync::lock(&self.seen);
        seen.stored = true;
        seen.new_fetch();
        Ok(entries)
    }

    /// Prints what is stored of the requests among `entries` that began
    /// before this connection joined, when the filter asks how requests
    /// ended: the live stream holds back a request's lines until its end,
    /// but only the lines written after it joined; the ones before are in
    /// the store.
    pub(super) async fn fill_in(&self, entries: &[LogEntry], joined_ms: u64, color: bool) {
        let asks_how_requests_ended = self.filter().is_ok_and(|f| f.by_request());
        if !asks_how_requests_ended || !crate::base::sync::lock(&self.seen).stored {
            return;
        }
        for entry in entries {
            let Some(event) = &entry.request else {
                continue;
            };
            if entry.timestamp.saturating_sub(event.wall_ms) >= joined_ms {
                continue; // began after the join: all its lines came live
            }
            let id = urlencode(&entry.meta.request_id);
            match self.fetch(&format!("requestId={id}")).await {
                Ok((older, _)) => self.print_entries(&older, color, super::backfill::From::Stored),
                Err(e) => {
                    eprintln!("mctx-host tail: the start of request {id} is not shown: {e:#}")
                }
            }
        }
    }

    /// Every page of the query (the filters and `extra`), oldest first.
    async fn fetch(&self, extra: &str) -> Result<(Vec<LogEntry>, Value)> {
        let plane = crate::cli::client::ControlPlane::new(
            &self.url,
            self.token.clone(),
            self.ca_cert.as_deref(),
        )?;
        let slug = form_urlencoded::byte_serialize(self.slug.as_bytes()).collect::<String>();
        let mut query = self.filter()?.to_query();
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(extra);
        query.push_str("&limit=1000");
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/servers/{slug}/logs?{query}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={}", urlencode(cursor)));
            }
            let (_, page) = plane
                .call(http::Method::GET, &path, None, bytes::Bytes::new())
                .await?;
            let batch: Vec<LogEntry> = serde_json::from_value(page["entries"].clone())
                .context("the host's answer has no entries")?;
            entries.extend(batch);
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => {
                    entries.reverse();
                    return Ok((entries, page["unstored"].clone()));
                }
            }
        }
    }
}

/// One query-string value.
pub(super) fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// What the host says it did not keep of this server's log, on stderr.
fn report_unstored(unstored: &Value) {
    let Some(counts) = unstored.as_object() else {
        return;
    };
    for (reason, count) in counts {
        let why = match reason.as_str() {
            "quota" => "dropped, oldest first, to stay within the server's retention quota",
            "backlog" => "refused while the host's log store was behind",
            "failed" => "lost to a failing disk",
            _ => "not kept",
        };
        eprintln!(
            "mctx-host tail: {count} entries of this server were {why} (in all, not only in this window)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_overlap_of_a_fetch_and_the_live_stream_is_printed_once() {
        let meta = std::sync::Arc::new(crate::logs::entry::RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let entry = |node: Option<&str>, seq| {
            let mut e = LogEntry::from_line(
                meta.clone(),
                crate::logs::entry::Stream::Stdout,
                seq * 10,
                "x".into(),
            );
            e.node = node.map(Into::into);
            e.seq = seq;
            e
        };
        let mut seen = Seen::default();
        // Connected; the fetch has 1 and 2, the live stream 2 and 3.
        assert!(seen.first_time(&entry(None, 1), From::Stored));
        assert!(seen.first_time(&entry(None, 2), From::Stored));
        assert!(!seen.first_time(&entry(None, 2), From::Live), "the overlap");
        assert!(seen.first_time(&entry(None, 4), From::Live));
        assert!(
            seen.first_time(&entry(None, 3), From::Live),
            "released out of order"
        );
        assert!(
            seen.first_time(&entry(Some("b"), 1), From::Live),
            "each node counts alone"
        );
        assert_eq!(seen.last_timestamp, Some(40));
        // Reconnected: the gap's fetch skips what was printed live.
        seen.new_fetch();
        assert!(!seen.first_time(&entry(None, 4), From::Stored));
        assert!(seen.first_time(&entry(None, 5), From::Stored));
        // A host that restarted without keeping this tenant numbers from 1
        // again: live entries are never judged by an earlier connection.
        seen.new_fetch();
        assert!(seen.first_time(&entry(None, 1), From::Live));
        assert!(seen.first_time(&entry(None, 2), From::Live));
    }
}
