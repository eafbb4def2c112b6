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
use super::backlog::{Backlog, Batch, Command, Refused, note_last_seqs};
use super::schema::{self, Range};
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
    /// Per slug, the owner its entries were kept for.
    owners: HashMap<String, String>,
    /// Per slug, its ids and the next one to give.
    ids: HashMap<String, (Range, i64)>,
    /// Entries not kept that the store does not know of yet (a batch that
    /// failed, or the refusals it held), for the next batch that commits.
    pending: Vec<(String, Refused, &'static str)>,
    last_purge: Option<Instant>,
    last_failure_report: Option<Instant>,
}

/// Counts to tell `/metrics` once a batch has committed.
#[derive(Default)]
struct Counted {
    stored: u64,
    unstored: Vec<(String, &'static str, u64)>,
}

impl Writer {
    pub(super) fn new(
        conn: Connection,
        backlog: Arc<Backlog>,
        shared: Arc<Shared>,
    ) -> rusqlite::Result<Writer> {
        let pairs = |sql: &str| -> rusqlite::Result<Vec<(String, rusqlite::types::Value)>> {
            let mut query = conn.prepare(sql)?;
            query
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        };
        let sizes = pairs(
            "SELECT s.slug, SUM(e.bytes) FROM entries e JOIN slugs s ON s.number = e.id >> 40
             GROUP BY s.slug",
        )?
        .into_iter()
        .filter_map(|(slug, sum)| match sum {
            rusqlite::types::Value::Integer(n) => Some((slug, n as u64)),
            _ => None,
        })
        .collect();
        let owners = pairs("SELECT slug, owner FROM owners")?
            .into_iter()
            .filter_map(|(slug, owner)| match owner {
                rusqlite::types::Value::Text(owner) => Some((slug, owner)),
                _ => None,
            })
            .collect();
        Ok(Writer {
            conn,
            backlog,
            shared,
            sizes,
            owners,
            ids: HashMap::new(),
            pending: Vec::new(),
            last_purge: None,
            last_failure_report: None,
        })
    }

    /// Writes until the backlog is closed and drained.
    pub(super) fn run(mut self) {
        while let Some(batch) = self.backlog.take(PURGE_EVERY) {
            let bytes = batch.bytes;
            let (written, flushes) = self.write(batch);
            self.backlog.release(bytes);
            if let Err(e) = written {
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
        let mut steps = Vec::new();
        for command in batch.commands {
            match command {
                Command::Flush(done) => flushes.push(done),
                other => steps.push(other),
            }
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend(
            batch
                .refused
                .into_iter()
                .map(|(slug, refused)| (slug, refused, "backlog")),
        );
        let purge = self.last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY);
        let mut sizes = self.sizes.clone();
        let mut owners = self.owners.clone();
        let mut ids = self.ids.clone();
        let mut counted = Counted::default();
        let result = (|| {
            let tx = self.conn.transaction()?;
            let mut touched = Vec::new();
            for step in &steps {
                match step {
                    Command::Append {
                        slug,
                        entries,
                        followed,
                    } => {
                        let added = insert(&tx, slug, entries, &mut ids)?;
                        *sizes.entry(slug.clone()).or_default() += added;
                        counted.stored += entries.len() as u64;
                        touched.push(slug.as_str());
                        if let Some(stream_seq) = followed {
                            tx.prepare_cached(
                                "INSERT INTO followed (slug, stream_seq) VALUES (?1, ?2)
                                 ON CONFLICT (slug) DO UPDATE SET stream_seq = excluded.stream_seq",
                            )?
                            .execute(params![slug, *stream_seq as i64])?;
                        }
                    }
                    Command::Policies(policies) => {
                        forget_unretained(&tx, &mut sizes, &mut owners, policies)?;
                    }
                    Command::Flush(_) => {}
                }
            }
            for (slug, refused, reason) in &pending {
                count_unstored(&tx, slug, reason, refused.count)?;
                note_sequences(&tx, slug, &refused.last_seq)?;
                counted.unstored.push((slug.clone(), reason, refused.count));
            }
            let policies = self.shared.policies.load();
            touched.sort_unstable();
            touched.dedup();
            for slug in touched {
                if let Some(policy) = policies.get(slug) {
                    let evicted = keep_within(&tx, slug, &mut sizes, policy.retention.max_bytes)?;
                    if evicted > 0 {
                        count_unstored(&tx, slug, "quota", evicted)?;
                        counted.unstored.push((slug.to_string(), "quota", evicted));
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
                self.owners = owners;
                self.ids = ids;
                if purge {
                    self.last_purge = Some(Instant::now());
                }
                let metrics = &self.shared.metrics;
                metrics.entries_stored(counted.stored);
                for (slug, reason, count) in counted.unstored {
                    metrics.entries_unstored(&slug, reason, count);
                }
                (Ok(()), flushes)
            }
            Err(e) => {
                // Not kept: counted when a batch commits again, with the
                // refusals this one held.
                let mut lost = 0;
                for step in steps {
                    if let Command::Append { slug, entries, .. } = step {
                        lost += entries.len() as u64;
                        let mut refused = Refused::default();
                        refused.add(&entries);
                        pending.push((slug, refused, "failed"));
                    } else if let Command::Policies(policies) = step {
                        // Forgetting is retried with the next batch.
                        self.backlog.policies(policies);
                    }
                }
                self.pending = pending;
                (Err((e, lost)), flushes)
            }
        }
    }

    /// A batch that could not be written (the disk is full, the file
    /// broken): counted (`failed`) once a batch commits again, and said in
    /// the host's log at most once a minute. The next batch tries again.
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

/// Forgets at once what was kept of a tenant no longer retained, or of a
/// slug that now has another owner (what was kept was its last owner's),
/// and records whose each slug is.
fn forget_unretained(
    tx: &Transaction<'_>,
    sizes: &mut HashMap<String, u64>,
    owners: &mut HashMap<String, String>,
    policies: &HashMap<String, super::Policy>,
) -> rusqlite::Result<()> {
    let kept: Vec<String> = sizes.keys().chain(owners.keys()).cloned().collect();
    for slug in kept {
        let same_owner = match (policies.get(&slug), owners.get(&slug)) {
            (Some(policy), Some(owner)) => policy.owner == *owner,
            (Some(_), None) => true, // kept before owners were recorded
            (None, _) => false,
        };
        if !same_owner {
            forget(tx, &slug)?;
            sizes.remove(&slug);
            owners.remove(&slug);
        }
    }
    for (slug, policy) in policies {
        if owners.get(slug) != Some(&policy.owner) {
            tx.prepare_cached(
                "INSERT INTO owners (slug, owner) VALUES (?1, ?2)
                 ON CONFLICT (slug) DO UPDATE SET owner = excluded.owner",
            )?
            .execute(params![slug, policy.owner])?;
            owners.insert(slug.clone(), policy.owner.clone());
        }
    }
    Ok(())
}

/// Everything kept of `slug` (its number stays, and its ids go on).
fn forget(tx: &Transaction<'_>, slug: &str) -> rusqlite::Result<()> {
    if let Some(range) = schema::range(tx, slug)? {
        tx.prepare_cached("DELETE FROM entries WHERE id BETWEEN ?1 AND ?2")?
            .execute(params![range.lo, range.hi])?;
    }
    for table in ["unstored", "followed", "owners"] {
        tx.execute(&format!("DELETE FROM {table} WHERE slug = ?1"), [slug])?;
    }
    Ok(())
}

/// Records the highest `seq` of each producer among entries not kept, so
/// that numbering after a restart goes past them.
fn note_sequences(
    tx: &Transaction<'_>,
    slug: &str,
    last_seq: &HashMap<String, u64>,
) -> rusqlite::Result<()> {
    let mut sequence = tx.prepare_cached(
        "INSERT INTO sequences (slug, node, last_seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (slug, node) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
    )?;
    for (node, last) in last_seq {
        sequence.execute(params![slug, node, *last as i64])?;
    }
    Ok(())
}

/// Stores `entries` of `slug` and its last `seq`; returns their bytes.
fn insert(
    tx: &Transaction<'_>,
    slug: &str,
    entries: &[LogEntry],
    ids: &mut HashMap<String, (Range, i64)>,
) -> rusqlite::Result<u64> {
    let (range, next) = match ids.get_mut(slug) {
        Some(known) => known,
        None => {
            let range = schema::range_or_new(tx, slug)?;
            let last: Option<i64> = tx
                .prepare_cached("SELECT MAX(id) FROM entries WHERE id BETWEEN ?1 AND ?2")?
                .query_row(params![range.lo, range.hi], |row| row.get(0))?;
            ids.entry(slug.to_string())
                .or_insert((range, last.unwrap_or(range.lo) + 1))
        }
    };
    let mut row = tx.prepare_cached(
        "INSERT INTO entries (id, seq, node, timestamp, kind, request_id, bytes, entry)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut bytes = 0;
    for entry in entries {
        let json = serde_json::to_string(entry).expect("entries serialize");
        bytes += json.len() as u64;
        if *next > range.hi {
            return Err(rusqlite::Error::ToSqlConversionFailure(
                format!("{slug} has used every id of its range").into(),
            ));
        }
        row.execute(params![
            *next,
            entry.seq as i64,
            entry.node.as_deref().unwrap_or(""),
            entry.timestamp as i64,
            entry.kind.as_str(),
            entry.meta.request_id,
            json.len() as i64,
            json,
        ])?;
        *next += 1;
    }
    let mut last_seq = HashMap::new();
    note_last_seqs(entries, &mut last_seq);
    note_sequences(tx, slug, &last_seq)?;
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
    let Some(range) = schema::range(tx, slug)? else {
        return Ok(0);
    };
    let (freed, count) = drop_oldest(tx, range, |_, freed| size - freed > target)?;
    sizes.insert(slug.to_string(), size - freed);
    Ok(count)
}

/// Deletes a tenant's oldest entries while `more(timestamp, freed so
/// far)` says so; returns the bytes freed and the entries deleted.
fn drop_oldest(
    tx: &Transaction<'_>,
    range: Range,
    mut more: impl FnMut(u64, u64) -> bool,
) -> rusqlite::Result<(u64, u64)> {
    let mut oldest = tx.prepare_cached(
        "SELECT id, timestamp, bytes FROM entries WHERE id BETWEEN ?1 AND ?2 ORDER BY id LIMIT 512",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM entries WHERE id BETWEEN ?1 AND ?2")?;
    let (mut freed, mut count) = (0u64, 0u64);
    loop {
        let rows: Vec<(i64, u64, u64)> = oldest
            .query_map(params![range.lo, range.hi], |row| {
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
            delete.execute(params![range.lo, id])?;
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
    policies: &HashMap<String, super::Policy>,
    known: bool,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let slugs: Vec<String> = sizes.keys().cloned().collect();
    for slug in slugs {
        match policies.get(&slug) {
            Some(policy) => {
                let cutoff = now.saturating_sub(policy.retention.age.as_millis() as u64);
                let Some(range) = schema::range(tx, &slug)? else {
                    continue;
                };
                let (freed, _) = drop_oldest(tx, range, |timestamp, _| timestamp < cutoff)?;
                if let Some(size) = sizes.get_mut(&slug) {
                    *size -= freed.min(*size);
                }
            }
            None if known => {
                forget(tx, &slug)?;
                sizes.remove(&slug);
            }
            None => {}
        }
    }
    Ok(())
}
