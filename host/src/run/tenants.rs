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

use crate::base::config::{HostSettings, Slug, Status, TenantSpec};
use crate::run::artifacts::CacheOutcome;
use crate::run::capabilities::Capabilities;
use crate::run::runtime::Runtime;
use crate::run::state::RequestState;

/// Which of a tenant's versions a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum VersionSelector {
    Latest,
    Major(u64),
    MajorMinor(u64, u64),
    Exact(Version),
}

impl VersionSelector {
    /// Whether `version` is one this selector accepts.
    pub(crate) fn accepts(&self, version: &Version) -> bool {
        match self {
            VersionSelector::Latest => true,
            VersionSelector::Major(major) => version.major == *major && version.pre.is_empty(),
            VersionSelector::MajorMinor(major, minor) => {
                version.major == *major && version.minor == *minor && version.pre.is_empty()
            }
            VersionSelector::Exact(exact) => version == exact,
        }
    }
}

impl std::fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionSelector::Latest => write!(f, "latest"),
            VersionSelector::Major(major) => write!(f, "v{major}"),
            VersionSelector::MajorMinor(major, minor) => write!(f, "v{major}.{minor}"),
            VersionSelector::Exact(version) => write!(f, "v{version}"),
        }
    }
}

/// One deployed version of a tenant.
pub(crate) struct Deployment {
    pub(crate) version: Version,
    /// `version` as text, computed once: it is sent with every request.
    pub(crate) version_label: String,
    pub(crate) pre: ProxyPre<RequestState>,
}

/// A tenant and its deployments.
pub(crate) struct Tenant {
    pub(crate) slug: Slug,
    pub(crate) owner: String,
    pub(crate) status: Status,
    pub(crate) versions: BTreeMap<Version, Deployment>,
    /// Its limits, outbound rules, environment and secrets.
    pub(crate) capabilities: Capabilities,
}

impl Tenant {
    /// The highest version the selector accepts, preferring releases over
    /// pre-releases when nothing more specific was asked for.
    pub(crate) fn select(&self, selector: &VersionSelector) -> Option<&Deployment> {
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
pub(crate) struct TenantRegistry {
    tenants: HashMap<String, Arc<Tenant>>,
}

/// What loading the registry did, for the start-up log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LoadStats {
    pub(crate) components: usize,
    pub(crate) cache_hits: usize,
    pub(crate) compiled: usize,
}

impl TenantRegistry {
    /// Loads every tenant's components and settles its capabilities (its
    /// secrets read from their sources, limits falling back to `host`'s).
    /// All problems are collected and reported together, each naming
    /// `source` (the config file), the tenant and the version or key.
    pub(crate) fn load(
        runtime: &Runtime,
        specs: &[TenantSpec],
        source: &str,
        host: &HostSettings,
    ) -> Result<(TenantRegistry, LoadStats)> {
        let mut loaded: HashMap<PathBuf, ProxyPre<RequestState>> = HashMap::new();
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
                        pre,
                    },
                );
            }
            let tenant = Tenant {
                slug: spec.slug.clone(),
                owner: spec.owner.clone(),
                status: spec.status,
                versions,
                capabilities: Capabilities::settle(spec, host, specs.len(), &mut problems),
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

    pub(crate) fn get(&self, slug: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(slug)
    }

    pub(crate) fn len(&self) -> usize {
        self.tenants.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

fn load_one(
    runtime: &Runtime,
    path: &Path,
    stats: &mut LoadStats,
) -> Result<ProxyPre<RequestState>> {
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
