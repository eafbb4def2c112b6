//! The host's configuration: the tenants file, and how the command line
//! settles over it.
//!
//! Reading is two steps on purpose. serde reads each table straight into
//! the settings struct of the part that uses it (`tables.rs`; unknown keys
//! and wrong types are refused with line numbers) — that is a `Draft`;
//! then the command line's settings go over it (`settle.rs`), and only then
//! is it checked for what serde cannot see — slug syntax, duplicate slugs,
//! semver keys, values out of range — reporting *every* problem at once,
//! each naming the file and the tenant (or the flag), so a user fixes a
//! config in one round trip. Each rule is written once, in the check of the
//! table it belongs to, and holds whatever gave the value.

mod addresses;
mod credential_url;
mod export;
mod outbound;
mod retention;
mod settle;
mod tables;
mod tenant;

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;

pub use addresses::{is_own_address, is_public};
pub use credential_url::{CredentialUrl, Userinfo, without_userinfo};
pub use export::{DEFAULT_MAX_QUEUED, ExportTable, HeaderValueSource};
pub use outbound::{AllowList, Allowed, Scheme, Target};
pub use retention::{Retention, TenantLogs, parse_duration};
pub use settle::{Base, Layers, Overrides, TenantExtras};
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

/// The settings as read, not yet checked: every table but the tenants is
/// in its final type, with paths resolved against the file's folder.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Draft {
    host: HostSettings,
    auth: AuthSettings,
    logs: LogSettings,
    metrics: MetricsSettings,
    cluster: Option<ClusterSettings>,
    tenants: Vec<tenant::TenantTable>,
}

impl Config {
    /// Reads and validates a tenants file, with nothing over it.
    pub fn load(path: &Path) -> Result<Config> {
        Layers::file(path.to_path_buf()).settle()
    }

    /// Parses a tenants file's text; relative paths resolve against `dir`
    /// (the file's folder).
    pub fn parse(text: &str, source: &str, dir: &Path) -> Result<Config> {
        let mut problems = Vec::new();
        let config = Draft::read(text, source, dir)?.check(source, dir, &mut problems);
        settle::refuse_if_any_in(source, problems)?;
        Ok(config)
    }
}

impl Draft {
    /// What serde makes of the text; relative paths resolve against `dir`.
    fn read(text: &str, source: &str, dir: &Path) -> Result<Draft> {
        let mut draft: Draft =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        draft.host.resolve_paths(dir);
        if let Some(cluster) = &mut draft.cluster {
            cluster.resolve_paths(dir);
        }
        Ok(draft)
    }

    /// Every table's checks; problems go to `problems`, and the
    /// configuration is only to be used if there are none.
    fn check(self, source: &str, dir: &Path, problems: &mut Vec<String>) -> Config {
        let Draft {
            mut host,
            mut auth,
            mut logs,
            metrics,
            cluster,
            tenants: tables,
        } = self;
        host.check(problems);
        auth.check();
        logs.check(problems);
        if let Some(cluster) = &cluster {
            cluster.check(problems);
        }
        let mut seen = HashSet::new();
        let mut tenants = Vec::new();
        for (index, table) in tables.into_iter().enumerate() {
            let Some(tenant) = table.check(index + 1, dir, problems) else {
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
        Config {
            source: source.to_string(),
            host,
            auth,
            logs,
            metrics,
            cluster,
            tenants,
        }
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

    #[test]
    fn retention_is_off_unless_granted() {
        let config = parse(ONE).unwrap();
        assert_eq!(config.host.log_retain, std::time::Duration::ZERO);
        assert_eq!(config.tenants[0].logs, TenantLogs::default());
        let kept = parse(&format!(
            "[host]\nlog_retain = \"7d\"\n{ONE}[tenants.logs]\nretain = \"24h\"\nmax_bytes = 4096\n"
        ))
        .unwrap();
        assert_eq!(kept.host.log_retain.as_secs(), 7 * 86_400);
        let logs = &kept.tenants[0].logs;
        assert_eq!(
            (logs.retain.map(|d| d.as_secs()), logs.max_bytes),
            (Some(86_400), Some(4096))
        );
        let err = parse(&format!("{ONE}[tenants.logs]\nretain = \"a while\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"24h\""), "{err}");
        let err = parse(&format!("{ONE}[tenants.logs]\nretain = \"90d\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("31 days"), "{err}");
    }
}
