//! The store's file: one SQLite database, `logs.sqlite3` in `state_dir`.
//!
//! ```text
//! entries    (id, slug, seq, node, timestamp, level, kind, request_id, bytes, entry)
//!            one row per entry; `entry` is its wire JSON, `bytes` its length;
//!            id orders them as they were published
//! sequences  (slug, node, last_seq)      the last seq stored of each producer,
//!                                        so numbering goes on after a restart
//! owners     (slug, owner)               whose entries they are: a slug given
//!                                        to another owner loses them
//! followed   (slug, stream_seq)          on a cluster: the last message of the
//!                                        tenant's JetStream stream written here
//! unstored   (slug, reason, count)       entries not kept: `quota` (the oldest,
//!                                        dropped for newer), `backlog` (the
//!                                        writer fell behind), `failed` (the disk)
//! ```
//!
//! WAL with `synchronous = NORMAL`: a crash of the process loses nothing
//! committed, a power cut at most the last commits, and readers never wait
//! for the writer.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rusqlite::Connection;

/// Bumped when the tables change; a newer file is refused, not guessed at.
const VERSION: i64 = 1;

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    slug TEXT NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_slug ON entries (slug, id);
CREATE INDEX IF NOT EXISTS entries_by_request ON entries (slug, request_id, kind);
CREATE TABLE IF NOT EXISTS sequences (
    slug TEXT NOT NULL,
    node TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (slug, node)
);
CREATE TABLE IF NOT EXISTS owners (
    slug TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS followed (
    slug TEXT PRIMARY KEY,
    stream_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS unstored (
    slug TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (slug, reason)
);
";

/// Opens (creating) the database at `path` with the tables in place.
pub(super) fn open(path: &Path) -> Result<Connection> {
    let conn = connect(path)?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > VERSION {
        anyhow::bail!(
            "{}: written by a newer mctx-host (log store version {version}, this one knows {VERSION})",
            path.display()
        );
    }
    conn.execute_batch(TABLES)
        .with_context(|| format!("{}: cannot create the log store's tables", path.display()))?;
    conn.pragma_update(None, "user_version", VERSION)?;
    Ok(conn)
}

/// Another connection to the same file (for reading).
pub(super) fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .with_context(|| format!("{}: cannot open the log store", path.display()))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .with_context(|| format!("{}: cannot use write-ahead logging", path.display()))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The request index takes random request ids: its pages stay in
    // memory (32 MiB) rather than go to and from the OS for each insert.
    conn.pragma_update(None, "cache_size", -32 * 1024)?;
    // The writer and a reader checkpointing at once wait for each other
    // briefly rather than fail.
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}
