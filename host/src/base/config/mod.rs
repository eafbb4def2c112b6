//! The tenants file (`tenants.toml`): parsing and validation.
//!
//! Parsing is two steps on purpose. serde reads each table straight into
//! the settings struct of the part that uses it (`tables.rs`; unknown keys
//! and wrong types are refused with line numbers), then [`Config::parse`]
//! checks what serde cannot — slug syntax, duplicate slugs, semver keys,
//! values out of range — and reports *every* problem at once, each naming
//! the file and the tenant, so a user fixes a config in one round trip.

mod addresses;
mod credential_url;
mod outbound;
mod tables;
mod tenant;

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

pub use addresses::{is_own_address, is_public};
pub use credential_url::{CredentialUrl, Userinfo, without_userinfo};
pub use outbound::{AllowList, Allowed, Scheme, Target};
pub use tables::{
    AuthSettings, ClusterSettings, DEFAULT_ADDR, DEFAULT_BASE_DOMAIN, DEFAULT_CPU_LIMIT_MS,
    DEFAULT_MEMORY_LIMIT_MB, HostSettings, LogSettings, MetricsSettings,
};
pub use tenant::{OutboundSpec, SecretSource, Slug, SlugError, Status, TenantSpec};

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the configuration came from, for error messages.
    pub source: String,
    pub host: HostSettings,
    pub auth: AuthSettings,
    pub logs: LogSettings,
    pub metrics: MetricsSettings,
    /// `None`: one host, hubs in process (the default).
    pub cluster: Option<ClusterSettings>,
    pub tenants: Vec<TenantSpec>,
}

/// The file as serde reads it: every table but the tenants is final.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct File {
    host: HostSettings,
    auth: AuthSettings,
    logs: LogSettings,
    metrics: MetricsSettings,
    cluster: Option<ClusterSettings>,
    tenants: Vec<tenant::TenantTable>,
}

impl Config {
    /// Reads and validates a tenants file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let config = Config::parse(&text, &path.display().to_string(), base)?;
        if config.auth.session_secret.is_some() {
            // Whoever reads this file can sign in as anyone.
            crate::base::private::check_secret_file(path)
                .map_err(|e| anyhow::anyhow!("[auth] session_secret: {e}"))?;
        }
        Ok(config)
    }

    /// Parses a tenants file's text; relative component paths resolve
    /// against `base` (the config file's directory).
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config> {
        let file: File = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        let File {
            mut host,
            mut auth,
            mut logs,
            metrics,
            mut cluster,
            tenants: tables,
        } = file;
        let mut problems = Vec::new();
        host.resolve_paths(base);
        host.check(&mut problems);
        auth.check();
        logs.check(&mut problems);
        if let Some(cluster) = &mut cluster {
            cluster.resolve_paths(base);
            cluster.check(&mut problems);
        }
        let mut seen = HashSet::new();
        let mut tenants = Vec::new();
        for (index, table) in tables.into_iter().enumerate() {
            let Some(tenant) = table.check(index + 1, base, &mut problems) else {
                continue;
            };
            if !seen.insert(tenant.slug.clone()) {
                problems.push(format!(
                    "tenant {slug:?} ([[tenants]] #{}): duplicate slug: another tenant already uses {slug:?}",
                    index + 1,
                    slug = tenant.slug.as_str(),
                ));
            }
            tenants.push(tenant);
        }
        if !problems.is_empty() {
            bail!(
                "{source}: invalid configuration:\n  - {}",
                problems.join("\n  - ")
            );
        }
        Ok(Config {
            source: source.to_string(),
            host,
            auth,
            logs,
            metrics,
            cluster,
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
    use semver::Version;

    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "tenants.toml", Path::new("/etc/mctx"))
    }

    const ONE: &str = r#"
        [[tenants]]
        slug = "hello"
        owner = "alice"
        status = "active"
        versions = { "1.0.0" = "hello.wasm", "1.2.0" = "/abs/hello2.wasm" }
    "#;

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse(ONE).unwrap();
        assert_eq!(config.host, HostSettings::default());
        assert_eq!(
            (config.auth.clone(), config.logs.clone()),
            (AuthSettings::default(), LogSettings::default())
        );
        let tenant = &config.tenants[0];
        assert_eq!(tenant.slug.as_str(), "hello");
        assert_eq!(
            tenant.versions[&Version::new(1, 0, 0)],
            Path::new("/etc/mctx/hello.wasm")
        );
        assert_eq!(
            tenant.versions[&Version::new(1, 2, 0)],
            Path::new("/abs/hello2.wasm")
        );
    }

    #[test]
    fn host_table_is_read() {
        let config = parse(&format!(
            "[host]\naddr = \"0.0.0.0:9000\"\nbase_domain = \"Example.TEST\"\ncpu_limit_ms = 50\nmemory_limit_mb = 16\n{ONE}"
        ))
        .unwrap();
        assert_eq!(config.host.addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.host.base_domain, "example.test");
        assert_eq!(
            (config.host.cpu_limit_ms, config.host.memory_limit_mb),
            (50, 16)
        );
    }

    #[test]
    fn auth_and_logs_tables_are_read() {
        let config = parse(&format!(
            "[auth]\nsession_secret = \"s\"\nallowed_origins = [\"https://d.example/\"]\n\
             [logs]\nmax_viewers_per_slug = 3\nidle_timeout_secs = 2\n{ONE}"
        ))
        .unwrap();
        assert_eq!(config.auth.session_secret.as_deref(), Some("s"));
        assert_eq!(config.auth.allowed_origins, ["https://d.example"]);
        assert_eq!(
            (
                config.logs.max_viewers_per_slug,
                config.logs.idle_timeout_secs
            ),
            (3, 2)
        );
        assert_eq!(config.logs.ping_interval_secs, 30);
    }

    #[test]
    fn the_cluster_table_is_optional_and_checked() {
        assert_eq!(parse(ONE).unwrap().cluster, None);
        let config = parse(&format!(
            "[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\nnode = \"host-a\"\n{ONE}"
        ))
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(
            (cluster.nats_url.expose(), cluster.node.as_deref()),
            ("nats://127.0.0.1:4222", Some("host-a"))
        );
        assert_eq!(
            cluster.viewer_lease_secs,
            ClusterSettings::DEFAULT_VIEWER_LEASE_SECS
        );
        let err = parse(&format!(
            "[cluster]\nnats_url = \"\"\nnode = \"a b\"\nviewer_lease_secs = 1\n{ONE}"
        ))
        .unwrap_err()
        .to_string();
        for problem in ["nats_url cannot be empty", "\"a b\"", "at least 3"] {
            assert!(err.contains(problem), "{problem} not in {err}");
        }
        assert!(parse(&format!("[cluster]\nnode = \"a\"\n{ONE}")).is_err());
    }

    #[test]
    fn every_problem_is_reported_with_file_and_tenant() {
        let err = parse(
            r#"
            [[tenants]]
            slug = "Bad_Slug"
            owner = "a"
            status = "active"
            versions = { "1.0.0" = "x.wasm" }
            [[tenants]]
            slug = "dup"
            owner = "a"
            status = "active"
            versions = { "1.0.0" = "x.wasm" }
            [[tenants]]
            slug = "dup"
            owner = "a"
            status = "inactive"
            versions = { "one" = "x.wasm" }
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("tenants.toml: invalid configuration"),
            "{err}"
        );
        assert!(
            err.contains(r#"tenant "Bad_Slug" ([[tenants]] #1): invalid slug"#),
            "{err}"
        );
        assert!(
            err.contains(r#"tenant "dup" ([[tenants]] #3): duplicate slug"#),
            "{err}"
        );
        assert!(err.contains(r#"version "one" is not semver"#), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = parse(&format!("{ONE}\nflavour = \"x\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tenants.toml") && err.contains("flavour"),
            "{err}"
        );
        let err = parse("[host]\nport = 1\n").unwrap_err().to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn bad_status_is_refused_and_no_tenants_is_allowed() {
        let err = parse(&ONE.replace("active", "paused"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("paused"), "{err}");
        // Tenants may all come through the deploy API.
        assert!(parse("").unwrap().tenants.is_empty());
    }
}
