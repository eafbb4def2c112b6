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
//!
//! Files: `rules.rs` (who may change what, quotas, version labels),
//! `apply.rs` (compile, swap, announce), `durable.rs` (where the list is
//! kept), `mirror.rs` (a cluster's changes applied here), `load.rs` (the
//! first registry), `error.rs` (why a change was refused, without HTTP:
//! `edge::deploy_api` maps it), `store.rs`/`shared.rs` (the two stores),
//! `reload.rs` (the tenants file again).

mod apply;
mod durable;
mod error;
mod load;
mod mirror;
mod reload;
mod rules;
mod shared;
mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use semver::Version;
use tokio::sync::{Mutex, MutexGuard};

use crate::base::config::{HostSettings, Layers, Slug, Status};
use crate::base::metrics::Metrics;
use crate::logs::entry::{DeployAction, now_ms};
use crate::logs::hub::LogHub;
use crate::logs::sink::LogSink;
use crate::run::artifacts::sha256_hex;
use crate::run::runtime::Runtime;
use crate::run::tenants::{LiveTenants, LoadStats, Provenance, Source, Tenant};
use durable::Durable;
pub(crate) use error::{DeployError, Why};
use rules::{may_change, parse_version};
use store::{Document, Reservation, ServerRecord};

/// Who is asking, once authenticated.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) user: String,
    pub(crate) admin: bool,
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
    /// What reloads settle again (the tenants file under the command
    /// line's settings), or `None` in single-component mode.
    pub(crate) reload_from: Option<Layers>,
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
    /// What reloads settle again; the file's name, for messages.
    reload_from: Option<Layers>,
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
    reload_from: Option<Layers>,
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
            reload_from: self.reload_from,
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
        let tenant = self
            .live
            .get(slug)
            .ok_or_else(|| DeployError::new(Why::NotFound, format!("no server {slug:?}")))?;
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
                Why::Forbidden,
                "only admins ([auth] admins) create servers",
            ));
        }
        let slug = Slug::parse(slug)
            .map_err(|e| DeployError::new(Why::Invalid, format!("slug {slug:?}: {e}")))?;
        let slug = slug.as_str();
        if owner.is_empty() {
            return Err(DeployError::new(
                Why::Invalid,
                "owner: a user id is required",
            ));
        }
        if let Some(Source::File(_)) = self.live.get(slug).map(|t| t.source.clone()) {
            return Err(self.declared_in_file(slug));
        }
        if document.servers.contains_key(slug) {
            return Err(DeployError::new(
                Why::Conflict,
                format!("server {slug} already exists"),
            ));
        }
        let now = now_ms();
        if let Some(reserved) = document.reservations.get(slug)
            && reserved.until > now
            && reserved.owner != owner
        {
            return Err(DeployError::new(
                Why::Conflict,
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
        tenant.ok_or_else(|| DeployError::new(Why::Conflict, "the server vanished"))
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
                    Why::Conflict,
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
                Why::NotFound,
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
                Why::NotFound,
                "deployments need multi-tenant mode (mctx-host serve --config FILE)",
            ));
        };
        Ok((durable, self.document.lock().await))
    }
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

/// `2026-12-03T10:00:00Z` for milliseconds since the epoch.
pub(crate) fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
