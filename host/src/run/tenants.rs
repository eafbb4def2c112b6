//! The tenant registry: every tenant's versions, compiled and
//! pre-instantiated, looked up by slug on each request.
//!
//! A [`TenantRegistry`] is an immutable snapshot; [`LiveTenants`] holds the
//! current one and swaps it whole when a deployment changes something
//! (`crate::deploy`). A request takes the [`Tenant`] it was routed to from
//! the snapshot of its arrival and keeps it to the end, so it runs start to
//! finish on the version it was routed to whatever is deployed meanwhile,
//! and reading the registry costs no lock.
//!
//! Loading compiles each distinct component file once, however many tenants
//! or versions share it, and reports every broken component with the file,
//! the tenant and the version it belongs to.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use arc_swap::ArcSwap;
use semver::Version;

use crate::base::config::{HostSettings, Slug, Status, TenantSpec};
use crate::run::artifacts::{CacheOutcome, sha256_hex};
use crate::run::capabilities::Capabilities;
use crate::run::instances::InstancePool;
use crate::run::runtime::{GuestPre, Runtime};
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
    pub(crate) pre: GuestPre,
    pub(crate) provenance: Provenance,
    /// Instances of this version kept for reuse (empty unless the tenant
    /// sets `instance_reuse` above 1).
    pub(crate) kept: Arc<InstancePool>,
    /// Its WASIp3 instances serving several requests at once (none unless
    /// the tenant sets `instance_concurrent_reuse` above 1).
    pub(crate) shared: crate::run::shared::SharedInstances,
    /// Its request metrics, looked up on its first request.
    pub(crate) metrics: std::sync::OnceLock<Arc<crate::base::metrics::VersionMetrics>>,
}

/// Where a deployed component came from: what the deploy API reports.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Provenance {
    /// Hex SHA-256 of the component's bytes.
    pub(crate) sha256: String,
    pub(crate) size: u64,
    /// Milliseconds since the epoch.
    pub(crate) deployed_at: u64,
    /// The user who deployed it, or `tenants file`.
    pub(crate) deployed_by: String,
}

/// Who defines a tenant. The two sources never fight: the deploy API
/// refuses to change a tenant of the file, and a reload of the file cannot
/// take a slug the API holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The tenants file, with the table it was built from (a reload keeps
    /// the tenant untouched when its table and components are unchanged).
    File(Box<TenantSpec>),
    /// The deploy API (kept in `[host] state_dir`).
    Api,
}

/// A tenant and its deployments.
pub(crate) struct Tenant {
    pub(crate) slug: Slug,
    pub(crate) owner: String,
    pub(crate) status: Status,
    pub(crate) versions: BTreeMap<Version, Deployment>,
    /// Its limits, outbound rules, environment and secrets. Shared by the
    /// tenant's successive snapshots while its settings are unchanged, so a
    /// deploy does not reset its concurrency gate.
    pub(crate) capabilities: Arc<Capabilities>,
    pub(crate) source: Source,
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

impl Deployment {
    pub(crate) fn new(version: Version, pre: GuestPre, provenance: Provenance) -> Self {
        Deployment {
            version_label: version.to_string(),
            version,
            pre,
            provenance,
            kept: Arc::default(),
            shared: Default::default(),
            metrics: std::sync::OnceLock::new(),
        }
    }
}

/// Every tenant, by slug: one immutable snapshot.
#[derive(Clone, Default)]
pub(crate) struct TenantRegistry {
    tenants: HashMap<String, Arc<Tenant>>,
}

/// What loading tenants did, for the start-up log.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LoadStats {
    pub(crate) components: usize,
    pub(crate) cache_hits: usize,
    pub(crate) compiled: usize,
}

/// Which tenants to load, and from where.
pub(crate) struct LoadRequest<'a> {
    pub(crate) specs: &'a [TenantSpec],
    /// For error messages: the tenants file, or the state directory.
    pub(crate) source: &'a str,
    pub(crate) host: &'a HostSettings,
    /// How many tenants share the host (the default concurrency share).
    pub(crate) tenants_on_host: usize,
    /// Gives each tenant its [`Source`].
    pub(crate) from_file: bool,
}

impl TenantRegistry {
    /// Loads every tenant's components and settles its capabilities (its
    /// secrets read from their sources, limits falling back to `host`'s).
    /// All problems are collected and reported together, each naming
    /// `source`, the tenant and the version or key.
    pub(crate) fn load(
        runtime: &Runtime,
        request: LoadRequest<'_>,
    ) -> Result<(Vec<Tenant>, LoadStats)> {
        let mut loaded: HashMap<PathBuf, (GuestPre, String, u64)> = HashMap::new();
        let mut stats = LoadStats::default();
        let mut problems = Vec::new();
        let mut tenants = Vec::new();
        let now = crate::logs::entry::now_ms();
        for spec in request.specs {
            let mut versions = BTreeMap::new();
            for (version, path) in &spec.versions {
                let (pre, sha256, size) = match loaded.get(path) {
                    Some(found) => found.clone(),
                    None => match load_one(runtime, path, &mut stats) {
                        Ok(found) => {
                            loaded.insert(path.clone(), found.clone());
                            found
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
                let provenance = Provenance {
                    sha256,
                    size,
                    deployed_at: now,
                    deployed_by: FILE_DEPLOYER.to_string(),
                };
                versions.insert(
                    version.clone(),
                    Deployment::new(version.clone(), pre, provenance),
                );
            }
            let capabilities = Capabilities::settle(
                spec,
                request.host,
                request.tenants_on_host,
                runtime.stores(),
                &mut problems,
            );
            // Asked for by the tenant's own table, and impossible for a p2
            // component: said, not silently ignored.
            if let Some(concurrent) = spec.instance_concurrent_reuse.filter(|&n| n > 1) {
                let p2: Vec<String> = versions
                    .values()
                    .filter(|d| matches!(d.pre, GuestPre::P2(_)))
                    .map(|d| d.version_label.clone())
                    .collect();
                if !p2.is_empty() {
                    tracing::warn!(
                        slug = spec.slug.as_str(),
                        versions = p2.join(", "),
                        "instance_concurrent_reuse = {concurrent} applies to WASIp3 components; \
                         these WASIp2 versions serve one request at a time per instance"
                    );
                }
            }
            tenants.push(Tenant {
                slug: spec.slug.clone(),
                owner: spec.owner.clone(),
                status: spec.status,
                versions,
                capabilities: Arc::new(capabilities),
                source: if request.from_file {
                    Source::File(Box::new(spec.clone()))
                } else {
                    Source::Api
                },
            });
        }
        if !problems.is_empty() {
            bail!(
                "{}: cannot load tenants:\n  - {}",
                request.source,
                problems.join("\n  - ")
            );
        }
        Ok((tenants, stats))
    }

    pub(crate) fn from_tenants(tenants: impl IntoIterator<Item = Arc<Tenant>>) -> Self {
        TenantRegistry {
            tenants: tenants
                .into_iter()
                .map(|t| (t.slug.as_str().to_string(), t))
                .collect(),
        }
    }

    /// This snapshot with `tenant` added or replacing the one of its slug.
    pub(crate) fn with(&self, tenant: Arc<Tenant>) -> Self {
        let mut next = self.clone();
        next.tenants
            .insert(tenant.slug.as_str().to_string(), tenant);
        next
    }

    /// This snapshot without `slug`.
    pub(crate) fn without(&self, slug: &str) -> Self {
        let mut next = self.clone();
        next.tenants.remove(slug);
        next
    }

    pub(crate) fn get(&self, slug: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(slug)
    }

    pub(crate) fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Points log retention and export at these tenants: at start, and
    /// after every change to the registry.
    pub(crate) fn direct_logs(
        &self,
        store: Option<&crate::logs::store::LogStore>,
        exports: &crate::logs::export::Exports,
    ) {
        if let Some(store) = store {
            store.set_policies(self.retention());
        }
        exports.route(self.exports());
    }

    /// The tenants whose logs are kept, and how (`logs::store`).
    fn retention(&self) -> HashMap<String, crate::logs::store::Policy> {
        self.iter()
            .filter_map(|t| {
                let policy = crate::logs::store::Policy {
                    retention: t.capabilities.retention?,
                    owner: t.owner.clone(),
                };
                Some((t.slug.to_string(), policy))
            })
            .collect()
    }

    /// Each tenant's own export destinations (`logs::export`).
    fn exports(&self) -> HashMap<String, Vec<crate::logs::export::Destination>> {
        self.iter()
            .map(|t| (t.slug.to_string(), t.capabilities.exports.clone()))
            .collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.tenants.values()
    }
}

/// Who deployed a tenant file's components.
pub(crate) const FILE_DEPLOYER: &str = "tenants file";

/// The registry requests read: the current snapshot, replaced whole.
///
/// Only `crate::deploy` replaces it, one change at a time (its lock), so a
/// read-modify-write of the snapshot never loses another's change.
pub(crate) struct LiveTenants {
    current: ArcSwap<TenantRegistry>,
    /// Ticks on every swap: what an open log stream watches to re-check
    /// that its viewer may still see the server (owner, status, deleted).
    swapped: tokio::sync::watch::Sender<()>,
}

impl LiveTenants {
    pub(crate) fn new(registry: TenantRegistry) -> Self {
        LiveTenants {
            current: ArcSwap::from_pointee(registry),
            swapped: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A receiver that is told of every swap from now on.
    pub(crate) fn swaps(&self) -> tokio::sync::watch::Receiver<()> {
        self.swapped.subscribe()
    }

    /// The current snapshot, for as long as the caller needs it.
    pub(crate) fn snapshot(&self) -> Arc<TenantRegistry> {
        self.current.load_full()
    }

    /// One tenant of the current snapshot: what a request runs on.
    pub(crate) fn get(&self, slug: &str) -> Option<Arc<Tenant>> {
        self.current.load().get(slug).cloned()
    }

    pub(crate) fn replace(&self, registry: TenantRegistry) {
        self.current.store(Arc::new(registry));
        self.swapped.send_replace(());
    }
}

/// Reads, hashes, compiles (or loads from the cache) one component file.
fn load_one(
    runtime: &Runtime,
    path: &Path,
    stats: &mut LoadStats,
) -> Result<(GuestPre, String, u64)> {
    let wasm = match std::fs::read(path) {
        Ok(wasm) => wasm,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("file not found"),
        Err(e) => bail!("cannot read it: {e}"),
    };
    let started = std::time::Instant::now();
    let sha256 = sha256_hex(&wasm);
    let (pre, outcome) = runtime.load_bytes(&wasm, &sha256)?;
    stats.components += 1;
    match outcome {
        CacheOutcome::Hit => stats.cache_hits += 1,
        CacheOutcome::Miss | CacheOutcome::Disabled => stats.compiled += 1,
    }
    tracing::info!(component = %path.display(), wasi = pre.generation(), ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "component ready");
    Ok((pre, sha256, wasm.len() as u64))
}

/// Drops kept instances that waited past their tenant's idle timeout, once
/// a second, so that a tenant that stops getting requests gives its
/// instances' memory back instead of keeping it until its next request.
pub(crate) async fn sweep_every_second(live: &LiveTenants) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for tenant in live.snapshot().iter() {
            let idle = tenant.capabilities.limits.idle;
            for deployment in tenant.versions.values() {
                deployment.kept.sweep(idle);
            }
        }
    }
}
