//! The tenant registry: every tenant's versions, compiled and
//! pre-instantiated, looked up by slug on each request.
//!
//! The registry is built whole at start and never changes afterwards, so
//! lookups need no lock. Building it compiles each distinct component file
//! once, however many tenants or versions share it, and reports every broken
//! component with the file, the tenant and the version it belongs to.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use semver::Version;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::artifacts::CacheOutcome;
use crate::config::{Slug, Status, TenantSpec};
use crate::routing::VersionSelector;
use crate::runtime::{Runtime, TenantState};

/// One deployed version of a tenant.
pub struct Deployment {
    pub version: Version,
    /// `version` as text, computed once: it is sent with every request.
    pub version_label: String,
    pub component: PathBuf,
    pub pre: ProxyPre<TenantState>,
}

/// A tenant and its deployments.
pub struct Tenant {
    pub slug: Slug,
    pub owner: String,
    pub status: Status,
    pub versions: BTreeMap<Version, Deployment>,
}

impl Tenant {
    /// The highest version the selector accepts, preferring releases over
    /// pre-releases when nothing more specific was asked for.
    pub fn select(&self, selector: &VersionSelector) -> Option<&Deployment> {
        let newest_first = || self.versions.values().rev();
        match selector {
            VersionSelector::Latest => newest_first()
                .find(|d| d.version.pre.is_empty())
                .or_else(|| newest_first().next()),
            _ => newest_first().find(|d| selector.accepts(&d.version)),
        }
    }
}

/// Every tenant, by slug.
pub struct TenantRegistry {
    tenants: HashMap<String, Arc<Tenant>>,
}

/// What loading the registry did, for the start-up log.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    pub components: usize,
    pub cache_hits: usize,
    pub compiled: usize,
}

impl TenantRegistry {
    /// Loads every tenant's components. All problems are collected and
    /// reported together, each naming `source` (the config file), the
    /// tenant and the version.
    pub fn load(
        runtime: &Runtime,
        specs: &[TenantSpec],
        source: &str,
    ) -> Result<(TenantRegistry, LoadStats)> {
        let mut loaded: HashMap<PathBuf, ProxyPre<TenantState>> = HashMap::new();
        let mut stats = LoadStats::default();
        let mut problems = Vec::new();
        let mut tenants = HashMap::new();
        for spec in specs {
            let mut versions = BTreeMap::new();
            for (version, path) in &spec.versions {
                let pre = match loaded.get(path) {
                    Some(pre) => pre.clone(),
                    None => match load_one(runtime, path, &mut stats) {
                        Ok(pre) => {
                            loaded.insert(path.clone(), pre.clone());
                            pre
                        }
                        Err(e) => {
                            problems.push(format!(
                                "tenant {:?} version {version}: component {}: {e:#}",
                                spec.slug.as_str(),
                                path.display()
                            ));
                            continue;
                        }
                    },
                };
                versions.insert(
                    version.clone(),
                    Deployment {
                        version: version.clone(),
                        version_label: version.to_string(),
                        component: path.clone(),
                        pre,
                    },
                );
            }
            let tenant = Tenant {
                slug: spec.slug.clone(),
                owner: spec.owner.clone(),
                status: spec.status,
                versions,
            };
            tenants.insert(spec.slug.as_str().to_string(), Arc::new(tenant));
        }
        if !problems.is_empty() {
            bail!(
                "{source}: cannot load tenants:\n  - {}",
                problems.join("\n  - ")
            );
        }
        Ok((TenantRegistry { tenants }, stats))
    }

    pub fn get(&self, slug: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(slug)
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

fn load_one(
    runtime: &Runtime,
    path: &Path,
    stats: &mut LoadStats,
) -> Result<ProxyPre<TenantState>> {
    if !path.exists() {
        bail!("file not found");
    }
    let started = std::time::Instant::now();
    let (pre, outcome) = runtime.load(path)?;
    stats.components += 1;
    match outcome {
        CacheOutcome::Hit => stats.cache_hits += 1,
        CacheOutcome::Miss | CacheOutcome::Disabled => stats.compiled += 1,
    }
    tracing::info!(component = %path.display(), ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
    Ok(pre)
}
