//! The `[[tenants]]` tables: who a tenant is, who owns it, and its versions.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Deserialize;

use super::outbound::AllowList;
use super::retention::{Retention, TenantLogs};

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

/// Why a name is not a slug.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Inactive,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Inactive => "inactive",
        }
    }
}

/// One tenant ("server" in the contract) with its deployed versions and
/// what it may reach and use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSpec {
    pub slug: Slug,
    pub owner: String,
    pub status: Status,
    /// Version → component file (absolute, or relative to the working
    /// directory once resolved against the config file).
    pub versions: BTreeMap<Version, PathBuf>,
    /// Overrides `[host] cpu_limit_ms` for this tenant.
    pub cpu_limit_ms: Option<u64>,
    /// Overrides `[host] memory_limit_mb` for this tenant.
    pub memory_limit_mb: Option<u64>,
    /// Overrides `[host] request_timeout_ms` for this tenant.
    pub request_timeout_ms: Option<u64>,
    /// Overrides `[host] max_request_body_bytes` for this tenant.
    pub max_request_body_bytes: Option<u64>,
    /// Requests of this tenant running at once (overrides `[host]
    /// max_concurrent_per_tenant`).
    pub max_concurrent: Option<u32>,
    /// Requests waiting for one of this tenant's slots; past it they get 503
    /// at once. `None`: as many as `max_concurrent`.
    pub max_queued: Option<u32>,
    /// Overrides `[host] instance_reuse` for this tenant.
    pub instance_reuse: Option<u32>,
    /// Overrides `[host] instance_concurrent_reuse` for this tenant.
    pub instance_concurrent_reuse: Option<u32>,
    /// The tenant's key-value store, in bytes (overrides `[host]
    /// keyvalue_max_bytes`; 0: none).
    pub keyvalue_max_bytes: Option<u64>,
    /// What its store holds when it is created (`-S keyvalue-in-memory-data`,
    /// single-component mode).
    pub keyvalue_seed: BTreeMap<String, String>,
    pub outbound: OutboundSpec,
    /// Environment variables the guest sees (not secret: they are in the
    /// file).
    pub env: BTreeMap<String, String>,
    /// Secrets the guest sees as environment variables, by where their
    /// values come from; the values themselves are never in the file.
    pub secrets: BTreeMap<String, SecretSource>,
    /// Headers (lower-case name, value) set on every request before the
    /// guest sees it (`--header`, single-component mode).
    pub request_headers: Vec<(String, String)>,
    /// Host directories the guest may read, as (host path, guest path)
    /// (`--dir`, single-component mode).
    pub dirs: Vec<(PathBuf, String)>,
    /// How long its log is kept (`[tenants.logs]`, over `[host]
    /// log_retain`).
    pub logs: TenantLogs,
}

impl TenantSpec {
    /// An active tenant with the host's limits, no outbound access and no
    /// environment: what a tenant gets unless its table says otherwise.
    pub fn new(slug: Slug, owner: &str, versions: BTreeMap<Version, PathBuf>) -> Self {
        TenantSpec {
            slug,
            owner: owner.to_string(),
            status: Status::Active,
            versions,
            cpu_limit_ms: None,
            memory_limit_mb: None,
            request_timeout_ms: None,
            max_request_body_bytes: None,
            max_concurrent: None,
            max_queued: None,
            instance_reuse: None,
            instance_concurrent_reuse: None,
            keyvalue_max_bytes: None,
            keyvalue_seed: BTreeMap::new(),
            outbound: OutboundSpec::default(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            request_headers: Vec::new(),
            dirs: Vec::new(),
            logs: TenantLogs::default(),
        }
    }
}

/// Where a secret's value comes from: `{ env = "HOST_VAR" }` (the host's
/// environment) or `{ file = "path" }` (a file readable by its owner only;
/// relative to the tenants file).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// What a tenant may call over HTTP, and how much.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundSpec {
    /// `allowed_outbound_hosts`; empty: no outbound request at all.
    pub allowed: AllowList,
    /// Outbound requests one request may make (Cloudflare's 50).
    pub max_subrequests: u32,
    /// How long connecting to an upstream may take.
    pub connect_timeout_ms: u64,
    /// How long one outbound request may take, from the call to the last
    /// byte of its response body.
    pub timeout_ms: u64,
}

impl OutboundSpec {
    pub const DEFAULT_MAX_SUBREQUESTS: u32 = 50;
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
}

impl Default for OutboundSpec {
    fn default() -> Self {
        OutboundSpec {
            allowed: AllowList::default(),
            max_subrequests: Self::DEFAULT_MAX_SUBREQUESTS,
            connect_timeout_ms: Self::DEFAULT_CONNECT_TIMEOUT_MS,
            timeout_ms: Self::DEFAULT_TIMEOUT_MS,
        }
    }
}

/// A `[[tenants]]` table as written: names and versions still unchecked,
/// so that every bad one can be reported at once.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantTable {
    slug: String,
    owner: String,
    status: Status,
    versions: BTreeMap<String, PathBuf>,
    cpu_limit_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
    request_timeout_ms: Option<u64>,
    max_request_body_bytes: Option<u64>,
    max_concurrent: Option<u32>,
    max_queued: Option<u32>,
    instance_reuse: Option<u32>,
    instance_concurrent_reuse: Option<u32>,
    keyvalue_max_bytes: Option<u64>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    max_subrequests: Option<u32>,
    subrequest_connect_timeout_ms: Option<u64>,
    subrequest_timeout_ms: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, SecretSource>,
    #[serde(default)]
    logs: TenantLogs,
}

impl TenantTable {
    /// The tenant this table describes, or `None` when its slug is unusable;
    /// every problem goes to `problems`, named by `position` (1-based).
    /// Component paths resolve against `base` (the file's directory).
    pub(super) fn check(
        self,
        position: usize,
        base: &Path,
        problems: &mut Vec<String>,
    ) -> Option<TenantSpec> {
        let name = format!("tenant {:?} ([[tenants]] #{position})", self.slug);
        let slug = match Slug::parse(&self.slug) {
            Ok(slug) => slug,
            Err(e) => {
                problems.push(format!("{name}: invalid slug: {e}"));
                return None;
            }
        };
        if self.owner.trim().is_empty() {
            problems.push(format!("{name}: owner cannot be empty"));
        }
        if self.versions.is_empty() {
            problems.push(format!(
                "{name}: no versions: add versions = {{ \"1.0.0\" = \"app.wasm\" }}"
            ));
        }
        let mut versions = BTreeMap::new();
        for (version, path) in self.versions {
            match Version::parse(&version) {
                Ok(v) => {
                    versions.insert(v, base.join(path));
                }
                Err(e) => problems.push(format!(
                    "{name}: version {version:?} is not semver (MAJOR.MINOR.PATCH): {e}"
                )),
            }
        }
        for (key, value) in [
            ("cpu_limit_ms", self.cpu_limit_ms),
            ("memory_limit_mb", self.memory_limit_mb),
            (
                "subrequest_connect_timeout_ms",
                self.subrequest_connect_timeout_ms,
            ),
            ("subrequest_timeout_ms", self.subrequest_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("max_concurrent", self.max_concurrent.map(u64::from)),
            ("instance_reuse", self.instance_reuse.map(u64::from)),
            (
                "instance_concurrent_reuse",
                self.instance_concurrent_reuse.map(u64::from),
            ),
        ] {
            if value == Some(0) {
                problems.push(format!("{name}: {key} must be at least 1"));
            }
        }
        let allowed = AllowList::parse(&self.allowed_outbound_hosts).unwrap_or_else(|bad| {
            for entry in bad {
                problems.push(format!("{name}: allowed_outbound_hosts: {entry}"));
            }
            AllowList::default()
        });
        for key in self.env.keys().chain(self.secrets.keys()) {
            if key.is_empty() || key.contains(['=', '\0']) {
                problems.push(format!(
                    "{name}: {key:?} cannot be an environment variable name (empty, '=' or NUL)"
                ));
            }
        }
        for key in self
            .secrets
            .keys()
            .filter(|key| self.env.contains_key(*key))
        {
            problems.push(format!("{name}: {key:?} is both in env and in secrets"));
        }
        let secrets = self
            .secrets
            .into_iter()
            .map(|(key, source)| match source {
                SecretSource::File(path) => (key, SecretSource::File(base.join(path))),
                source => (key, source),
            })
            .collect();
        if let Some(age) = self.logs.retain {
            Retention::check(&format!("{name}: [tenants.logs] retain"), age, problems);
        }
        for (index, export) in self.logs.export.iter().enumerate() {
            export.check(
                &format!("{name}: [[tenants.logs.export]] #{}", index + 1),
                problems,
            );
        }
        let defaults = OutboundSpec::default();
        Some(TenantSpec {
            slug,
            owner: self.owner,
            status: self.status,
            versions,
            cpu_limit_ms: self.cpu_limit_ms,
            memory_limit_mb: self.memory_limit_mb,
            request_timeout_ms: self.request_timeout_ms,
            max_request_body_bytes: self.max_request_body_bytes,
            max_concurrent: self.max_concurrent,
            max_queued: self.max_queued,
            instance_reuse: self.instance_reuse,
            instance_concurrent_reuse: self.instance_concurrent_reuse,
            keyvalue_max_bytes: self.keyvalue_max_bytes,
            keyvalue_seed: BTreeMap::new(),
            outbound: OutboundSpec {
                allowed,
                max_subrequests: self.max_subrequests.unwrap_or(defaults.max_subrequests),
                connect_timeout_ms: self
                    .subrequest_connect_timeout_ms
                    .unwrap_or(defaults.connect_timeout_ms),
                timeout_ms: self.subrequest_timeout_ms.unwrap_or(defaults.timeout_ms),
            },
            env: self.env,
            secrets,
            request_headers: Vec::new(),
            dirs: Vec::new(),
            logs: self.logs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
