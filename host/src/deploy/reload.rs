//! Reloading the tenants file (`SIGHUP`, `POST /api/reload`, `serve
//! --watch`): the file's tenants become what the file now says, with the
//! deploy API's swap semantics.
//!
//! - A tenant whose table, component bytes and secret values are unchanged
//!   is kept as it is: same compiled components, same concurrency gate, its
//!   viewers see nothing.
//! - A changed tenant is rebuilt; requests in flight finish on the old one,
//!   and its viewers get a `deploy` entry saying the file changed it.
//! - A tenant gone from the file is removed; its viewers get a `closing`
//!   frame with the reason.
//! - A broken file changes nothing: every problem is reported, as at start,
//!   and the running tenants keep serving.
//!
//! Only the `[[tenants]]` tables are applied: `[host]`, `[auth]`, `[logs]`
//! and `[cluster]` shape listeners, pools and connections made at start,
//! and are read again only by a restart.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use super::Deployments;
use crate::base::config::TenantSpec;
use crate::logs::entry::DeployAction;
use crate::run::artifacts::sha256_hex;
use crate::run::capabilities::Capabilities;
use crate::run::tenants::{LoadRequest, Source, Tenant, TenantRegistry};

/// What a reload changed, by slug.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReloadSummary {
    pub(crate) added: Vec<String>,
    pub(crate) changed: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) unchanged: usize,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |slugs: &[String]| {
            if slugs.is_empty() {
                "none".to_string()
            } else {
                slugs.join(", ")
            }
        };
        write!(
            f,
            "added {}; changed {}; removed {}; {} unchanged",
            list(&self.added),
            list(&self.changed),
            list(&self.removed),
            self.unchanged
        )
    }
}

impl Deployments {
    /// Re-reads the tenants file and applies the difference (see the module
    /// docs). `by` names who asked, for the viewers' `deploy` entries.
    pub(crate) async fn reload(&self, by: &str) -> Result<ReloadSummary> {
        let Some(layers) = self.reload_from.clone() else {
            bail!("there is no tenants file to reload: this host serves one component");
        };
        let _one_change_at_a_time = self.document.lock().await;
        let current = self.live.snapshot();
        let runtime = self.runtime.clone();
        let host = self.host.clone();
        let planned = current.clone();
        // Reading, hashing and compiling block: off the async threads.
        let (config, kept, built) = tokio::task::spawn_blocking(move || -> Result<_> {
            let config = layers.settle()?;
            let mut problems = Vec::new();
            let mut kept = Vec::new();
            let mut build = Vec::new();
            let api_servers = planned.iter().filter(|t| t.source == Source::Api).count();
            let on_host = config.tenants.len() + api_servers;
            for spec in &config.tenants {
                match planned.get(spec.slug.as_str()) {
                    Some(tenant) if tenant.source == Source::Api => problems.push(format!(
                        "tenant {:?} is deployed through the API: delete it there before \
                         declaring it in the file",
                        spec.slug.as_str()
                    )),
                    Some(tenant) if unchanged(tenant, spec) => kept.push(tenant.clone()),
                    _ => build.push(spec.clone()),
                }
            }
            if !problems.is_empty() {
                bail!(
                    "{}: invalid configuration:\n  - {}",
                    config.source,
                    problems.join("\n  - ")
                );
            }
            let (built, _) = TenantRegistry::load(
                &runtime,
                LoadRequest {
                    specs: &build,
                    source: &config.source,
                    host: &host,
                    tenants_on_host: on_host,
                    from_file: true,
                },
            )?;
            Ok((config, kept, built))
        })
        .await
        .context("reloading")??;

        let declared: HashSet<&str> = config.tenants.iter().map(|t| t.slug.as_str()).collect();
        let mut summary = ReloadSummary {
            unchanged: kept.len(),
            ..ReloadSummary::default()
        };
        for tenant in current.iter() {
            if matches!(tenant.source, Source::File(_)) && !declared.contains(tenant.slug.as_str())
            {
                summary.removed.push(tenant.slug.to_string());
            }
        }
        let built: Vec<Arc<Tenant>> = built.into_iter().map(Arc::new).collect();
        for tenant in &built {
            match current.get(tenant.slug.as_str()) {
                Some(_) => summary.changed.push(tenant.slug.to_string()),
                None => summary.added.push(tenant.slug.to_string()),
            }
        }
        let api = current.iter().filter(|t| t.source == Source::Api).cloned();
        self.live.replace(TenantRegistry::from_tenants(
            api.chain(kept).chain(built.iter().cloned()),
        ));

        for slug in &summary.removed {
            self.hub.close_slug(
                slug,
                &format!("server {slug} was removed from {}", config.source),
            );
        }
        for tenant in built
            .iter()
            .filter(|t| summary.changed.contains(&t.slug.to_string()))
        {
            let newest = tenant.versions.keys().next_back();
            self.announce(
                tenant.slug.as_str(),
                &newest.map_or_else(|| "-".to_string(), ToString::to_string),
                DeployAction::Reloaded,
                by,
                format!("{} was reloaded and changed this server", config.source),
            );
        }
        for list in [
            &mut summary.added,
            &mut summary.changed,
            &mut summary.removed,
        ] {
            list.sort();
        }
        tracing::info!(by, %summary, "tenants file reloaded");
        Ok(summary)
    }
}

/// Whether a running tenant of the file is exactly what `spec` describes
/// now: the same table, the same bytes in each component file, the same
/// environment (secrets are read again, so a rotated secret counts as a
/// change).
fn unchanged(tenant: &Tenant, spec: &TenantSpec) -> bool {
    let Source::File(old) = &tenant.source else {
        return false;
    };
    if **old != *spec {
        return false;
    }
    let same_bytes = spec.versions.iter().all(|(version, path)| {
        let running = tenant.versions.get(version).map(|d| &d.provenance.sha256);
        std::fs::read(path).is_ok_and(|bytes| Some(&sha256_hex(&bytes)) == running)
    });
    if !same_bytes {
        return false;
    }
    // Only the environment can differ now; settling the rest (limits, the
    // gate, the key-value store) would do work and touch shared state.
    let mut problems = Vec::new();
    let (env, _) = Capabilities::environment(spec, &mut problems);
    problems.is_empty() && env == tenant.capabilities.env
}
