//! The deploy API's durable state, in `[host] state_dir`:
//!
//! ```text
//! state_dir/
//!   lock                       held (flock) while a host uses the directory
//!   servers.json               the server list: owners, statuses, versions, reserved slugs
//!   components/{sha256}.wasm   every deployed component, named by its content
//! ```
//!
//! **Crash safety.** Every file is written under a temporary name in its
//! directory, fsynced, renamed over the old one and the directory fsynced:
//! after a crash a name holds either its old content or its new, whole. A
//! component is written before the list that names it, so the list never
//! names a missing or partial component. What a crash can leave behind —
//! temporary files, a component the list does not name yet — is swept when
//! the store opens, and components a deletion left unnamed are swept then
//! too.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result, bail};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::base::config::Status;
use crate::run::tenants::Provenance;

/// The server list, as `servers.json` holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Document {
    /// The layout of this file; bumped if it ever changes incompatibly.
    pub(crate) format: u32,
    pub(crate) servers: BTreeMap<String, ServerRecord>,
    /// Deleted slugs, kept for their last owner until the cooling-off ends.
    pub(crate) reservations: BTreeMap<String, Reservation>,
    /// On a cluster, the bucket revision of each key this list mirrors
    /// (`server.{slug}`, `reserved.{slug}`): what a compare-and-set write
    /// expects. Not stored.
    #[serde(skip)]
    pub(crate) revisions: BTreeMap<String, u64>,
}

/// One server deployed through the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ServerRecord {
    pub(crate) owner: String,
    pub(crate) status: Status,
    /// Milliseconds since the epoch.
    pub(crate) created_at: u64,
    pub(crate) versions: BTreeMap<Version, Provenance>,
}

/// A deleted server's slug, reserved for its last owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Reservation {
    pub(crate) owner: String,
    /// Milliseconds since the epoch.
    pub(crate) until: u64,
}

const FORMAT: u32 = 1;
const LIST: &str = "servers.json";
const COMPONENTS: &str = "components";
/// Temporary files start with this, so that a sweep recognizes them.
const TEMPORARY: &str = ".tmp-";

/// An open state directory, locked for this process.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    /// Holds the directory's `flock`: two hosts writing one list would
    /// lose each other's changes.
    _lock: File,
}

impl Store {
    /// Opens (creating) `dir`, takes its lock and reads the server list;
    /// then sweeps what a crash or a deletion left behind. A component the
    /// list names but the directory lacks is an error: it cannot happen
    /// through this code, so something else changed the directory.
    pub(crate) fn open(dir: &Path) -> Result<(Store, Document)> {
        let components = dir.join(COMPONENTS);
        std::fs::create_dir_all(&components)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let lock = lock(dir)?;
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        let list = dir.join(LIST);
        let document = match std::fs::read(&list) {
            Ok(bytes) => {
                let document: Document = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{}: not a server list", list.display()))?;
                if document.format != FORMAT {
                    bail!(
                        "{}: format {} is not one this version reads ({FORMAT})",
                        list.display(),
                        document.format
                    );
                }
                document
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document {
                format: FORMAT,
                ..Document::default()
            },
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", list.display())),
        };
        let mut missing = Vec::new();
        for (slug, server) in &document.servers {
            for (version, provenance) in &server.versions {
                if !store.component_path(&provenance.sha256).is_file() {
                    missing.push(format!("{slug} {version} ({})", provenance.sha256));
                }
            }
        }
        if !missing.is_empty() {
            bail!(
                "{}: components missing from {}: {}",
                list.display(),
                components.display(),
                missing.join(", ")
            );
        }
        store.sweep(&document);
        Ok((store, document))
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the component with this digest is (or will be) kept.
    pub(crate) fn component_path(&self, sha256: &str) -> PathBuf {
        self.dir.join(COMPONENTS).join(format!("{sha256}.wasm"))
    }

    /// Stores a component under its digest (once: the name is the content).
    pub(crate) fn put_component(&self, sha256: &str, wasm: &[u8]) -> Result<PathBuf> {
        let path = self.component_path(sha256);
        if !path.is_file() {
            write_atomically(&path, wasm)?;
        }
        Ok(path)
    }

    /// Replaces the server list.
    pub(crate) fn save(&self, document: &Document) -> Result<()> {
        let json = serde_json::to_vec_pretty(document).expect("the server list serializes");
        write_atomically(&self.dir.join(LIST), &json)
    }

    /// Removes temporary files and the components `document` does not name.
    /// Failures only cost disk space, so they are logged, not returned.
    pub(crate) fn sweep(&self, document: &Document) {
        let named: HashSet<String> = document
            .servers
            .values()
            .flat_map(|server| server.versions.values())
            .map(|provenance| format!("{}.wasm", provenance.sha256))
            .collect();
        for dir in [self.dir.clone(), self.dir.join(COMPONENTS)] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name.starts_with(TEMPORARY)
                    || (dir.ends_with(COMPONENTS) && !named.contains(&name));
                if stale && let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), "cannot remove: {e}");
                }
            }
        }
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new
/// one, never a mix: a temporary file in the same directory, fsynced, then
/// renamed over `path`, then the directory fsynced (the rename itself).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(
        "{TEMPORARY}{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Takes an exclusive `flock` on `dir/lock`, released when the process ends
/// however it ends.
fn lock(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd as _;
    let path = dir.join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        bail!(
            "the state directory {} is in use by another mctx-host (give each host its own \
             --state-dir; hosts of a cluster share deployments through [cluster])",
            dir.display()
        );
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alice's server with version 1.0.0, the component `sha256`.
    fn record(sha256: &str) -> ServerRecord {
        let provenance = Provenance {
            sha256: sha256.to_string(),
            size: 4,
            deployed_at: 1,
            deployed_by: "alice".into(),
        };
        ServerRecord {
            owner: "alice".into(),
            status: Status::Active,
            created_at: 1,
            versions: [(Version::new(1, 0, 0), provenance)].into(),
        }
    }

    #[test]
    fn a_saved_list_reopens_and_the_sweep_keeps_only_named_components() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut document) = Store::open(dir.path()).unwrap();
        assert!(document.servers.is_empty());
        store.put_component("aa", b"kept").unwrap();
        store.put_component("bb", b"orphan").unwrap();
        std::fs::write(dir.path().join(".tmp-1-0-servers.json"), b"{half").unwrap();
        document.servers.insert("hello".into(), record("aa"));
        store.save(&document).unwrap();
        drop(store);

        let (store, reopened) = Store::open(dir.path()).unwrap();
        assert_eq!(reopened, document);
        assert!(store.component_path("aa").is_file());
        assert!(!store.component_path("bb").exists(), "unnamed: swept");
        assert!(!dir.path().join(".tmp-1-0-servers.json").exists());
    }

    #[test]
    fn a_second_host_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another mctx-host"), "{err}");
    }

    #[test]
    fn a_named_component_that_is_missing_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (store, mut document) = Store::open(dir.path()).unwrap();
        document.servers.insert("hello".into(), record("cc"));
        store.save(&document).unwrap();
        drop(store);
        let err = format!("{:#}", Store::open(dir.path()).unwrap_err());
        assert!(err.contains("hello 1.0.0 (cc)"), "{err}");
    }
}
