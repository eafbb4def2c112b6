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
//! on disk (crash-safely) before the registry swaps, so a host that
//! answered a deploy serves it again after any crash.

mod reload;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use semver::Version;
use tokio::sync::Mutex;

use crate::base::config::{Config, HostSettings, Slug, Status, TenantSpec};
use crate::logs::entry::{DeployAction, DeployEvent, LogEntry, RequestMeta, now_ms};
use crate::logs::hub::LogHub;
use crate::logs::sink::LogSink;
use crate::run::capabilities::Capabilities;
use crate::run::runtime::{Rejected, Runtime};
use crate::run::tenants::{
    Deployment, LiveTenants, LoadRequest, LoadStats, Provenance, Source, Tenant, TenantRegistry,
    sha256_hex,
};
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
    /// `[host] state_dir`, or `None` where the API is off (single-component
    /// mode).
    pub(crate) state_dir: Option<std::path::PathBuf>,
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
    /// The tenants file, for reloads; its name, for messages.
    file: Option<std::path::PathBuf>,
    source: String,
    store: Option<Store>,
    /// The list as stored: held for the whole of a change, so changes
    /// apply one at a time.
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
    store: Option<Store>,
    document: Document,
    pub(crate) stats: LoadStats,
}

impl Loaded {
    /// Where `deploy` entries go (the publisher: viewers here and on other
    /// hosts) and whose viewers a deletion closes.
    pub(crate) fn announce_to(self, events: Arc<dyn LogSink>, hub: LogHub) -> Deployments {
        Deployments {
            live: self.live,
            runtime: self.runtime,
            host: self.host,
            admins: self.admins,
            events,
            hub,
            file: self.file,
            source: self.source,
            store: self.store,
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
    /// one of them.
    pub(crate) fn load(
        config: &Config,
        sources: Sources,
        runtime: Arc<Runtime>,
    ) -> anyhow::Result<Loaded> {
        let (store, document) = match &sources.state_dir {
            Some(dir) => {
                let (store, document) = Store::open(dir)?;
                (Some(store), document)
            }
            None => (None, Document::default()),
        };
        let mut problems = Vec::new();
        for spec in &config.tenants {
            if document.servers.contains_key(spec.slug.as_str()) {
                problems.push(format!(
                    "tenant {:?} is both in {} and deployed through the API (state_dir {}): \
                     delete it from one of them",
                    spec.slug.as_str(),
                    config.source,
                    sources
                        .state_dir
                        .as_deref()
                        .unwrap_or(std::path::Path::new("-"))
                        .display(),
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
        if let Some(store) = &store {
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
            store,
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
        let tenant = self.find(slug)?;
        may_change(caller, &tenant)?;
        Ok(tenant)
    }

    /// `POST /api/servers`: an empty server for `owner` (admins only).
    pub(crate) async fn create(
        &self,
        caller: &Caller,
        slug: &str,
        owner: &str,
    ) -> Result<Arc<Tenant>, DeployError> {
        let (store, mut document) = self.begin().await?;
        if !caller.admin {
            return Err(DeployError::new(
                StatusCode::FORBIDDEN,
                "only admins ([auth] admins) create servers",
            ));
        }
        let slug = Slug::parse(slug).map_err(|e| {
            DeployError::new(StatusCode::BAD_REQUEST, format!("slug {slug:?}: {e}"))
        })?;
        if owner.is_empty() {
            return Err(DeployError::new(
                StatusCode::BAD_REQUEST,
                "owner: a user id is required",
            ));
        }
        if let Some(existing) = self.live.get(slug.as_str()) {
            return Err(match existing.source {
                Source::File(_) => self.declared_in_file(slug.as_str()),
                Source::Api => DeployError::new(
                    StatusCode::CONFLICT,
                    format!("server {slug} already exists"),
                ),
            });
        }
        let now = now_ms();
        if let Some(reserved) = document.reservations.get(slug.as_str())
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
        let mut next = document.clone();
        next.reservations.remove(slug.as_str());
        next.servers.insert(
            slug.as_str().to_string(),
            ServerRecord {
                owner: owner.to_string(),
                status: Status::Active,
                created_at: now,
                versions: BTreeMap::new(),
            },
        );
        store.save(&next).map_err(DeployError::storage)?;
        *document = next;
        let spec = TenantSpec::new(slug.clone(), owner, BTreeMap::new());
        let mut problems = Vec::new();
        // Never one tenant alone once tenants come and go: half the pool.
        let capabilities = Capabilities::settle(&spec, &self.host, 2, &mut problems);
        debug_assert!(problems.is_empty(), "no secrets, no problems: {problems:?}");
        let tenant = Arc::new(Tenant {
            slug,
            owner: owner.to_string(),
            status: Status::Active,
            versions: BTreeMap::new(),
            capabilities: Arc::new(capabilities),
            source: Source::Api,
        });
        self.live.replace(self.live.snapshot().with(tenant.clone()));
        tracing::info!(slug = %tenant.slug, owner, by = caller.user, "server created");
        Ok(tenant)
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
        let (store, mut document) = self.begin().await?;
        let tenant = self.changeable(caller, slug)?;
        let sha256 = sha256_hex(&wasm);
        if let Some(existing) = tenant.versions.get(&version) {
            return if existing.provenance.sha256 == sha256 {
                Ok(Deployed::Unchanged(tenant))
            } else {
                Err(DeployError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "version {version} of {slug} is already deployed with other bytes (sha256 {}): \
                         versions are immutable, deploy a new version",
                        existing.provenance.sha256
                    ),
                ))
            };
        }
        let runtime = self.runtime.clone();
        let bytes = wasm.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.load_bytes(&bytes))
            .await
            .map_err(|e| {
                DeployError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("compiling: {e}"))
            })?;
        let (pre, _) = compiled.map_err(|rejected| match rejected {
            Rejected::Malformed(e) => {
                DeployError::new(StatusCode::BAD_REQUEST, format!("not a component: {e:#}"))
            }
            Rejected::Unfit(e) => DeployError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("this host cannot serve it: {e:#}"),
            ),
        })?;
        store
            .put_component(&sha256, &wasm)
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
            .insert(version.clone(), provenance.clone());
        store.save(&next).map_err(DeployError::storage)?;
        *document = next;
        let deployment = Deployment::new(version.clone(), pre, provenance);
        let tenant = Arc::new(tenant.changed(|parts| {
            parts.versions.insert(version.clone(), deployment);
        }));
        self.live.replace(self.live.snapshot().with(tenant.clone()));
        tracing::info!(slug, %version, by = caller.user, "version deployed");
        self.announce(
            &tenant,
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
        let (store, mut document) = self.begin().await?;
        let tenant = self.changeable(caller, slug)?;
        if tenant.status == status {
            return Ok(tenant);
        }
        let mut next = document.clone();
        server_record(&mut next, slug).status = status;
        store.save(&next).map_err(DeployError::storage)?;
        *document = next;
        let tenant = Arc::new(tenant.changed(|parts| parts.status = status));
        self.live.replace(self.live.snapshot().with(tenant.clone()));
        tracing::info!(
            slug,
            status = status.as_str(),
            by = caller.user,
            "status changed"
        );
        self.announce(
            &tenant,
            &newest_label(&tenant),
            DeployAction::StatusChanged,
            &caller.user,
            format!("{} made the server {}", caller.user, status.as_str()),
        );
        Ok(tenant)
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
        let (store, mut document) = self.begin().await?;
        let tenant = self.changeable(caller, slug)?;
        if !tenant.versions.contains_key(&version) {
            return Err(DeployError::new(
                StatusCode::NOT_FOUND,
                format!("server {slug} has no version {version}"),
            ));
        }
        let mut next = document.clone();
        server_record(&mut next, slug).versions.remove(&version);
        store.save(&next).map_err(DeployError::storage)?;
        *document = next;
        store.sweep(&document);
        let tenant = Arc::new(tenant.changed(|parts| {
            parts.versions.remove(&version);
        }));
        self.live.replace(self.live.snapshot().with(tenant.clone()));
        tracing::info!(slug, %version, by = caller.user, "version deleted");
        self.announce(
            &tenant,
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
        let (store, mut document) = self.begin().await?;
        let tenant = self.changeable(caller, slug)?;
        let until = now_ms() + self.host.slug_cooling_off().as_millis() as u64;
        let mut next = document.clone();
        next.servers.remove(slug);
        next.reservations.insert(
            slug.to_string(),
            Reservation {
                owner: tenant.owner.clone(),
                until,
            },
        );
        store.save(&next).map_err(DeployError::storage)?;
        *document = next;
        store.sweep(&document);
        self.live.replace(self.live.snapshot().without(slug));
        tracing::info!(slug, by = caller.user, "server deleted");
        self.hub.close_slug(
            slug,
            &format!("server {slug} was deleted by {}", caller.user),
        );
        Ok(())
    }

    /// Takes the change lock, once the API is known to be on.
    async fn begin(&self) -> Result<(&Store, tokio::sync::MutexGuard<'_, Document>), DeployError> {
        let Some(store) = &self.store else {
            return Err(DeployError::new(
                StatusCode::NOT_FOUND,
                "deployments need multi-tenant mode (mctx-host serve --config FILE)",
            ));
        };
        Ok((store, self.document.lock().await))
    }

    fn find(&self, slug: &str) -> Result<Arc<Tenant>, DeployError> {
        self.live
            .get(slug)
            .ok_or_else(|| DeployError::new(StatusCode::NOT_FOUND, format!("no server {slug:?}")))
    }

    /// A server of the API that `caller` may change.
    fn changeable(&self, caller: &Caller, slug: &str) -> Result<Arc<Tenant>, DeployError> {
        let tenant = self.find(slug).map_err(|mut e| {
            e.message
                .push_str(": an admin creates it with POST /api/servers");
            e
        })?;
        may_change(caller, &tenant)?;
        if let Source::File(_) = tenant.source {
            return Err(self.declared_in_file(slug));
        }
        Ok(tenant)
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

    /// Tells the slug's viewers (here and, on a cluster, elsewhere).
    fn announce(
        &self,
        tenant: &Tenant,
        version: &str,
        action: DeployAction,
        by: &str,
        message: String,
    ) {
        let slug = tenant.slug.as_str();
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
}

/// The owner or an admin.
fn may_change(caller: &Caller, tenant: &Tenant) -> Result<(), DeployError> {
    if caller.admin || tenant.owner == caller.user {
        Ok(())
    } else {
        Err(DeployError::new(
            StatusCode::FORBIDDEN,
            format!("you do not own server {}", tenant.slug),
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
fn newest_label(tenant: &Tenant) -> String {
    tenant
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
