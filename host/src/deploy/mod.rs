//! Deployments at runtime: the one facade ([`Deployments`]) through which
//! the server list changes while the host serves.
//!
//! ```text
//!  PUT/POST/PATCH/DELETE /api/servers…   SIGHUP, POST /api/reload
//!        (edge/deploy_api.rs)                 (reload.rs)
//!                   └──────────► Deployments ◄──────┘
//!                       one change at a time (its lock):
//!                       check the rules → compile → write state_dir (store.rs)
//!                       → swap the registry (run::tenants::LiveTenants)
//!                       → tell the slug's viewers (a `deploy` entry, or `closing`)
//! ```
//!
//! The rules, in one place: a server of the tenants file is the file's (the
//! API answers 409 naming it); only admins (`[auth] admins`) create
//! servers; the owner or an admin deploys to, changes or deletes one;
//! versions are immutable (the same bytes again is a no-op, other bytes
//! 409); a deleted slug stays reserved for its last owner for `[host]
//! slug_cooling_off_days`.
//!
//! A change is durable before it is live: the component and the list are
//! on disk (crash-safely, `store.rs`) or, on a cluster, in JetStream
//! (`shared.rs`) before the registry swaps, so a host that answered a
//! deploy serves it again after any crash. On a cluster every host watches
//! the shared list and applies each change the same way ([`Deployments::
//! follow_cluster`]); the host that made it has applied it already.

mod reload;
mod shared;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use semver::Version;
use tokio::sync::{Mutex, MutexGuard, OnceCell};
use tracing::Instrument as _;

use crate::base::config::{Config, HostSettings, Slug, Status, TenantSpec};
use crate::base::metrics::Metrics;
use crate::logs::entry::{DeployAction, DeployEvent, LogEntry, RequestMeta, now_ms};
use crate::logs::hub::LogHub;
use crate::logs::sink::LogSink;
use crate::run::artifacts::sha256_hex;
use crate::run::capabilities::Capabilities;
use crate::run::runtime::{GuestPre, Rejected, Runtime};
use crate::run::tenants::{
    Deployment, LiveTenants, LoadRequest, LoadStats, Provenance, Source, Tenant, TenantRegistry,
};
use shared::{Key, Shared, Written};
use store::{Document, Reservation, ServerRecord, Store};

/// Who is asking, once authenticated.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) user: String,
    pub(crate) admin: bool,
}

/// A refused change: the HTTP status the API answers and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeployError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl DeployError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DeployError {
            status,
            message: message.into(),
        }
    }

    /// `{"error": message}` with the status.
    pub(crate) fn into_response(self) -> http::Response<crate::base::responses::Body> {
        crate::base::responses::error_response(self.status, &self.message)
    }

    fn storage(e: anyhow::Error) -> Self {
        tracing::error!("cannot write the state directory: {e:#}");
        DeployError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("nothing changed: cannot write the state directory: {e:#}"),
        )
    }
}

/// What a successful `PUT` did.
pub(crate) enum Deployed {
    /// The version is new and now live.
    Created(Arc<Tenant>),
    /// The version was already deployed with these very bytes.
    Unchanged(Arc<Tenant>),
}

/// Where the host's tenants come from, besides the API.
pub(crate) struct Sources {
    /// The tenants file (reloadable), or `None` in single-component mode.
    pub(crate) file: Option<std::path::PathBuf>,
    /// Where the API's servers are kept; `None` where the API is off
    /// (single-component mode).
    pub(crate) state: Option<StateLocation>,
}

/// Where the API's servers are kept.
pub(crate) enum StateLocation {
    /// `[host] state_dir`: one host.
    Dir(std::path::PathBuf),
    /// JetStream, shared by a cluster's hosts (`[cluster]`); connected by
    /// [`Deployments::follow_cluster`].
    Cluster,
}

/// Where changes are made durable.
enum Durable {
    Dir(Store),
    /// Set once the cluster's buckets are open (boxed: the handles are
    /// large, and this is read once per change).
    Cluster(Box<OnceCell<Shared>>),
}

/// The server list, and every change to it.
pub(crate) struct Deployments {
    live: Arc<LiveTenants>,
    runtime: Arc<Runtime>,
    host: HostSettings,
    admins: Vec<String>,
    /// Where `deploy` entries go (the publisher: viewers, the cluster).
    events: Arc<dyn LogSink>,
    hub: LogHub,
    /// Counts changes (`deploys`) and compiled components.
    metrics: Arc<Metrics>,
    /// The tenants file, for reloads; its name, for messages.
    file: Option<std::path::PathBuf>,
    source: String,
    durable: Option<Durable>,
    /// The list as stored (on a cluster, as last seen in the bucket): held
    /// for the whole of a change, so changes apply one at a time.
    document: Mutex<Document>,
}

/// The tenants, loaded, before the log hubs they announce changes to
/// exist: loading comes first so that a broken tenant is reported before
/// the host joins a cluster.
pub(crate) struct Loaded {
    live: Arc<LiveTenants>,
    runtime: Arc<Runtime>,
    host: HostSettings,
    admins: Vec<String>,
    file: Option<std::path::PathBuf>,
    source: String,
    durable: Option<Durable>,
    document: Document,
    pub(crate) stats: LoadStats,
}

impl Loaded {
    /// Where `deploy` entries go (the publisher: viewers here and on other
    /// hosts) and whose viewers a deletion closes.
    pub(crate) fn announce_to(
        self,
        events: Arc<dyn LogSink>,
        hub: LogHub,
        metrics: Arc<Metrics>,
    ) -> Deployments {
        Deployments {
            metrics,
            live: self.live,
            runtime: self.runtime,
            host: self.host,
            admins: self.admins,
            events,
            hub,
            file: self.file,
            source: self.source,
            durable: self.durable,
            document: Mutex::new(self.document),
        }
    }

    pub(crate) fn live(&self) -> &Arc<LiveTenants> {
        &self.live
    }
}

impl Deployments {
    /// Opens the state directory and loads every tenant: the tenants file's
    /// and the API's. Every problem is reported at once; a slug in both is
    /// one of them. On a cluster the API's servers come later, from
    /// [`Deployments::follow_cluster`].
    pub(crate) fn load(
        config: &Config,
        sources: Sources,
        runtime: Arc<Runtime>,
    ) -> anyhow::Result<Loaded> {
        let (durable, document) = match sources.state {
            Some(StateLocation::Dir(dir)) => {
                let (store, document) = Store::open(&dir)?;
                (Some(Durable::Dir(store)), document)
            }
            Some(StateLocation::Cluster) => {
                (Some(Durable::Cluster(Box::default())), Document::default())
            }
            None => (None, Document::default()),
        };
        let mut problems = Vec::new();
        for spec in &config.tenants {
            if document.servers.contains_key(spec.slug.as_str()) {
                problems.push(format!(
                    "tenant {:?} is both in this file and deployed through the API (the state \
                     directory): delete it from one of them",
                    spec.slug.as_str(),
                ));
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("{}:\n  - {}", config.source, problems.join("\n  - "));
        }
        let on_host = config.tenants.len() + document.servers.len();
        let (mut tenants, mut stats) = TenantRegistry::load(
            &runtime,
            LoadRequest {
                specs: &config.tenants,
                source: &config.source,
                host: &config.host,
                tenants_on_host: on_host,
                from_file: true,
            },
        )?;
        if let Some(Durable::Dir(store)) = &durable {
            let specs = api_specs(store, &document);
            let state = store.dir().display().to_string();
            let (mut api, api_stats) = TenantRegistry::load(
                &runtime,
                LoadRequest {
                    specs: &specs,
                    source: &state,
                    host: &config.host,
                    // As for servers created later: tenants come and go.
                    tenants_on_host: on_host.max(2),
                    from_file: false,
                },
            )?;
            // The component's facts come from the list, not from now.
            for tenant in &mut api {
                let record = &document.servers[tenant.slug.as_str()];
                for (version, deployment) in &mut tenant.versions {
                    deployment.provenance = record.versions[version].clone();
                }
            }
            tenants.append(&mut api);
            stats.components += api_stats.components;
            stats.cache_hits += api_stats.cache_hits;
            stats.compiled += api_stats.compiled;
        }
        let registry = TenantRegistry::from_tenants(tenants.into_iter().map(Arc::new));
        Ok(Loaded {
            live: Arc::new(LiveTenants::new(registry)),
            runtime,
            host: config.host.clone(),
            admins: config.auth.admins.clone(),
            file: sources.file,
            source: config.source.clone(),
            durable,
            document,
            stats,
        })
    }

    /// The registry requests read.
    pub(crate) fn live(&self) -> &Arc<LiveTenants> {
        &self.live
    }

    pub(crate) fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|admin| admin == user)
    }

    /// The servers `caller` may see: their own, or all for an admin;
    /// sorted by slug.
    pub(crate) fn list(&self, caller: &Caller) -> Vec<Arc<Tenant>> {
        let mut visible: Vec<Arc<Tenant>> = self
            .live
            .snapshot()
            .iter()
            .filter(|tenant| caller.admin || tenant.owner == caller.user)
            .cloned()
            .collect();
        visible.sort_by(|a, b| a.slug.cmp(&b.slug));
        visible
    }

    /// One server, if `caller` may see it.
    pub(crate) fn get(&self, caller: &Caller, slug: &str) -> Result<Arc<Tenant>, DeployError> {
        let tenant = self.live.get(slug).ok_or_else(|| {
            DeployError::new(StatusCode::NOT_FOUND, format!("no server {slug:?}"))
        })?;
        may_change(caller, &tenant.owner, slug)?;
        Ok(tenant)
    }

    /// `POST /api/servers`: an empty server for `owner` (admins only).
    pub(crate) async fn create(
        &self,
        caller: &Caller,
        slug: &str,
        owner: &str,
    ) -> Result<Arc<Tenant>, DeployError> {
        let (durable, mut document) = self.begin().await?;
        if !caller.admin {
            return Err(DeployError::new(
                StatusCode::FORBIDDEN,
                "only admins ([auth] admins) create servers",
            ));
        }
        let slug = Slug::parse(slug).map_err(|e| {
            DeployError::new(StatusCode::BAD_REQUEST, format!("slug {slug:?}: {e}"))
        })?;
        let slug = slug.as_str();
        if owner.is_empty() {
            return Err(DeployError::new(
                StatusCode::BAD_REQUEST,
                "owner: a user id is required",
            ));
        }
        if let Some(Source::File(_)) = self.live.get(slug).map(|t| t.source.clone()) {
            return Err(self.declared_in_file(slug));
        }
        if document.servers.contains_key(slug) {
            return Err(DeployError::new(
                StatusCode::CONFLICT,
                format!("server {slug} already exists"),
            ));
        }
        let now = now_ms();
        if let Some(reserved) = document.reservations.get(slug)
            && reserved.until > now
            && reserved.owner != owner
        {
            return Err(DeployError::new(
                StatusCode::CONFLICT,
                format!(
                    "slug {slug} was deleted recently and stays reserved for its last owner until {} \
                     ([host] slug_cooling_off_days)",
                    rfc3339(reserved.until)
                ),
            ));
        }
        let record = ServerRecord {
            owner: owner.to_string(),
            status: Status::Active,
            created_at: now,
            versions: BTreeMap::new(),
        };
        let mut next = document.clone();
        next.reservations.remove(slug);
        next.servers.insert(slug.to_string(), record);
        durable.commit(&mut next, slug, true).await?;
        *document = next;
        let tenant = self.apply(&document, slug, None, None).await?;
        tracing::info!(slug, owner, by = caller.user, "server created");
        self.metrics.deploy("created");
        tenant.ok_or_else(|| DeployError::new(StatusCode::CONFLICT, "the server vanished"))
    }

    /// Whether `caller` may deploy `version` of `slug`, `declared` bytes
    /// long if the request says: decided from the path and headers alone,
    /// before the body is read, so a stranger's upload is refused without
    /// being buffered. [`Deployments::deploy`] decides again under the lock.
    pub(crate) async fn may_deploy(
        &self,
        caller: &Caller,
        slug: &str,
        version: &str,
        declared: Option<u64>,
    ) -> Result<(), DeployError> {
        let version = parse_version(version)?;
        let (_, document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        if record.versions.contains_key(&version) {
            return Ok(()); // the same bytes again is no change; other bytes, a conflict
        }
        self.within_quota(&document, &record.owner, declared.unwrap_or(0))
    }

    /// Whether `owner` may store one more version of `size` bytes
    /// (`[host] max_versions_per_owner`, `max_bytes_per_owner`): without a
    /// quota one owner could fill `state_dir` for everyone.
    fn within_quota(&self, document: &Document, owner: &str, size: u64) -> Result<(), DeployError> {
        let (mut versions, mut bytes) = (0usize, 0u64);
        for record in document.servers.values().filter(|r| r.owner == owner) {
            versions += record.versions.len();
            bytes += record.versions.values().map(|p| p.size).sum::<u64>();
        }
        let refuse = |what: String| Err(DeployError::new(StatusCode::INSUFFICIENT_STORAGE, what));
        if versions >= self.host.max_versions_per_owner {
            return refuse(format!(
                "{owner} already has {versions} versions deployed, the most an owner may have                  ([host] max_versions_per_owner): delete some first"
            ));
        }
        if bytes + size > self.host.max_bytes_per_owner {
            return refuse(format!(
                "{owner}'s versions take {bytes} bytes; {size} more would pass the {} an owner                  may store ([host] max_bytes_per_owner): delete some first",
                self.host.max_bytes_per_owner
            ));
        }
        Ok(())
    }

    /// `PUT /api/servers/{slug}/versions/{version}`: compiles and validates
    /// `wasm` as at start, stores it, and makes it live.
    pub(crate) async fn deploy(
        &self,
        caller: &Caller,
        slug: &str,
        version: &str,
        wasm: Bytes,
    ) -> Result<Deployed, DeployError> {
        let version = parse_version(version)?;
        let (durable, mut document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        let sha256 = sha256_hex(&wasm);
        if let Some(existing) = record.versions.get(&version) {
            return if existing.sha256 == sha256 {
                Ok(Deployed::Unchanged(self.get(caller, slug)?))
            } else {
                Err(DeployError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "version {version} of {slug} is already deployed with other bytes (sha256 {}): \
                         versions are immutable, deploy a new version",
                        existing.sha256
                    ),
                ))
            };
        }
        self.within_quota(&document, &record.owner, wasm.len() as u64)?;
        let pre = self.compile(wasm.clone(), sha256.clone()).await?;
        durable
            .put_component(&sha256, &wasm)
            .await
            .map_err(DeployError::storage)?;
        let provenance = Provenance {
            sha256,
            size: wasm.len() as u64,
            deployed_at: now_ms(),
            deployed_by: caller.user.clone(),
        };
        let mut next = document.clone();
        server_record(&mut next, slug)
            .versions
            .insert(version.clone(), provenance);
        durable.commit(&mut next, slug, false).await?;
        *document = next;
        let tenant = self
            .apply(&document, slug, Some((&version, pre)), None)
            .await?
            .expect("the server was just written");
        tracing::info!(slug, %version, by = caller.user, "version deployed");
        self.announce(
            slug,
            &version.to_string(),
            DeployAction::Deployed,
            &caller.user,
            format!("{} deployed version {version}", caller.user),
        );
        Ok(Deployed::Created(tenant))
    }

    /// `PATCH /api/servers/{slug}` `{status}`.
    pub(crate) async fn set_status(
        &self,
        caller: &Caller,
        slug: &str,
        status: Status,
    ) -> Result<Arc<Tenant>, DeployError> {
        let (durable, mut document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        if record.status != status {
            let mut next = document.clone();
            server_record(&mut next, slug).status = status;
            durable.commit(&mut next, slug, false).await?;
            *document = next;
            self.apply(&document, slug, None, None).await?;
            tracing::info!(
                slug,
                status = status.as_str(),
                by = caller.user,
                "status changed"
            );
            self.announce(
                slug,
                &newest_label(&document.servers[slug]),
                DeployAction::StatusChanged,
                &caller.user,
                format!("{} made the server {}", caller.user, status.as_str()),
            );
        }
        self.get(caller, slug)
    }

    /// `DELETE /api/servers/{slug}/versions/{version}`. Requests already
    /// running on it finish on it.
    pub(crate) async fn delete_version(
        &self,
        caller: &Caller,
        slug: &str,
        version: &str,
    ) -> Result<Arc<Tenant>, DeployError> {
        let version = parse_version(version)?;
        let (durable, mut document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        if !record.versions.contains_key(&version) {
            return Err(DeployError::new(
                StatusCode::NOT_FOUND,
                format!("server {slug} has no version {version}"),
            ));
        }
        let mut next = document.clone();
        server_record(&mut next, slug).versions.remove(&version);
        durable.commit(&mut next, slug, false).await?;
        *document = next;
        durable.sweep(&document);
        let tenant = self
            .apply(&document, slug, None, None)
            .await?
            .expect("the server was just written");
        tracing::info!(slug, %version, by = caller.user, "version deleted");
        self.announce(
            slug,
            &version.to_string(),
            DeployAction::VersionDeleted,
            &caller.user,
            format!("{} deleted version {version}", caller.user),
        );
        Ok(tenant)
    }

    /// `DELETE /api/servers/{slug}`: gone at once, its viewers closed with
    /// the reason, its slug reserved for its owner for the cooling-off.
    pub(crate) async fn delete(&self, caller: &Caller, slug: &str) -> Result<(), DeployError> {
        let (durable, mut document) = self.begin().await?;
        let record = self.changeable(&document, caller, slug)?;
        let until = now_ms() + self.host.slug_cooling_off().as_millis() as u64;
        let mut next = document.clone();
        next.servers.remove(slug);
        next.reservations.insert(
            slug.to_string(),
            Reservation {
                owner: record.owner.clone(),
                until,
            },
        );
        durable.commit(&mut next, slug, true).await?;
        *document = next;
        durable.sweep(&document);
        let reason = format!("server {slug} was deleted by {}", caller.user);
        self.apply(&document, slug, None, Some(&reason)).await?;
        self.runtime.stores().forget(slug).await;
        tracing::info!(slug, by = caller.user, "server deleted");
        self.metrics.deploy("deleted");
        Ok(())
    }

    /// Takes the change lock, once the API is known to be on.
    async fn begin(&self) -> Result<(&Durable, MutexGuard<'_, Document>), DeployError> {
        let Some(durable) = &self.durable else {
            return Err(DeployError::new(
                StatusCode::NOT_FOUND,
                "deployments need multi-tenant mode (mctx-host serve --config FILE)",
            ));
        };
        Ok((durable, self.document.lock().await))
    }

    /// The record of a server of the API that `caller` may change.
    fn changeable<'a>(
        &self,
        document: &'a Document,
        caller: &Caller,
        slug: &str,
    ) -> Result<&'a ServerRecord, DeployError> {
        if let Some(tenant) = self.live.get(slug)
            && let Source::File(_) = tenant.source
        {
            may_change(caller, &tenant.owner, slug)?;
            return Err(self.declared_in_file(slug));
        }
        let record = document.servers.get(slug).ok_or_else(|| {
            DeployError::new(
                StatusCode::NOT_FOUND,
                format!("no server {slug:?}: an admin creates it with POST /api/servers"),
            )
        })?;
        may_change(caller, &record.owner, slug)?;
        Ok(record)
    }

    fn declared_in_file(&self, slug: &str) -> DeployError {
        DeployError::new(
            StatusCode::CONFLICT,
            format!(
                "server {slug} is declared in {}: change it there and reload (SIGHUP or POST /api/reload)",
                self.source
            ),
        )
    }

    /// Compiles a component off the async threads; a refusal says whether
    /// the bytes are no component (400) or one this host cannot run (422).
    async fn compile(&self, wasm: Bytes, sha256: String) -> Result<GuestPre, DeployError> {
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.load_bytes(&wasm, &sha256))
            .await
            .map_err(|e| {
                DeployError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("compiling: {e}"))
            })?;
        compiled
            .map(|(pre, outcome)| {
                self.metrics.component_loaded(match outcome {
                    crate::run::artifacts::CacheOutcome::Hit => "hit",
                    crate::run::artifacts::CacheOutcome::Miss => "miss",
                    crate::run::artifacts::CacheOutcome::Disabled => "disabled",
                });
                pre
            })
            .map_err(|rejected| match rejected {
                Rejected::Malformed(e) => {
                    DeployError::new(StatusCode::BAD_REQUEST, format!("not a component: {e:#}"))
                }
                Rejected::Unfit(e) => DeployError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("this host cannot serve it: {e:#}"),
                ),
            })
    }

    /// Makes the registry's `slug` what `document` says: rebuilt from its
    /// record (each version's compiled component reused when its bytes are
    /// the same, `fresh` used for the one just compiled, others fetched
    /// and compiled), or removed, closing its viewers with `removed`'s
    /// reason. A server of this host's tenants file is never touched.
    async fn apply(
        &self,
        document: &Document,
        slug: &str,
        fresh: Option<(&Version, GuestPre)>,
        removed: Option<&str>,
    ) -> Result<Option<Arc<Tenant>>, DeployError> {
        let current = self.live.get(slug);
        if let Some(tenant) = &current
            && let Source::File(_) = tenant.source
        {
            tracing::warn!(
                slug,
                "ignoring the API's server {slug}: this host's tenants file declares it"
            );
            return Ok(current);
        }
        let Some(record) = document.servers.get(slug) else {
            if current.is_some() {
                self.live.replace(self.live.snapshot().without(slug));
                let reason =
                    removed.map_or_else(|| format!("server {slug} was deleted"), str::to_string);
                self.hub.close_slug(slug, &reason);
            }
            return Ok(None);
        };
        let mut versions = BTreeMap::new();
        for (version, provenance) in &record.versions {
            let reusable = current
                .as_ref()
                .and_then(|t| t.versions.get(version))
                .filter(|d| d.provenance.sha256 == provenance.sha256)
                .map(|d| d.pre.clone());
            let pre = match (reusable, &fresh) {
                (Some(pre), _) => pre,
                (None, Some((fresh_version, pre))) if *fresh_version == version => pre.clone(),
                (None, _) => {
                    let wasm = self
                        .durable
                        .as_ref()
                        .expect("only the API's servers are applied")
                        .fetch_component(&provenance.sha256)
                        .await
                        .map_err(DeployError::storage)?;
                    if sha256_hex(&wasm) != provenance.sha256 {
                        return Err(DeployError::storage(anyhow::anyhow!(
                            "component {} of {slug} {version} does not match its digest",
                            provenance.sha256
                        )));
                    }
                    self.compile(Bytes::from(wasm), provenance.sha256.clone())
                        .await?
                }
            };
            versions.insert(
                version.clone(),
                Deployment::new(version.clone(), pre, provenance.clone()),
            );
        }
        let capabilities = match &current {
            Some(tenant) => tenant.capabilities.clone(),
            None => {
                let spec = TenantSpec::new(
                    Slug::parse(slug).map_err(|e| {
                        DeployError::new(StatusCode::BAD_REQUEST, format!("slug {slug:?}: {e}"))
                    })?,
                    &record.owner,
                    BTreeMap::new(),
                );
                let mut problems = Vec::new();
                // Never one tenant alone once tenants come and go: half the pool.
                let settled = Capabilities::settle(
                    &spec,
                    &self.host,
                    2,
                    self.runtime.stores(),
                    &mut problems,
                );
                debug_assert!(problems.is_empty(), "no secrets, no problems: {problems:?}");
                Arc::new(settled)
            }
        };
        let tenant = Arc::new(Tenant {
            slug: Slug::parse(slug).expect("checked above"),
            owner: record.owner.clone(),
            status: record.status,
            versions,
            capabilities,
            source: Source::Api,
        });
        self.live.replace(self.live.snapshot().with(tenant.clone()));
        Ok(Some(tenant))
    }

    /// Counts the change and tells the slug's viewers (here and, on a
    /// cluster, elsewhere).
    fn announce(&self, slug: &str, version: &str, action: DeployAction, by: &str, message: String) {
        self.metrics.deploy(match action {
            DeployAction::Deployed => "deployed",
            DeployAction::VersionDeleted => "versionDeleted",
            DeployAction::StatusChanged => "statusChanged",
            DeployAction::Reloaded => "reloaded",
        });
        if !self.events.wants(slug) {
            return;
        }
        let meta = Arc::new(RequestMeta {
            slug: slug.to_string(),
            version: version.to_string(),
            request_id: String::new(),
        });
        let event = DeployEvent {
            action,
            by: by.to_string(),
        };
        self.events
            .publish(slug, vec![LogEntry::deploy_event(meta, event, message)]);
    }

    /// On a cluster: opens the shared buckets (retrying while NATS is
    /// unreachable), applies every server they hold, then every change any
    /// host makes, for as long as the host runs. Resolves once this host
    /// has caught up with the servers already deployed, or after `patience`
    /// (the host then serves its file's tenants and catches up later).
    pub(crate) async fn follow_cluster(
        self: &Arc<Self>,
        client: async_nats::Client,
        patience: std::time::Duration,
    ) {
        let (caught_up, on_caught_up) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(
            async move { me.watch_cluster(client, caught_up).await }
                .instrument(tracing::info_span!("deployments")),
        );
        if tokio::time::timeout(patience, on_caught_up).await.is_err() {
            tracing::warn!(
                "not caught up with the cluster's deployments after {patience:?}: serving without them for now"
            );
        }
    }

    async fn watch_cluster(
        &self,
        client: async_nats::Client,
        caught_up: tokio::sync::oneshot::Sender<()>,
    ) {
        use futures_util::StreamExt as _;
        let Some(Durable::Cluster(cell)) = &self.durable else {
            return;
        };
        let mut caught_up = Some(caught_up);
        let mut attempt = 0u32;
        loop {
            let opened = match cell.get() {
                Some(shared) => Ok(shared.clone()),
                None => Shared::open(client.clone()).await.inspect(|shared| {
                    let _ = cell.set(shared.clone());
                }),
            };
            let watched = match opened {
                Ok(shared) => shared.watch().await,
                Err(e) => Err(e),
            };
            let (mut changes, values) = match watched {
                Ok(watched) => watched,
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 || attempt.is_multiple_of(30) {
                        tracing::warn!("cannot follow the cluster's deployments yet: {e:#}");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            attempt = 0;
            if values == 0
                && let Some(done) = caught_up.take()
            {
                let _ = done.send(());
            }
            while let Some(change) = changes.next().await {
                let Ok(change) = change else { break };
                let last_of_history = change.delta == 0;
                self.mirror(change).await;
                if last_of_history && let Some(done) = caught_up.take() {
                    let _ = done.send(());
                }
            }
            tracing::warn!("the cluster's deployment watch ended; watching again");
        }
    }

    /// Applies one change seen in the shared bucket.
    async fn mirror(&self, change: async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Some(key) = Key::parse(&change.key) else {
            return;
        };
        let mut document = self.document.lock().await;
        if document.revisions.get(&change.key) >= Some(&change.revision) {
            return; // this host wrote it, or saw it already
        }
        document
            .revisions
            .insert(change.key.clone(), change.revision);
        let present = change.operation == Operation::Put;
        match key {
            Key::Reserved(slug) => match serde_json::from_slice::<Reservation>(&change.value) {
                Ok(reservation) if present => {
                    document.reservations.insert(slug, reservation);
                }
                _ => {
                    document.reservations.remove(&slug);
                }
            },
            Key::Server(slug) => {
                let record = present
                    .then(|| serde_json::from_slice::<ServerRecord>(&change.value))
                    .transpose();
                match record {
                    Ok(Some(record)) => {
                        document.servers.insert(slug.clone(), record);
                    }
                    Ok(None) => {
                        document.servers.remove(&slug);
                    }
                    Err(e) => {
                        tracing::error!(slug, "unreadable server record in the cluster: {e}");
                        return;
                    }
                }
                if let Err(e) = self.apply(&document, &slug, None, None).await {
                    tracing::error!(slug, "cannot apply the cluster's change: {}", e.message);
                }
            }
        }
    }
}

impl Durable {
    async fn put_component(&self, sha256: &str, wasm: &Bytes) -> anyhow::Result<()> {
        match self {
            Durable::Dir(store) => store.put_component(sha256, wasm).map(|_| ()),
            Durable::Cluster(_) => self.shared()?.put_component(sha256, wasm).await,
        }
    }

    async fn fetch_component(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Durable::Dir(store) => Ok(std::fs::read(store.component_path(sha256))?),
            Durable::Cluster(_) => self.shared()?.fetch_component(sha256).await,
        }
    }

    /// Makes `next` durable, where it differs from what is stored for
    /// `slug`: on disk the whole list; on a cluster the server's key (and,
    /// with `reservation`, its reservation's) by compare-and-set, noting
    /// the new revisions in `next`.
    async fn commit(
        &self,
        next: &mut Document,
        slug: &str,
        reservation: bool,
    ) -> Result<(), DeployError> {
        match self {
            Durable::Dir(store) => store.save(next).map_err(DeployError::storage),
            Durable::Cluster(_) => {
                let shared = self.shared().map_err(DeployError::storage)?;
                let server = next.servers.get(slug).map(to_json);
                let reserved = reservation.then(|| next.reservations.get(slug).map(to_json));
                // Hosts apply the bucket in order: a deletion's reservation
                // goes first, so no host sees the slug free before it sees
                // it reserved; a creation's server goes first, so a lost
                // race leaves the reservation in place.
                let deleting = server.is_none();
                if deleting && let Some(reserved) = reserved.clone() {
                    commit_key(shared, next, Key::Reserved(slug.to_string()), reserved).await?;
                }
                commit_key(shared, next, Key::Server(slug.to_string()), server).await?;
                if !deleting && let Some(reserved) = reserved {
                    commit_key(shared, next, Key::Reserved(slug.to_string()), reserved).await?;
                }
                Ok(())
            }
        }
    }

    /// Removes what the list no longer names (on disk; a cluster's object
    /// store keeps components, other hosts may still be fetching them).
    fn sweep(&self, document: &Document) {
        if let Durable::Dir(store) = self {
            store.sweep(document);
        }
    }

    fn shared(&self) -> anyhow::Result<&Shared> {
        match self {
            Durable::Cluster(cell) => cell.get().ok_or_else(|| {
                anyhow::anyhow!("the cluster's deployment buckets are not reachable yet (NATS)")
            }),
            Durable::Dir(_) => unreachable!("only on a cluster"),
        }
    }
}

async fn commit_key(
    shared: &Shared,
    next: &mut Document,
    key: Key,
    value: Option<Vec<u8>>,
) -> Result<(), DeployError> {
    let text = key.text();
    let revision = next.revisions.get(&text).copied();
    if value.is_none() && revision.is_none() {
        return Ok(()); // nothing stored, nothing to delete
    }
    match shared
        .write(&key, value, revision)
        .await
        .map_err(DeployError::storage)?
    {
        Written::At(revision) => {
            next.revisions.insert(text, revision);
            Ok(())
        }
        Written::Deleted => {
            // Creating it again is a create, not an update of the marker.
            next.revisions.remove(&text);
            Ok(())
        }
        Written::Conflict => Err(DeployError::new(
            StatusCode::CONFLICT,
            "another host changed this server at the same time: nothing changed here, try again",
        )),
    }
}

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

/// The owner or an admin.
fn may_change(caller: &Caller, owner: &str, slug: &str) -> Result<(), DeployError> {
    if caller.admin || owner == caller.user {
        Ok(())
    } else {
        Err(DeployError::new(
            StatusCode::FORBIDDEN,
            format!("you do not own server {slug}"),
        ))
    }
}

fn parse_version(text: &str) -> Result<Version, DeployError> {
    Version::parse(text).map_err(|e| {
        DeployError::new(
            StatusCode::BAD_REQUEST,
            format!("version {text:?} is not a semantic version like 1.2.0: {e}"),
        )
    })
}

fn server_record<'a>(document: &'a mut Document, slug: &str) -> &'a mut ServerRecord {
    document
        .servers
        .get_mut(slug)
        .expect("a server of the API is in the list")
}

/// The version a status change is reported under: the newest, or `-`.
fn newest_label(record: &ServerRecord) -> String {
    record
        .versions
        .keys()
        .next_back()
        .map_or_else(|| "-".to_string(), Version::to_string)
}

/// The API's servers as tenant specs: host defaults, components from the
/// store.
fn api_specs(store: &Store, document: &Document) -> Vec<TenantSpec> {
    document
        .servers
        .iter()
        .filter_map(|(slug, record)| {
            let slug = Slug::parse(slug).ok()?;
            let versions = record
                .versions
                .iter()
                .map(|(version, provenance)| {
                    (version.clone(), store.component_path(&provenance.sha256))
                })
                .collect();
            let mut spec = TenantSpec::new(slug, &record.owner, versions);
            spec.status = record.status;
            Some(spec)
        })
        .collect()
}

/// `2026-12-03T10:00:00Z` for milliseconds since the epoch.
pub(crate) fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
