//! The tenants file (`tenants.toml`): parsing and validation.
//!
//! Parsing is two steps on purpose. serde reads the file into plain structs
//! (rejecting unknown keys and wrong types, with line numbers), then
//! `Config::from_raw` checks what serde cannot — slug syntax, duplicate
//! slugs, semver keys — and reports *every* problem at once, each naming the
//! file and the tenant, so a user fixes a config in one round trip.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use semver::Version;
use serde::Deserialize;

/// The contract's CPU limit per request.
pub const DEFAULT_CPU_LIMIT_MS: u64 = 10_000;
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 128;
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_BASE_DOMAIN: &str = "localhost";

/// A tenant's name: a DNS label (`^[a-z0-9](-?[a-z0-9])*$`, at most 63 chars),
/// so that `{slug}.{base_domain}` is always a valid host name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

impl Slug {
    pub const MAX_LEN: usize = 63;

    pub fn parse(name: &str) -> Result<Slug, SlugError> {
        if name.is_empty() {
            return Err(SlugError::Empty);
        }
        if name.len() > Self::MAX_LEN {
            return Err(SlugError::TooLong(name.len()));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(SlugError::BadChar(c));
        }
        if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
            return Err(SlugError::BadHyphen);
        }
        Ok(Slug(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum SlugError {
    Empty,
    TooLong(usize),
    BadChar(char),
    BadHyphen,
}

impl fmt::Display for SlugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlugError::Empty => write!(f, "a slug cannot be empty"),
            SlugError::TooLong(n) => write!(
                f,
                "a slug has at most {} characters, this one has {n}",
                Slug::MAX_LEN
            ),
            SlugError::BadChar(c) => write!(f, "a slug may only use a-z, 0-9 and '-', not {c:?}"),
            SlugError::BadHyphen => {
                write!(f, "a slug cannot start or end with '-' or contain '--'")
            }
        }
    }
}

impl std::error::Error for SlugError {}

/// Whether a tenant serves requests (the contract's "server status").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
}

/// Host-wide settings: the `[host]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSettings {
    pub addr: SocketAddr,
    pub base_domain: String,
    pub cpu_limit_ms: u64,
    pub memory_limit_mb: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            addr: DEFAULT_ADDR.parse().expect("valid default address"),
            base_domain: DEFAULT_BASE_DOMAIN.to_string(),
            cpu_limit_ms: DEFAULT_CPU_LIMIT_MS,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
        }
    }
}

/// One tenant ("server" in the contract) with its deployed versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpec {
    pub slug: Slug,
    pub owner: String,
    pub status: Status,
    /// Version → component file (absolute, or relative to the working
    /// directory once resolved against the config file).
    pub versions: BTreeMap<Version, PathBuf>,
}

/// Who may watch logs: the `[auth]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// Signs session tokens; `MCTX_SESSION_SECRET` takes precedence.
    pub session_secret: Option<String>,
    /// Browser origins (besides the control plane's own) allowed to open
    /// log streams, e.g. `https://dashboard.example.com`.
    pub allowed_origins: Vec<String>,
}

/// Log streaming limits: the `[logs]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Viewers per slug (the contract's 10).
    pub max_viewers_per_slug: usize,
    /// A viewer with no client traffic (pongs count) this long is closed.
    pub idle_timeout_secs: u64,
    /// How often viewers are pinged.
    pub ping_interval_secs: u64,
    /// Entries a viewer may have waiting; past that it misses entries and
    /// is told how many.
    pub viewer_queue_entries: usize,
    /// A viewer still missing entries after this long is closed.
    pub slow_viewer_grace_secs: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            max_viewers_per_slug: 10,
            idle_timeout_secs: 300,
            ping_interval_secs: 30,
            viewer_queue_entries: 25_600,
            slow_viewer_grace_secs: 10,
        }
    }
}

/// Several hosts sharing log hubs over NATS: the `[cluster]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `nats://host:port` of the NATS server (with JetStream) the hosts share.
    pub nats_url: String,
    /// This host's name in entries (`node`) and viewer leases; unique per
    /// host. `None`: `{hostname}-{pid}`.
    pub node: Option<String>,
    /// How long a host's claim on viewer slots lasts without renewal: a
    /// crashed host's viewers stop counting after this long.
    pub viewer_lease_secs: u64,
}

impl ClusterSettings {
    pub const DEFAULT_VIEWER_LEASE_SECS: u64 = 15;

    /// Settings for `nats_url` with every other value defaulted.
    pub fn new(nats_url: String) -> Self {
        ClusterSettings {
            nats_url,
            node: None,
            viewer_lease_secs: Self::DEFAULT_VIEWER_LEASE_SECS,
        }
    }

    /// Problems with a node name, if any (it goes into JSON and log lines,
    /// so it is kept to a readable, unambiguous alphabet).
    pub fn check_node(node: &str) -> Result<(), String> {
        let valid = !node.is_empty()
            && node.len() <= 64
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            Ok(())
        } else {
            Err(format!(
                "node name {node:?} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'"
            ))
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where the configuration came from, for error messages.
    pub source: String,
    pub host: HostSettings,
    pub auth: AuthSettings,
    pub logs: LogSettings,
    /// `None`: one host, hubs in process (the default).
    pub cluster: Option<ClusterSettings>,
    pub tenants: Vec<TenantSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    logs: RawLogs,
    cluster: Option<RawCluster>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nats_url: String,
    node: Option<String>,
    viewer_lease_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_secret: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_viewers_per_slug: Option<usize>,
    idle_timeout_secs: Option<u64>,
    ping_interval_secs: Option<u64>,
    viewer_queue_entries: Option<usize>,
    slow_viewer_grace_secs: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    addr: Option<SocketAddr>,
    base_domain: Option<String>,
    cpu_limit_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    slug: String,
    owner: String,
    status: Status,
    versions: BTreeMap<String, PathBuf>,
}

impl Config {
    /// Reads and validates a tenants file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base)
    }

    /// Parses a tenants file's text; relative component paths resolve
    /// against `base` (the config file's directory).
    pub fn parse(text: &str, source: &str, base: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        Config::from_raw(raw, source, base)
    }

    fn from_raw(raw: RawConfig, source: &str, base: &Path) -> Result<Config> {
        let mut problems = Vec::new();
        let defaults = HostSettings::default();
        let host = HostSettings {
            addr: raw.host.addr.unwrap_or(defaults.addr),
            base_domain: raw
                .host
                .base_domain
                .unwrap_or(defaults.base_domain)
                .to_ascii_lowercase(),
            cpu_limit_ms: raw.host.cpu_limit_ms.unwrap_or(defaults.cpu_limit_ms),
            memory_limit_mb: raw.host.memory_limit_mb.unwrap_or(defaults.memory_limit_mb),
        };
        if host.base_domain.is_empty() || host.base_domain.starts_with('.') {
            problems.push(format!(
                "[host] base_domain {:?} is not a domain name",
                host.base_domain
            ));
        }
        if host.cpu_limit_ms == 0 {
            problems.push("[host] cpu_limit_ms must be at least 1".to_string());
        }
        if host.memory_limit_mb == 0 {
            problems.push("[host] memory_limit_mb must be at least 1".to_string());
        }
        let log_defaults = LogSettings::default();
        let logs = LogSettings {
            max_viewers_per_slug: raw
                .logs
                .max_viewers_per_slug
                .unwrap_or(log_defaults.max_viewers_per_slug),
            idle_timeout_secs: raw
                .logs
                .idle_timeout_secs
                .unwrap_or(log_defaults.idle_timeout_secs),
            ping_interval_secs: raw
                .logs
                .ping_interval_secs
                .unwrap_or(log_defaults.ping_interval_secs),
            viewer_queue_entries: raw
                .logs
                .viewer_queue_entries
                .unwrap_or(log_defaults.viewer_queue_entries)
                .max(1),
            slow_viewer_grace_secs: raw
                .logs
                .slow_viewer_grace_secs
                .unwrap_or(log_defaults.slow_viewer_grace_secs),
        };
        if logs.idle_timeout_secs == 0 || logs.ping_interval_secs == 0 {
            problems.push(
                "[logs] idle_timeout_secs and ping_interval_secs must be at least 1".to_string(),
            );
        }
        let auth = AuthSettings {
            session_secret: raw.auth.session_secret,
            allowed_origins: raw
                .auth
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
        };
        let cluster = raw.cluster.map(|raw| ClusterSettings {
            nats_url: raw.nats_url,
            node: raw.node,
            viewer_lease_secs: raw
                .viewer_lease_secs
                .unwrap_or(ClusterSettings::DEFAULT_VIEWER_LEASE_SECS),
        });
        if let Some(cluster) = &cluster {
            if cluster.nats_url.trim().is_empty() {
                problems.push("[cluster] nats_url cannot be empty".to_string());
            }
            if let Some(Err(e)) = cluster.node.as_deref().map(ClusterSettings::check_node) {
                problems.push(format!("[cluster] {e}"));
            }
            if cluster.viewer_lease_secs < 3 {
                problems.push("[cluster] viewer_lease_secs must be at least 3".to_string());
            }
        }
        if raw.tenants.is_empty() {
            problems.push("no tenants: add at least one [[tenants]] table".to_string());
        }

        let mut seen = HashSet::new();
        let mut tenants = Vec::new();
        for (index, tenant) in raw.tenants.into_iter().enumerate() {
            let name = format!("tenant {:?} ([[tenants]] #{})", tenant.slug, index + 1);
            let slug = match Slug::parse(&tenant.slug) {
                Ok(slug) => slug,
                Err(e) => {
                    problems.push(format!("{name}: invalid slug: {e}"));
                    continue;
                }
            };
            if !seen.insert(slug.clone()) {
                problems.push(format!(
                    "{name}: duplicate slug: another tenant already uses {slug:?}"
                ));
            }
            if tenant.owner.trim().is_empty() {
                problems.push(format!("{name}: owner cannot be empty"));
            }
            if tenant.versions.is_empty() {
                problems.push(format!(
                    "{name}: no versions: add versions = {{ \"1.0.0\" = \"app.wasm\" }}"
                ));
            }
            let mut versions = BTreeMap::new();
            for (version, path) in tenant.versions {
                match Version::parse(&version) {
                    Ok(v) => {
                        versions.insert(v, base.join(path));
                    }
                    Err(e) => problems.push(format!(
                        "{name}: version {version:?} is not semver (MAJOR.MINOR.PATCH): {e}"
                    )),
                }
            }
            tenants.push(TenantSpec {
                slug,
                owner: tenant.owner,
                status: tenant.status,
                versions,
            });
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
            cluster,
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
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
            (cluster.nats_url.as_str(), cluster.node.as_deref()),
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
    fn slugs_follow_dns_label_rules() {
        for good in ["a", "a1", "my-server", "0", &"a".repeat(63)] {
            assert!(Slug::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "A",
            "a.b",
            "a_b",
            "ü",
            "../x",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
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
    fn bad_status_and_empty_config_are_refused() {
        let err = parse(&ONE.replace("active", "paused"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("paused"), "{err}");
        assert!(parse("").unwrap_err().to_string().contains("no tenants"));
    }
}
