//! Making a change real: compiling an upload, swapping the registry to the
//! new list, and announcing the change to the server's viewers.

use super::Deployments;
use super::error::{DeployError, Why};
use super::store::Document;
use crate::base::config::{Slug, TenantSpec};
use crate::logs::entry::{DeployAction, DeployEvent, LogEntry, RequestMeta};
use crate::run::artifacts::sha256_hex;
use crate::run::capabilities::Capabilities;
use crate::run::runtime::{GuestPre, Rejected};
use crate::run::tenants::{Deployment, Source, Tenant};
use bytes::Bytes;
use semver::Version;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Deployments {
    /// Compiles a component off the async threads; a refusal says whether
    /// the bytes are no component (400) or one this host cannot run (422).
    pub(super) async fn compile(
        &self,
        wasm: Bytes,
        sha256: String,
    ) -> Result<GuestPre, DeployError> {
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || runtime.load_bytes(&wasm, &sha256))
            .await
            .map_err(|e| DeployError::new(Why::Failed, format!("compiling: {e}")))?;
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
                    DeployError::new(Why::Invalid, format!("not a component: {e:#}"))
                }
                Rejected::Unfit(e) => {
                    DeployError::new(Why::Unservable, format!("this host cannot serve it: {e:#}"))
                }
            })
    }

    /// Makes the registry's `slug` what `document` says: rebuilt from its
    /// record (each version's compiled component reused when its bytes are
    /// the same, `fresh` used for the one just compiled, others fetched
    /// and compiled), or removed, closing its viewers with `removed`'s
    /// reason. A server of this host's tenants file is never touched.
    pub(super) async fn apply(
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
                        DeployError::new(Why::Invalid, format!("slug {slug:?}: {e}"))
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
    pub(super) fn announce(
        &self,
        slug: &str,
        version: &str,
        action: DeployAction,
        by: &str,
        message: String,
    ) {
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
}
