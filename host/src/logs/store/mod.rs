//! Opt-in retention: a tenant's entries kept on disk for as long, and as
//! much, as its [`Retention`] says, and read back by queries
//! (`GET /api/servers/{slug}/logs`, `mctx-host tail --since`).
//!
//! ```text
//!  Publisher (seq) ─► LogStore::append ─► Backlog (bounded) ─► writer thread ─► SQLite (WAL)
//!  query ─► flush (a barrier through the backlog) ─► a reading connection ─► Page
//! ```
//!
//! Entries are stored as they are published: numbered (the same `seq` a
//! viewer gets), with the tenant's secrets already redacted (capture
//! redacts before an entry exists), in their wire shape, so a query answers
//! what the live stream would have sent. Nothing waits for the disk: the
//! publisher only queues, and a backlog that is full refuses and counts.
//! A query first waits for what was published before it to be written, so
//! `tail --since` can follow it with the live stream without a gap.
//!
//! The contract's default stays: a tenant is not retained unless the
//! tenants file says so (`[host] log_retain`, `[tenants.logs]`).

mod backlog;
mod jetstream;
pub(crate) mod query;
mod schema;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use arc_swap::ArcSwap;

use crate::base::config::Retention;
use crate::base::metrics::Metrics;
use crate::base::sync::lock;
use crate::logs::entry::LogEntry;
use backlog::Backlog;
pub(crate) use query::{Page, Query};

/// Bytes of entries waiting for the writer before more are refused.
const BACKLOG_BYTES: usize = 32 << 20;

/// The file in `state_dir`.
pub(crate) const FILE_NAME: &str = "logs.sqlite3";

/// How long a query may read before it is stopped (a filter that makes it
/// slow must not hold a reader for long).
const QUERY_BUDGET: Duration = Duration::from_secs(5);

/// Reading connections kept for the next queries.
const READERS: usize = 4;

/// A retained tenant: how long and how much, and whose it is (a slug given
/// to another owner loses what was kept before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) retention: Retention,
    pub(crate) owner: String,
}

/// What the store and its writer share.
pub(crate) struct Shared {
    /// The tenants retained, and how.
    policies: ArcSwap<HashMap<String, Policy>>,
    /// Whether the policies were set since the store opened: until then a
    /// slug without one is not taken for a removed tenant.
    known: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn policies_known(&self) -> bool {
        self.known.load(Ordering::Acquire)
    }
}

/// The log store: one per host, in `state_dir`.
pub(crate) struct LogStore {
    backlog: Arc<Backlog>,
    shared: Arc<Shared>,
    /// Per slug, this host's last `seq` stored (or refused) when the store
    /// opened: numbering goes on from there, so a restart does not repeat
    /// a number.
    last_seq: HashMap<String, u64>,
    path: std::path::PathBuf,
    /// Connections for queries (WAL: they never wait for the writer).
    readers: Arc<Mutex<Vec<rusqlite::Connection>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// On a cluster: entries go through JetStream (`jetstream`).
    replication: OnceLock<Arc<jetstream::Replication>>,
    /// Per slug, the last stream message written here when the store
    /// opened (a cluster's follower resumes after it).
    followed: HashMap<String, u64>,
}

impl LogStore {
    /// Opens (creating) the store in `dir` and starts its writer; `node`
    /// is this host's name on a cluster.
    pub(crate) fn open(dir: &Path, metrics: Arc<Metrics>, node: Option<&str>) -> Result<LogStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the state directory", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let conn = schema::open(&path)?;
        let last_seq = {
            let mut query = conn.prepare("SELECT slug, last_seq FROM sequences WHERE node = ?1")?;
            query
                .query_map([node.unwrap_or("")], |row| {
                    Ok((row.get(0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<_>>()?
        };
        let followed = {
            let mut query = conn.prepare("SELECT slug, stream_seq FROM followed")?;
            query
                .query_map([], |row| Ok((row.get(0)?, row.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<_>>()?
        };
        let reader = schema::connect(&path)?;
        let backlog = Arc::new(Backlog::new(BACKLOG_BYTES));
        let shared = Arc::new(Shared {
            policies: ArcSwap::default(),
            known: AtomicBool::new(false),
            metrics,
        });
        let writer = writer::Writer::new(conn, backlog.clone(), shared.clone())
            .with_context(|| format!("{}: cannot read the log store", path.display()))?;
        let span = tracing::info_span!("log store writer", path = %path.display());
        let writer = std::thread::Builder::new()
            .name("log-store".into())
            .spawn(move || span.in_scope(|| writer.run()))
            .context("cannot start the log store's writer")?;
        tracing::info!(path = %path.display(), "log store open");
        Ok(LogStore {
            backlog,
            shared,
            last_seq,
            path,
            readers: Arc::new(Mutex::new(vec![reader])),
            writer: Mutex::new(Some(writer)),
            replication: OnceLock::new(),
            followed,
        })
    }

    /// On a cluster: keeps retained entries in JetStream, and this host's
    /// copy of every retained tenant's (needs a Tokio runtime).
    pub(crate) fn replicate(&self, jetstream: async_nats::jetstream::Context) {
        let replication = jetstream::Replication::start(
            jetstream,
            self.backlog.clone(),
            self.shared.metrics.clone(),
            self.followed.clone(),
        );
        replication.follow(&self.shared.policies.load());
        let _ = self.replication.set(replication);
    }

    /// Whether `slug`'s entries are kept.
    pub(crate) fn retains(&self, slug: &str) -> bool {
        self.shared.policies.load().contains_key(slug)
    }

    /// The tenants retained from now on, and how (the registry's, each
    /// time it changes). A tenant left out, or whose slug now has another
    /// owner, loses its stored entries at once (in order: what was queued
    /// before is forgotten too).
    pub(crate) fn set_policies(&self, policies: HashMap<String, Policy>) {
        let policies = Arc::new(policies);
        self.shared.policies.store(policies.clone());
        self.shared.known.store(true, Ordering::Release);
        if let Some(replication) = self.replication.get() {
            replication.follow(&policies);
        }
        self.backlog.policies(policies);
    }

    /// The last `seq` stored for `slug` before this process started.
    pub(crate) fn last_seq(&self, slug: &str) -> u64 {
        self.last_seq.get(slug).copied().unwrap_or(0)
    }

    /// Queues published entries of `slug` for writing (on a cluster, for
    /// its stream, from which every host writes them).
    pub(crate) fn append(&self, slug: &str, entries: Vec<LogEntry>) {
        match self.replication.get() {
            Some(replication) => replication.append(slug, entries),
            None => self.backlog.append(slug, entries, None),
        }
    }

    /// Returns once every entry queued before the call is written (or
    /// failed to be).
    pub(crate) async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.backlog.flush(done) {
            let _ = written.await;
        }
    }

    /// A page of `slug`'s stored entries, newest first, including every
    /// entry published before the call.
    pub(crate) async fn query(&self, slug: &str, query: Query) -> Result<Page> {
        if let Some(replication) = self.replication.get()
            && let Err(e) = replication.caught_up(slug).await
        {
            // Better what this host has than nothing; the host's log says.
            tracing::warn!(slug, error = %format!("{e:#}"), "log query answered from a copy that is behind");
        }
        self.flush().await;
        let (readers, path) = (self.readers.clone(), self.path.clone());
        let slug = slug.to_string();
        tokio::task::spawn_blocking(move || {
            let reader = lock(&readers).pop();
            let mut reader = match reader {
                Some(reader) => reader,
                None => schema::connect(&path)?,
            };
            // Stopped past its budget: a slow filter holds no reader long.
            let started = Instant::now();
            reader.progress_handler(10_000, Some(move || started.elapsed() > QUERY_BUDGET))?;
            let page = query::run(&reader, &slug, &query);
            reader.progress_handler(0, None::<fn() -> bool>)?;
            let mut readers = lock(&readers);
            if readers.len() < READERS {
                readers.push(reader);
            }
            page.map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    anyhow::anyhow!(
                        "the query took longer than {} s: narrow it (since, requestId, type)",
                        QUERY_BUDGET.as_secs()
                    )
                }
                other => anyhow::Error::new(other).context("the log store could not be read"),
            })
        })
        .await
        .context("the log query stopped")?
    }

    /// Writes what is queued and stops the writer (at shutdown).
    pub(crate) fn close(&self) {
        self.backlog.close();
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logs::entry::{Outcome, RequestEvent, RequestHeaders, RequestMeta, Stream, now_ms};

    fn meta(request_id: &str) -> Arc<RequestMeta> {
        Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: request_id.into(),
        })
    }

    fn numbered(mut entries: Vec<LogEntry>, from: u64) -> Vec<LogEntry> {
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.seq = from + i as u64;
        }
        entries
    }

    fn ended(id: &str, outcome: Outcome) -> LogEntry {
        LogEntry::request_event(
            meta(id),
            RequestEvent {
                method: "GET".into(),
                path: "/".into(),
                status: Some(if outcome == Outcome::Ok { 200 } else { 500 }),
                outcome,
                wall_ms: 1,
                cpu_ms: 1,
                subrequests: 0,
                exception: None,
                headers: RequestHeaders::new(),
                mcp: None,
            },
        )
    }

    fn messages(page: &Page) -> Vec<String> {
        page.entries
            .iter()
            .map(|text| serde_json::from_str::<LogEntry>(text).unwrap().message)
            .collect()
    }

    #[tokio::test]
    async fn a_filter_on_how_requests_ended_finds_their_lines_through_their_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), Metrics::new(), None).unwrap();
        let kept = Policy {
            retention: Retention {
                age: Duration::from_secs(3600),
                max_bytes: 1 << 20,
            },
            owner: "alice".into(),
        };
        store.set_policies([("s".to_string(), kept.clone())].into());
        let line = |id: &str, text: &str| {
            LogEntry::from_line(meta(id), Stream::Stdout, now_ms(), text.into())
        };
        // Two requests interleaved; `bad` fails, `running` has not ended.
        store.append(
            "s",
            numbered(
                vec![
                    line("good", "good 1"),
                    line("bad", "bad 1"),
                    line("running", "still going"),
                    line("good", "good 2"),
                    ended("good", Outcome::Ok),
                    line("bad", "bad 2"),
                    ended("bad", Outcome::Exception),
                ],
                1,
            ),
        );
        let query = |text: &str| Query::parse(text, now_ms()).unwrap();
        let page = store.query("s", query("status=error")).await.unwrap();
        assert_eq!(
            messages(&page)[..2],
            ["GET / 500 exception (1 ms)", "bad 2"]
        );
        assert_eq!(messages(&page)[2], "bad 1");
        assert_eq!(page.entries.len(), 3);
        let page = store.query("s", query("status=ok&type=log")).await.unwrap();
        assert_eq!(messages(&page), ["good 2", "good 1"]);
        // Pages: two at a time, newest first, to the end.
        let page = store.query("s", query("limit=4")).await.unwrap();
        assert_eq!(page.entries.len(), 4);
        let next = page.next.expect("more");
        let rest = store
            .query("s", query(&format!("limit=4&cursor={next}")))
            .await
            .unwrap();
        assert_eq!(messages(&rest), ["still going", "bad 1", "good 1"]);
        assert_eq!(rest.next, None);
        // Another slug's entries are not this one's.
        assert!(
            store
                .query("t", query(""))
                .await
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_tenant_no_longer_retained_loses_its_entries_at_the_next_purge() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Policy {
            retention: Retention {
                age: Duration::from_secs(3600),
                max_bytes: 1 << 20,
            },
            owner: "alice".into(),
        };
        {
            let store = LogStore::open(dir.path(), Metrics::new(), None).unwrap();
            store.set_policies(
                [
                    ("s".to_string(), kept.clone()),
                    ("t".to_string(), kept.clone()),
                ]
                .into(),
            );
            for slug in ["s", "t"] {
                let entry = LogEntry::from_line(meta("r"), Stream::Stdout, now_ms(), "x".into());
                store.append(slug, numbered(vec![entry], 1));
            }
            store.flush().await;
        }
        // Reopened (a restart): numbering goes on from what was stored, and
        // once the store knows who is retained, `t`, no longer, goes at the
        // first purge (a store just opened purges at its first batch).
        let store = LogStore::open(dir.path(), Metrics::new(), None).unwrap();
        assert_eq!((store.last_seq("s"), store.last_seq("t")), (1, 1));
        store.set_policies([("s".to_string(), kept.clone())].into());
        let all = Query::parse("", now_ms()).unwrap();
        assert!(
            store
                .query("t", all.clone())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        assert_eq!(store.query("s", all).await.unwrap().entries.len(), 1);
    }

    #[tokio::test]
    async fn a_slug_given_to_another_owner_keeps_nothing_of_the_last_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path(), Metrics::new(), None).unwrap();
        let policy = |owner: &str| Policy {
            retention: Retention {
                age: Duration::from_secs(3600),
                max_bytes: 1 << 20,
            },
            owner: owner.into(),
        };
        let line = || LogEntry::from_line(meta("r"), Stream::Stdout, now_ms(), "alice's".into());
        store.set_policies([("s".to_string(), policy("alice"))].into());
        store.append("s", numbered(vec![line(), line()], 1));
        let all = Query::parse("", now_ms()).unwrap();
        assert_eq!(
            store.query("s", all.clone()).await.unwrap().entries.len(),
            2
        );
        // The same owner again (a reload): kept.
        store.set_policies([("s".to_string(), policy("alice"))].into());
        assert_eq!(
            store.query("s", all.clone()).await.unwrap().entries.len(),
            2
        );
        // Bob's now: what was alice's is gone at once, his own is kept.
        store.set_policies([("s".to_string(), policy("bob"))].into());
        assert!(
            store
                .query("s", all.clone())
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        store.append("s", numbered(vec![line()], 3));
        assert_eq!(store.query("s", all).await.unwrap().entries.len(), 1);
        drop(store);
        // And after a restart, bob is still the owner of record.
        let store = LogStore::open(dir.path(), Metrics::new(), None).unwrap();
        store.set_policies([("s".to_string(), policy("bob"))].into());
        let all = Query::parse("", now_ms()).unwrap();
        assert_eq!(store.query("s", all).await.unwrap().entries.len(), 1);
    }
}
