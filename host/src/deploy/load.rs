//! Starting: the tenants file's servers and the stored list merged into the
//! first registry.

use super::durable::Durable;
use super::store::{Document, Store};
use super::{Deployments, Loaded, Sources, StateLocation};
use crate::base::config::{Config, Slug, TenantSpec};
use crate::run::runtime::Runtime;
use crate::run::tenants::{LiveTenants, LoadRequest, TenantRegistry};
use std::sync::Arc;

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
            reload_from: sources.reload_from,
            source: config.source.clone(),
            durable,
            document,
            stats,
        })
    }
}

/// The API's servers as tenant specs: host defaults, components from the
/// store.
pub(super) fn api_specs(store: &Store, document: &Document) -> Vec<TenantSpec> {
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
