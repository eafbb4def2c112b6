//! The compiled-artifact cache: a restart does not recompile unchanged
//! components.
//!
//! Compiling a component with Cranelift takes from milliseconds (a small Rust
//! guest) to seconds (a 13 MB JavaScript runtime). The cache stores each
//! compiled component under a key made of the component's SHA-256 and the
//! engine's compatibility hash (wasmtime version and every setting that
//! changes generated code), so a changed file or a changed engine misses
//! instead of loading stale code. Entries are written to a temporary file and
//! renamed into place, so a crash never leaves a half-written artifact, and
//! loading memory-maps the file instead of reading it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Lower-case hex SHA-256: how components are named and compared, in this
/// cache, in the state directory and by the deploy API.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub(crate) struct ArtifactCache {
    dir: PathBuf,
}

/// Whether a component came from the cache or was compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

impl ArtifactCache {
    /// Opens (creating if needed, mode 700) a cache directory. Its files
    /// are native code loaded without verification, so a folder another
    /// user owns or may write to is refused.
    pub(crate) fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).with_context(|| {
            format!(
                "cannot create the artifact cache directory {}",
                dir.display()
            )
        })?;
        crate::base::private::check_own_dir(&dir)
            .map_err(|e| anyhow::anyhow!("the artifact cache: {e}"))?;
        Ok(ArtifactCache { dir })
    }

    /// `$XDG_CACHE_HOME/mctx-host`, else `$HOME/.cache/mctx-host`.
    pub(crate) fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("mctx-host"))
    }

    fn path_for(&self, engine: &Engine, sha256: &str) -> PathBuf {
        let mut engine_hash = DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        self.dir
            .join(format!("{sha256}-{:016x}.cwasm", engine_hash.finish()))
    }

    /// Loads the compiled form of `wasm` (whose [`sha256_hex`] the caller
    /// has already) from the cache, or compiles and stores it. A cache that
    /// cannot be written only costs a warning.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(Component, CacheOutcome)> {
        let path = self.path_for(engine, sha256);
        let ours = std::fs::metadata(&path).is_ok_and(|m| crate::base::private::owned_by_me(&m));
        if ours {
            // SAFETY: the cache directory is this user's and nobody else's
            // to write ([`ArtifactCache::open`]), the file is this user's
            // too, and files there are only ever written by
            // `Component::serialize` below, under a name that includes the
            // engine's compatibility hash; wasmtime additionally checks the
            // header and refuses an incompatible artifact.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}")
                }
            }
        }
        let component = Component::new(engine, wasm).map_err(anyhow::Error::from)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(dir = %self.dir.display(), "cannot write the artifact cache: {e:#}");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<()> {
        let bytes = component.serialize().map_err(anyhow::Error::from)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component: a header and no sections.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn second_load_is_a_hit_and_a_changed_engine_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path().join("nested")).unwrap();
        let engine = Engine::default();
        assert_eq!(
            cache
                .load_or_compile(&engine, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
                .unwrap()
                .1,
            CacheOutcome::Miss
        );
        assert_eq!(
            cache
                .load_or_compile(&engine, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
                .unwrap()
                .1,
            CacheOutcome::Hit
        );

        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other = Engine::new(&config).unwrap();
        assert_eq!(
            cache
                .load_or_compile(&other, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
                .unwrap()
                .1,
            CacheOutcome::Miss
        );
        let files = std::fs::read_dir(&cache.dir).unwrap().count();
        assert_eq!(
            files, 2,
            "one artifact per engine configuration, no temporary files left"
        );
    }

    #[test]
    fn a_corrupt_artifact_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let engine = Engine::default();
        cache
            .load_or_compile(&engine, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
            .unwrap();
        let artifact = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&artifact, b"garbage").unwrap();
        assert_eq!(
            cache
                .load_or_compile(&engine, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
                .unwrap()
                .1,
            CacheOutcome::Miss
        );
        assert_eq!(
            cache
                .load_or_compile(&engine, EMPTY_COMPONENT, &sha256_hex(EMPTY_COMPONENT))
                .unwrap()
                .1,
            CacheOutcome::Hit
        );
    }
}
