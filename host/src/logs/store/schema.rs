//! The store's file: one SQLite database, `logs.sqlite3` in `state_dir`.
//!
//! ```text
//! slugs      (slug, number)             each tenant's number: its entries'
//!                                        ids are number << 40 | 1, 2, 3…
//! entries    (id, seq, node, timestamp, kind, request_id, bytes, entry)
//!            one row per entry; `entry` is its wire JSON, `bytes` its length;
//!            id orders a tenant's entries as they were published, and
//!            keeps them together: a tenant's rows are one range of the
//!            table's own B-tree, with no index of slugs to keep up
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
CREATE TABLE IF NOT EXISTS slugs (
    slug TEXT PRIMARY KEY,
    number INTEGER NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    timestamp INTEGER NOT NULL,
    kind TEXT NOT NULL,
    request_id TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_request ON entries (request_id, kind);
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
    private(path)?;
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

/// Bits of an entry's id below its tenant's number.
const SLUG_SHIFT: u32 = 40;

/// The ids a tenant's entries take: `lo..=hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) lo: i64,
    pub(super) hi: i64,
}

impl Range {
    fn of(number: i64) -> Range {
        let lo = number << SLUG_SHIFT;
        Range {
            lo,
            hi: lo | ((1 << SLUG_SHIFT) - 1),
        }
    }
}

/// `slug`'s ids, if it has a number.
pub(super) fn range(conn: &Connection, slug: &str) -> rusqlite::Result<Option<Range>> {
    use rusqlite::OptionalExtension as _;
    conn.prepare_cached("SELECT number FROM slugs WHERE slug = ?1")?
        .query_row([slug], |row| row.get(0))
        .optional()
        .map(|number| number.map(Range::of))
}

/// `slug`'s ids, numbering it first if it has no number yet.
pub(super) fn range_or_new(conn: &Connection, slug: &str) -> rusqlite::Result<Range> {
    if let Some(range) = range(conn, slug)? {
        return Ok(range);
    }
    conn.prepare_cached(
        "INSERT INTO slugs (slug, number) SELECT ?1, COALESCE(MAX(number), 0) + 1 FROM slugs",
    )?
    .execute([slug])?;
    Ok(range(conn, slug)?.expect("numbered just now"))
}

/// Makes the file (if it is not there) and keeps it its owner's alone:
/// request events keep visitors' headers. SQLite gives its `-wal` and
/// `-shm` files the database file's mode.
fn private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}: cannot create the log store", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot make the log store private", path.display()))?;
    for side in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(side);
        if let Ok(meta) = std::fs::metadata(&name)
            && meta.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)).with_context(
                || format!("{}: cannot make it private", Path::new(&name).display()),
            )?;
        }
    }
    Ok(())
}
