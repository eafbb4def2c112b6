//! The store's one writer: a thread of its own (SQLite blocks), taking
//! whatever the backlog holds and writing it in one transaction, then
//! keeping each tenant within its retention: the oldest entries past its
//! bytes go at once, entries past its age at the next purge (every
//! [`PURGE_EVERY`]), and a tenant no longer retained (removed, or its
//! retention turned off) loses what was kept of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, params};

use super::Shared;
use super::backlog::{Backlog, Batch, Command};
use crate::base::config::Retention;
use crate::logs::entry::{LogEntry, now_ms};

/// How often entries past their age are deleted.
pub(super) const PURGE_EVERY: Duration = Duration::from_secs(30);

/// How often a failing disk is reported in the host's own log.
const REPORT_FAILURES_EVERY: Duration = Duration::from_secs(60);

/// How a batch went: written, or failed with the entries it held.
type Written = Result<(), (rusqlite::Error, u64)>;

/// Told once what came before it is written.
type Barrier = tokio::sync::oneshot::Sender<()>;

pub(super) struct Writer {
    conn: Connection,
    backlog: Arc<Backlog>,
    shared: Arc<Shared>,
    /// Per slug, the bytes of entries kept.
    sizes: HashMap<String, u64>,
    last_purge: Option<Instant>,
    last_failure_report: Option<Instant>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        backlog: Arc<Backlog>,
        shared: Arc<Shared>,
    ) -> rusqlite::Result<Writer> {
        let sizes = {
            let mut query = conn.prepare("SELECT slug, SUM(bytes) FROM entries GROUP BY slug")?;
            query
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<_>>()?
        };
        Ok(Writer {
            conn,
            backlog,
            shared,
            sizes,
            last_purge: None,
            last_failure_report: None,
        })
    }

    /// Writes until the backlog is closed and drained.
    pub(super) fn run(mut self) {
        while let Some(batch) = self.backlog.take(PURGE_EVERY) {
            let (entries, flushes) = self.write(batch);
            if let Err(e) = entries {
                self.failed(e);
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// One batch in one transaction; returns how that went and the
    /// barriers to release once it is done.
    fn write(&mut self, batch: Batch) -> (Written, Vec<Barrier>) {
        let mut flushes = Vec::new();
        let mut appends = Vec::new();
        for command in batch.commands {
            match command {
                Command::Append { slug, entries } => appends.push((slug, entries)),
                Command::Flush(done) => flushes.push(done),
            }
        }
        let count: u64 = appends.iter().map(|(_, e)| e.len() as u64).sum();
        let purge = self.last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY);
        let mut sizes = self.sizes.clone();
        let result = (|| {
            let tx = self.conn.transaction()?;
            let mut touched = Vec::new();
            for (slug, entries) in &appends {
                let added = insert(&tx, slug, entries)?;
                *sizes.entry(slug.clone()).or_default() += added;
                touched.push(slug.as_str());
            }
            for (slug, refused) in &batch.refused {
                count_unstored(&tx, slug, "backlog", *refused)?;
                self.shared
                    .metrics
                    .entries_unstored(slug, "backlog", *refused);
            }
            let policies = self.shared.policies.load();
            touched.sort_unstable();
            touched.dedup();
            for slug in touched {
                if let Some(retention) = policies.get(slug) {
                    let evicted = keep_within(&tx, slug, &mut sizes, retention.max_bytes)?;
                    if evicted > 0 {
                        count_unstored(&tx, slug, "quota", evicted)?;
                        self.shared.metrics.entries_unstored(slug, "quota", evicted);
                    }
                }
            }
            if purge {
                let known = self.shared.policies_known();
                purge_expired(&tx, &mut sizes, &policies, known)?;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                self.sizes = sizes;
                if purge {
                    self.last_purge = Some(Instant::now());
                }
                self.shared.metrics.entries_stored(count);
                (Ok(()), flushes)
            }
            Err(e) => {
                for (slug, entries) in &appends {
                    self.shared
                        .metrics
                        .entries_unstored(slug, "failed", entries.len() as u64);
                }
                (Err((e, count)), flushes)
            }
        }
    }

    /// A batch that could not be written (the disk is full, the file
    /// broken): counted (`failed`), and said in the host's log at most once
    /// a minute. The next batch tries again.
    fn failed(&mut self, (error, lost): (rusqlite::Error, u64)) {
        if self
            .last_failure_report
            .is_none_or(|at| at.elapsed() >= REPORT_FAILURES_EVERY)
        {
            self.last_failure_report = Some(Instant::now());
            tracing::warn!(%error, lost, "log store: entries could not be written (counted as unstored, reason failed)");
        }
    }
}

/// Stores `entries` of `slug` and its last `seq`; returns their bytes.
fn insert(tx: &Transaction<'_>, slug: &str, entries: &[LogEntry]) -> rusqlite::Result<u64> {
    let mut row = tx.prepare_cached(
        "INSERT INTO entries (slug, seq, node, timestamp, level, kind, request_id, bytes, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    let mut bytes = 0;
    let mut last_seq = 0;
    for entry in entries {
        let json = serde_json::to_string(entry).expect("entries serialize");
        bytes += json.len() as u64;
        last_seq = last_seq.max(entry.seq);
        row.execute(params![
            slug,
            entry.seq as i64,
            entry.node.as_deref().unwrap_or(""),
            entry.timestamp as i64,
            entry.level.as_str(),
            entry.kind.as_str(),
            entry.meta.request_id,
            json.len() as i64,
            json,
        ])?;
    }
    tx.prepare_cached(
        "INSERT INTO sequences (slug, last_seq) VALUES (?1, ?2)
         ON CONFLICT (slug) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
    )?
    .execute(params![slug, last_seq as i64])?;
    Ok(bytes)
}

fn count_unstored(
    tx: &Transaction<'_>,
    slug: &str,
    reason: &str,
    count: u64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO unstored (slug, reason, count) VALUES (?1, ?2, ?3)
         ON CONFLICT (slug, reason) DO UPDATE SET count = count + excluded.count",
    )?
    .execute(params![slug, reason, count as i64])?;
    Ok(())
}

/// Drops `slug`'s oldest entries until it holds at most 90 % of
/// `max_bytes` (so that a tenant at its limit does not pay a delete per
/// line); returns how many went.
fn keep_within(
    tx: &Transaction<'_>,
    slug: &str,
    sizes: &mut HashMap<String, u64>,
    max_bytes: u64,
) -> rusqlite::Result<u64> {
    let size = sizes.get(slug).copied().unwrap_or(0);
    if size <= max_bytes {
        return Ok(0);
    }
    let target = max_bytes - max_bytes / 10;
    let (freed, count) = drop_oldest(tx, slug, |_, freed| size - freed > target)?;
    sizes.insert(slug.to_string(), size - freed);
    Ok(count)
}

/// Deletes `slug`'s oldest entries while `more(timestamp, freed so far)`
/// says so; returns the bytes freed and the entries deleted.
fn drop_oldest(
    tx: &Transaction<'_>,
    slug: &str,
    mut more: impl FnMut(u64, u64) -> bool,
) -> rusqlite::Result<(u64, u64)> {
    let mut oldest = tx.prepare_cached(
        "SELECT id, timestamp, bytes FROM entries WHERE slug = ?1 ORDER BY id LIMIT 512",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM entries WHERE slug = ?1 AND id <= ?2")?;
    let (mut freed, mut count) = (0u64, 0u64);
    loop {
        let rows: Vec<(i64, u64, u64)> = oldest
            .query_map([slug], |row| {
                Ok((
                    row.get(0)?,
                    row.get::<_, i64>(1)? as u64,
                    row.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut last = None;
        let mut done = rows.len() < 512;
        for (id, timestamp, bytes) in rows {
            if !more(timestamp, freed) {
                done = true;
                break;
            }
            freed += bytes;
            count += 1;
            last = Some(id);
        }
        if let Some(id) = last {
            delete.execute(params![slug, id])?;
        }
        if done || last.is_none() {
            return Ok((freed, count));
        }
    }
}

/// Deletes what is past its age, and everything of a slug no longer
/// retained (once the policies are known: never on a store just opened).
fn purge_expired(
    tx: &Transaction<'_>,
    sizes: &mut HashMap<String, u64>,
    policies: &HashMap<String, Retention>,
    known: bool,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let slugs: Vec<String> = sizes.keys().cloned().collect();
    for slug in slugs {
        match policies.get(&slug) {
            Some(retention) => {
                let cutoff = now.saturating_sub(retention.age.as_millis() as u64);
                let (freed, _) = drop_oldest(tx, &slug, |timestamp, _| timestamp < cutoff)?;
                if let Some(size) = sizes.get_mut(&slug) {
                    *size -= freed.min(*size);
                }
            }
            None if known => {
                tx.execute("DELETE FROM entries WHERE slug = ?1", [&slug])?;
                tx.execute("DELETE FROM unstored WHERE slug = ?1", [&slug])?;
                sizes.remove(&slug);
            }
            None => {}
        }
    }
    Ok(())
}
