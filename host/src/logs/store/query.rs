//! Reading the store back: `GET /api/servers/{slug}/logs?…` and `tail
//! --since`. A query takes the live stream's filters (`logs::filter`, the
//! same parameters, applied by the same code) and a window:
//!
//! ```text
//! since=15m | 2026-12-04T18:00:00Z | 1733335200000     oldest entry wanted (default: all kept)
//! until=…                                              entries before this
//! limit=100                                            at most this many (1-1000)
//! cursor=…                                             the `next` of the previous page
//! ```
//!
//! Pages come newest first: `{"entries":[…],"next":"…"|null,"unstored":{reason:n}}`.
//! `next` continues further back (the next page may be empty when the
//! filters match nothing older); `null` means nothing older is stored in
//! the window.
//! `unstored` says how many of this tenant's entries were never kept or
//! were dropped for newer ones (`quota`, `backlog`, `failed`).

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::base::config::parse_duration;
use crate::logs::entry::{EntryKind, LogEntry};
use crate::logs::filter::Filter;

/// Entries a page holds unless `limit` says otherwise.
pub(crate) const DEFAULT_LIMIT: usize = 100;
pub(crate) const MAX_LIMIT: usize = 1000;

/// Rows one page looks at, at most: a search that matches nothing in a
/// big store answers a page with `next` set rather than read it all.
const MAX_SCANNED: usize = 20_000;

/// One query: which entries, and where the page starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query {
    pub(crate) filter: Filter,
    /// Milliseconds since the epoch: entries at or after.
    pub(crate) since: Option<u64>,
    /// Entries strictly before.
    pub(crate) until: Option<u64>,
    pub(crate) limit: usize,
    /// Rows older than this one (a page's `next`).
    pub(crate) before: Option<i64>,
}

impl Query {
    /// Reads a query string; times relative to `now_ms`.
    pub(crate) fn parse(query: &str, now_ms: u64) -> Result<Query, String> {
        let mut parsed = Query {
            filter: Filter::from_query(query)?,
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "since" => parsed.since = Some(time(&value, now_ms, "since")?),
                "until" => parsed.until = Some(time(&value, now_ms, "until")?),
                "limit" => {
                    parsed.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("limit {value:?}: use a number from 1 to {MAX_LIMIT}")
                        })?;
                }
                // The live stream's filters, read above.
                "level" | "search" | "requestId" | "type" | "samplingRate" | "status"
                | "method" | "header" | "mcpMethod" => {}
                "cursor" => {
                    parsed.before =
                        Some(value.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                            format!("cursor {value:?} is not one this host gave (a page's next)")
                        })?);
                }
                // A misspelt parameter would widen the answer unseen.
                unknown => {
                    return Err(format!(
                        "unknown parameter {unknown:?}: use since, until, limit, cursor, level, \
                         search, requestId, type, samplingRate, status, method, header or mcpMethod"
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

impl Query {
    /// The window as the SQL takes it: from `since` (inclusive) to `until`
    /// (exclusive).
    fn window(&self) -> (i64, i64) {
        (
            self.since.unwrap_or(0) as i64,
            self.until.map_or(i64::MAX, |t| t as i64),
        )
    }
}

/// `since`/`until`: milliseconds since the epoch, an RFC 3339 time, or a
/// duration before now (`15m`, `2h`, `7d`).
fn time(text: &str, now_ms: u64, name: &str) -> Result<u64, String> {
    /// 1973-03-03: a smaller number of milliseconds is far likelier a
    /// duration missing its unit (`15` for `15m`) than a time.
    const EARLIEST_MS: u64 = 100_000_000_000;
    if let Ok(ms) = text.parse::<u64>() {
        if ms < EARLIEST_MS {
            return Err(format!(
                "{name} {text:?} would be milliseconds since 1970: give a unit for a duration \
                 before now ({text}m, {text}h) or 13 digits for a time"
            ));
        }
        return (ms <= i64::MAX as u64)
            .then_some(ms)
            .ok_or_else(|| format!("{name} {text:?} is past any time an entry can have"));
    }
    if text.contains('T') {
        // A time says its zone: one without could be anyone's.
        return chrono::DateTime::parse_from_rfc3339(text)
            .map(|at| at.timestamp_millis().max(0) as u64)
            .map_err(|e| {
                format!(
                    "{name} {text:?} is not an RFC 3339 time with its zone \
                     (2026-12-04T18:00:00Z, 2026-12-04T23:30:00+05:30): {e}"
                )
            });
    }
    parse_duration(text)
        .map(|ago| now_ms.saturating_sub(ago.as_millis() as u64))
        .map_err(|_| {
            format!(
                "{name} {text:?}: use a duration before now (15m, 2h, 7d), an RFC 3339 time \
                 (2026-12-04T18:00:00Z) or milliseconds since the epoch"
            )
        })
}

/// One page of a query's answer.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Newest first, each the entry's wire JSON.
    pub(crate) entries: Vec<String>,
    /// Where the next (older) page starts; `None`: nothing older matches.
    pub(crate) next: Option<i64>,
    /// This tenant's entries not kept, by reason.
    pub(crate) unstored: BTreeMap<String, u64>,
}

impl Page {
    /// The page as the API answers it.
    pub(crate) fn json(&self) -> String {
        let mut out = String::from(r#"{"entries":["#);
        out.push_str(&self.entries.join(","));
        out.push_str(r#"],"next":"#);
        match self.next {
            Some(id) => out.push_str(&format!("\"{id}\"")),
            None => out.push_str("null"),
        }
        out.push_str(r#","unstored":"#);
        out.push_str(&serde_json::to_string(&self.unstored).expect("counts serialize"));
        out.push('}');
        out
    }
}

/// Runs `query` over `slug`'s entries.
pub(super) fn run(conn: &Connection, slug: &str, query: &Query) -> rusqlite::Result<Page> {
    let mut unstored = conn.prepare_cached("SELECT reason, count FROM unstored WHERE slug = ?1")?;
    let mut page = Page {
        unstored: unstored
            .query_map([slug], |row| {
                Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
            })?
            .collect::<rusqlite::Result<_>>()?,
        ..Page::default()
    };
    let Some(range) = super::schema::range(conn, slug)? else {
        return Ok(page); // nothing was ever kept of it
    };
    let by_request = query.filter.by_request();
    // The request's own event comes along when the filter asks how a
    // request ended.
    let sql = format!(
        "SELECT e.id, e.entry, {event} FROM entries e {join}
         WHERE e.id BETWEEN ?1 AND MIN(?2, ?7) AND e.timestamp >= ?3 AND e.timestamp < ?4
           AND {request}
         ORDER BY e.id DESC LIMIT ?6",
        event = if by_request { "r.entry" } else { "NULL" },
        // One request's entries come by the request index.
        request = if query.filter.request_id.is_some() {
            "e.request_id = ?5"
        } else {
            "?5 IS NULL"
        },
        join = if by_request {
            "LEFT JOIN entries r ON r.request_id = e.request_id AND r.kind = 'request' \
             AND r.id BETWEEN ?1 AND ?7 AND e.request_id != ''"
        } else {
            ""
        },
    );
    let mut rows = conn.prepare_cached(&sql)?;
    let (since, until) = query.window();
    let mut before = query.before.unwrap_or(i64::MAX).min(range.hi + 1);
    let mut scanned = 0;
    const CHUNK: usize = 512;
    'pages: loop {
        let chunk: Vec<(i64, String, Option<String>)> = rows
            .query_map(
                params![
                    range.lo,
                    before - 1,
                    since,
                    until,
                    query.filter.request_id,
                    CHUNK as i64,
                    range.hi,
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?
            .collect::<rusqlite::Result<_>>()?;
        let exhausted = chunk.len() < CHUNK;
        for (id, text, event) in chunk {
            before = id;
            scanned += 1;
            if wanted(&query.filter, by_request, &text, event.as_deref()) {
                page.entries.push(text);
                if page.entries.len() == query.limit {
                    page.next = Some(id);
                    break 'pages;
                }
            }
            if scanned >= MAX_SCANNED {
                page.next = Some(id);
                break 'pages;
            }
        }
        if exhausted {
            break;
        }
    }
    if let Some(next) = page.next
        && !more_before(conn, range, query, next)?
    {
        page.next = None;
    }
    Ok(page)
}

/// Whether a row older than `next` is in the window at all (so that a
/// page that ends exactly at the last entry says there is no more; the
/// filters beyond the window are not looked at, so `next` may still lead
/// to an empty page).
fn more_before(
    conn: &Connection,
    range: super::schema::Range,
    query: &Query,
    next: i64,
) -> rusqlite::Result<bool> {
    let (since, until) = query.window();
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM entries WHERE id BETWEEN ?1 AND ?2
           AND timestamp >= ?3 AND timestamp < ?4 AND (?5 IS NULL OR request_id = ?5))",
    )?
    .query_row(
        params![range.lo, next - 1, since, until, query.filter.request_id,],
        |row| row.get(0),
    )
}

/// Whether a stored entry passes the filter, as a live one would.
fn wanted(filter: &Filter, by_request: bool, text: &str, event: Option<&str>) -> bool {
    let Ok(entry) = serde_json::from_str::<LogEntry>(text) else {
        return false; // not ours to show: written by something else
    };
    if !filter.matches(&entry) {
        return false;
    }
    if !by_request || entry.meta.request_id.is_empty() {
        return true;
    }
    // A line waits for its request's end live; stored, the end is there
    // (or the request has not ended yet, and the line is not shown).
    let event = match (&entry.request, entry.kind) {
        (Some(event), EntryKind::Request) => Some(event.clone()),
        _ => event
            .and_then(|text| serde_json::from_str::<LogEntry>(text).ok())
            .and_then(|end| end.request),
    };
    event.is_some_and(|event| filter.request_matches(&event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_milliseconds_times_or_durations_before_now() {
        let now = 1_796_407_260_000;
        let q = Query::parse("since=15m&until=1796407259000&limit=5&level=warn", now).unwrap();
        assert_eq!(q.since, Some(now - 15 * 60 * 1000));
        assert_eq!(q.until, Some(1_796_407_259_000));
        assert_eq!(q.limit, 5);
        assert_eq!(q.filter.levels.len(), 1);
        let q = Query::parse("since=2026-12-04T18:00:00Z", now).unwrap();
        assert_eq!(q.since, Some(1_796_407_200_000));
        let q = Query::parse("since=2026-12-04T23:30:00%2B05:30", now).unwrap();
        assert_eq!(q.since, Some(1_796_407_200_000), "an offset is honoured");
        let q = Query::parse("since=1796407200000", now).unwrap();
        assert_eq!(q.since, Some(1_796_407_200_000));
        assert_eq!(Query::parse("", now).unwrap().limit, DEFAULT_LIMIT);
        for bad in [
            "since=yesterday",
            "limit=0",
            "limit=1001",
            "cursor=x",
            "level=loud",
            "until=18446744073709551615",
            "since=15",
            "since=2026-12-04T18:00:00",
            "sinse=1h",
        ] {
            assert!(Query::parse(bad, now).is_err(), "{bad}");
        }
    }
}
