//! `serve --watch`: reload the tenants file when it or one of its
//! components changes on disk, and the TLS certificate when its files do.
//!
//! The watcher follows the *directories* of the file and of every
//! component (editors and `cargo build` replace files by renaming over
//! them, which a watch on the file itself would miss) and reacts to events
//! on exactly those paths. Events come in bursts (a build writes a file in
//! several steps), so a reload waits until the paths have been quiet for
//! [`QUIET`]. A reload keeps every tenant whose table and bytes did not
//! change, so a spurious one costs a read and a hash.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use notify::RecursiveMode;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::app::Reloader;
use crate::base::config::Config;

/// How long the watched paths must stay unchanged before a reload.
const QUIET: Duration = Duration::from_millis(300);

/// Starts watching `file` (and its components) and `also` (the TLS files)
/// for as long as the process runs.
pub(crate) fn spawn(file: PathBuf, also: Vec<PathBuf>, reloader: Reloader) -> Result<()> {
    let (events, mut changed) = mpsc::unbounded_channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = events.send(event);
        }
    })
    .context("--watch: cannot watch files on this system")?;
    let mut watched = Watched {
        also: also.iter().map(|p| absolute(p)).collect(),
        ..Watched::default()
    };
    watched.follow(&mut watcher, &file)?;
    let span = tracing::info_span!("watch", file = %file.display());
    tokio::spawn(
        async move {
            while let Some(event) = changed.recv().await {
                if !watched.concerns(&event) {
                    continue;
                }
                // Wait for the burst to end.
                loop {
                    match tokio::time::timeout(QUIET, changed.recv()).await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return,
                        Err(_quiet) => break,
                    }
                }
                match reloader.reload("--watch").await {
                    Ok(summary) => tracing::info!("reloaded after a change on disk: {summary}"),
                    Err(e) => tracing::error!(
                        "reload after a change on disk refused, nothing changed: {e:#}"
                    ),
                }
                if let Err(e) = watched.follow(&mut watcher, &file) {
                    tracing::warn!("--watch: {e:#}");
                }
            }
        }
        .instrument(span),
    );
    Ok(())
}

/// The paths whose changes matter, and the directories watched for them.
#[derive(Default)]
struct Watched {
    paths: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    /// Always watched: the TLS certificate and key.
    also: Vec<PathBuf>,
}

impl Watched {
    /// Watches the file and the components it names now (a file that does
    /// not parse keeps the components it named before).
    fn follow(&mut self, watcher: &mut impl notify::Watcher, file: &Path) -> Result<()> {
        let mut paths: HashSet<PathBuf> = self.also.iter().cloned().collect();
        paths.insert(absolute(file));
        match Config::load(file) {
            Ok(config) => paths.extend(
                config
                    .tenants
                    .iter()
                    .flat_map(|t| t.versions.values())
                    .map(|p| absolute(p)),
            ),
            Err(_) => paths.extend(self.paths.iter().cloned()),
        }
        for dir in paths.iter().filter_map(|p| p.parent()) {
            if !self.dirs.contains(dir) {
                watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .with_context(|| format!("cannot watch {}", dir.display()))?;
                self.dirs.insert(dir.to_path_buf());
            }
        }
        self.paths = paths;
        Ok(())
    }

    fn concerns(&self, event: &notify::Event) -> bool {
        !event.kind.is_access() && event.paths.iter().any(|p| self.paths.contains(p))
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
