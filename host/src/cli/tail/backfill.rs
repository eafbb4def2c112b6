//! `tail --since` and reconnections: the stored entries a connection
//! starts with (`GET /api/servers/{slug}/logs`, every page, oldest first),
//! and what was printed, so that the overlap with the live stream is
//! printed once.

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::TailArgs;
use crate::logs::entry::LogEntry;

/// What `tail` printed already, so that nothing is printed twice.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// The last [`Seen::REMEMBERED`] entries printed, by node (`""` on one
    /// host) and `seq`: not the highest `seq` alone, since a filter on how
    /// requests ended releases a request's lines when it ends, out of
    /// `seq` order.
    recent: std::collections::HashSet<(String, u64)>,
    order: std::collections::VecDeque<(String, u64)>,
    /// The newest timestamp printed: where a reconnection's gap starts.
    last_timestamp: Option<u64>,
    /// Whether the host keeps this server's logs (a fetch succeeded).
    stored: bool,
}

impl Seen {
    /// Enough for the overlap of a fetch and the live stream.
    const REMEMBERED: usize = 100_000;

    /// Whether `entry` is new, marking it printed if so.
    pub(super) fn first_time(&mut self, entry: &LogEntry) -> bool {
        if entry.seq > 0 {
            let key = (entry.node.as_deref().unwrap_or("").to_string(), entry.seq);
            if !self.recent.insert(key.clone()) {
                return false;
            }
            self.order.push_back(key);
            if self.order.len() > Self::REMEMBERED {
                let oldest = self.order.pop_front().expect("not empty");
                self.recent.remove(&oldest);
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
        query.push_str(&format!("since={}&limit=1000", urlencode(&since)));
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
                    if cursor.is_none() || !entries.is_empty() {
                        report_unstored(&page["unstored"]);
                    }
                    break;
                }
            }
        }
        crate::base::sync::lock(&self.seen).stored = true;
        entries.reverse();
        Ok(entries)
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
    fn an_entry_is_printed_once_per_node_and_seq() {
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
        assert!(seen.first_time(&entry(None, 1)));
        assert!(seen.first_time(&entry(None, 2)));
        assert!(
            !seen.first_time(&entry(None, 2)),
            "the overlap of stored and live"
        );
        assert!(!seen.first_time(&entry(None, 1)));
        assert!(
            seen.first_time(&entry(Some("b"), 1)),
            "each node counts alone"
        );
        assert!(seen.first_time(&entry(None, 4)));
        assert!(seen.first_time(&entry(None, 3)), "released out of order");
        assert_eq!(seen.last_timestamp, Some(40));
    }
}
