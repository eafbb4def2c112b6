//! The settings tables of the tenants file, one struct each, read straight
//! from TOML (`#[serde(default, deny_unknown_fields)]`: a missing key takes
//! its default, an unknown one is refused with its name and line) and then
//! checked by [`check`](HostSettings::check) for what serde cannot see.
//! Each struct is handed whole to the part of the host that uses it.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::CredentialUrl;

/// The contract's CPU limit per request.
pub const DEFAULT_CPU_LIMIT_MS: u64 = 10_000;
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 128;
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_BASE_DOMAIN: &str = "localhost";

/// The `[host]` table: where the host listens and what a request may use.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSettings {
    pub addr: SocketAddr,
    /// Tenants live at `{slug}.{base_domain}` (lower case once checked).
    pub base_domain: String,
    /// CPU time a request may use.
    pub cpu_limit_ms: u64,
    /// Linear memory a request may use.
    pub memory_limit_mb: u64,
    /// Requests running at once; more wait for a slot. Also sizes the
    /// instance pool.
    pub max_concurrent_requests: u32,
    /// On SIGTERM or Ctrl-C, how long requests in flight and log viewers get
    /// to finish before the host exits.
    pub shutdown_grace_secs: u64,
    /// The time a client has to send a request head, from when its
    /// connection is ready for one (after connecting, after each response):
    /// half-open and idle keep-alive connections are closed after it.
    pub header_read_timeout_secs: u64,
    /// Versions one owner may have deployed through the API, across their
    /// servers.
    pub max_versions_per_owner: usize,
    /// Bytes of components one owner may have stored in `state_dir`.
    pub max_bytes_per_owner: u64,
    /// How long a request body (to a tenant, the dashboard or the API) may
    /// send nothing before its read fails and its connection is closed.
    pub body_read_timeout_secs: u64,
    /// Connections open at once; `None`: half the process's file limit
    /// (raised to its hard limit at start), at most 10,000.
    pub max_connections: Option<usize>,
    /// Connections one client address may hold.
    pub max_connections_per_ip: usize,
    /// The most bytes a request head may take (431 past it).
    pub max_header_bytes: usize,
    /// A request's wall-clock limit: past it the guest is stopped and the
    /// client gets 504 (a tenant may set its own).
    pub request_timeout_ms: u64,
    /// The largest request body a tenant accepts: 413 past it, checked as
    /// it streams (a tenant may set its own).
    pub max_request_body_bytes: u64,
    /// Requests one tenant may run at once; `None`: the whole pool with one
    /// tenant, else half of it, so no tenant can take every instance (a
    /// tenant may set its own).
    pub max_concurrent_per_tenant: Option<u32>,
    /// Requests one instance serves, one after another, before it is
    /// dropped (`wasmtime serve --max-instance-reuse-count`); 1: a fresh
    /// instance for every request. A tenant may set its own.
    pub instance_reuse: u32,
    /// Requests one WASIp3 instance serves at once (`wasmtime serve
    /// --max-instance-concurrent-reuse-count`), within `instance_reuse` in
    /// all; 1: one at a time. WASIp2 instances always serve one at a time.
    /// A tenant may set its own.
    pub instance_concurrent_reuse: u32,
    /// How long an instance kept for reuse may wait for its next request
    /// before it is dropped (`--idle-instance-timeout`).
    pub idle_instance_timeout_ms: u64,
    /// The key-value store every tenant gets, in bytes (keys, values and 64
    /// a key); 0: none. A tenant may set its own (`keyvalue_max_bytes`).
    pub keyvalue_max_bytes: u64,
    /// Where servers deployed through the API live (components and the
    /// server list); `None`: `$XDG_DATA_HOME/mctx-host`, else
    /// `~/.local/share/mctx-host`.
    pub state_dir: Option<PathBuf>,
    /// How long a deleted server's slug stays reserved for its last owner.
    pub slug_cooling_off_days: u32,
    /// The largest component the deploy API accepts (413 past it).
    pub max_component_bytes: u64,
    /// PEM certificate chain (leaf first) and private key: with both, the
    /// host serves https (and h2) instead of http. Relative to the file.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `Strict-Transport-Security` on every response over TLS.
    pub hsts: bool,
    /// A plain-HTTP listener that answers every request with a redirect to
    /// the https origin (never a tenant, never a token).
    pub http_redirect_addr: Option<SocketAddr>,
    /// How long every tenant's log entries are kept on disk (`"24h"`,
    /// `"7d"`; `"0"`: not at all, the default); a tenant may set its own
    /// (`[tenants.logs] retain`). Needs `state_dir`.
    #[serde(deserialize_with = "super::retention::duration")]
    pub log_retain: Duration,
    /// Bytes of log entries kept per tenant, oldest dropped first (a
    /// tenant may set its own, `[tenants.logs] max_bytes`).
    pub log_retain_max_bytes: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            addr: DEFAULT_ADDR.parse().expect("valid default address"),
            base_domain: DEFAULT_BASE_DOMAIN.to_string(),
            cpu_limit_ms: DEFAULT_CPU_LIMIT_MS,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            max_concurrent_requests: 1000,
            shutdown_grace_secs: 10,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            max_versions_per_owner: 200,
            max_bytes_per_owner: 2 << 30,
            max_connections: None,
            max_connections_per_ip: 256,
            max_header_bytes: 64 * 1024,
            request_timeout_ms: 60_000,
            max_request_body_bytes: 16 << 20,
            max_concurrent_per_tenant: None,
            instance_reuse: 1,
            instance_concurrent_reuse: 1,
            idle_instance_timeout_ms: 1000,
            keyvalue_max_bytes: 0,
            state_dir: None,
            slug_cooling_off_days: 7,
            max_component_bytes: 64 << 20,
            tls_cert: None,
            tls_key: None,
            hsts: false,
            http_redirect_addr: None,
            log_retain: Duration::ZERO,
            log_retain_max_bytes: super::retention::DEFAULT_RETAIN_MAX_BYTES,
        }
    }
}

impl HostSettings {
    /// Normalises what has one spelling and reports what cannot work.
    pub(super) fn check(&mut self, problems: &mut Vec<String>) {
        self.base_domain = self.base_domain.to_ascii_lowercase();
        if self.base_domain.is_empty() || self.base_domain.starts_with('.') {
            problems.push(format!(
                "[host] base_domain {:?} is not a domain name",
                self.base_domain
            ));
        }
        if self.instance_reuse == 0 {
            problems.push(
                "[host] instance_reuse must be at least 1 (1: a fresh instance per request)"
                    .to_string(),
            );
        }
        if self.instance_concurrent_reuse == 0 {
            problems.push(
                "[host] instance_concurrent_reuse must be at least 1 (1: one request at a time)"
                    .to_string(),
            );
        }
        if self.cpu_limit_ms == 0 {
            problems.push("[host] cpu_limit_ms must be at least 1".to_string());
        }
        if self.memory_limit_mb == 0 {
            problems.push("[host] memory_limit_mb must be at least 1".to_string());
        }
        for (key, value) in [
            (
                "max_concurrent_requests",
                u64::from(self.max_concurrent_requests),
            ),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_read_timeout_secs", self.body_read_timeout_secs),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("request_timeout_ms", self.request_timeout_ms),
            (
                "max_connections",
                self.max_connections.map_or(1, |n| n as u64),
            ),
            (
                "max_concurrent_per_tenant",
                self.max_concurrent_per_tenant.map_or(1, u64::from),
            ),
        ] {
            if value == 0 {
                problems.push(format!("[host] {key} must be at least 1"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems
                .push("[host] tls_cert and tls_key go together: set both or neither".to_string());
        }
        if self.max_component_bytes < 8 {
            problems.push("[host] max_component_bytes must be at least 8".to_string());
        }
        if self.max_header_bytes < 8192 {
            problems.push("[host] max_header_bytes must be at least 8192".to_string());
        }
        super::Retention::check("[host] log_retain", self.log_retain, problems);
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_timeout_secs)
    }

    /// Resolves the TLS files against the tenants file's directory.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        relative_to(base, [&mut self.tls_cert, &mut self.tls_key]);
    }

    pub fn slug_cooling_off(&self) -> Duration {
        Duration::from_secs(u64::from(self.slug_cooling_off_days) * 86_400)
    }
}

/// The `[auth]` table: who may watch logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Signs session tokens; `MCTX_SESSION_SECRET` takes precedence.
    pub session_secret: Option<String>,
    /// Browser origins (besides the control plane's own) allowed to open
    /// log streams, e.g. `https://dashboard.example.com`.
    pub allowed_origins: Vec<String>,
    /// User ids that may create servers and deploy to, change or delete
    /// any server (owners may do the last three to their own).
    pub admins: Vec<String>,
}

impl AuthSettings {
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|admin| admin == user)
    }

    pub(super) fn check(&mut self) {
        for origin in &mut self.allowed_origins {
            *origin = origin.trim_end_matches('/').to_string();
        }
    }
}

/// Never prints the secret: configurations end up in debug logs.
impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "session_secret",
                &self.session_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("admins", &self.admins)
            .finish()
    }
}

/// The `[metrics]` table: where Prometheus scrapes the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// `GET /metrics` on this address (never the tenant-facing one); `None`:
    /// no metrics listener.
    pub addr: Option<SocketAddr>,
}

/// The `[logs]` table: log streaming limits, read by the hubs (viewers,
/// queues) and by the log-stream endpoint (timers).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Viewers per slug (the contract's 10).
    pub max_viewers_per_slug: usize,
    /// A viewer with no client traffic (pongs count) this long is closed.
    pub idle_timeout_secs: u64,
    /// How often viewers are pinged.
    pub ping_interval_secs: u64,
    /// Entries a viewer may have waiting before it starts missing some.
    /// Counted in entries, not frames: a filtered viewer's frames can be
    /// small, and it should get as much slack as any other.
    pub viewer_queue_entries: usize,
    /// Bytes of frames a viewer may have waiting, whichever of the two
    /// limits comes first: 25,600 entries of 10 KB each would be 256 MB.
    pub viewer_queue_bytes: usize,
    /// A viewer still missing entries after this long is closed; so is one
    /// whose socket takes no bytes for this long (it does not read).
    pub slow_viewer_grace_secs: u64,
    /// Destinations every tenant's entries are sent to (`[[logs.export]]`;
    /// a tenant may add its own, `[[tenants.logs.export]]`).
    pub export: Vec<super::ExportTable>,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            max_viewers_per_slug: 10,
            idle_timeout_secs: 300,
            ping_interval_secs: 30,
            viewer_queue_entries: 25_600,
            viewer_queue_bytes: 8 << 20,
            slow_viewer_grace_secs: 10,
            export: Vec::new(),
        }
    }
}

impl LogSettings {
    pub(super) fn check(&mut self, problems: &mut Vec<String>) {
        // A queue of 0 could never hold a frame; 1 already means "one frame".
        self.viewer_queue_entries = self.viewer_queue_entries.max(1);
        if self.idle_timeout_secs == 0 || self.ping_interval_secs == 0 {
            problems.push(
                "[logs] idle_timeout_secs and ping_interval_secs must be at least 1".to_string(),
            );
        }
        for (index, export) in self.export.iter().enumerate() {
            export.check(&format!("[[logs.export]] #{}", index + 1), problems);
        }
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    pub fn slow_viewer_grace(&self) -> Duration {
        Duration::from_secs(self.slow_viewer_grace_secs)
    }
}

/// The `[cluster]` table: several hosts sharing log hubs over NATS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// `nats://host:port` of the NATS server (with JetStream) the hosts
    /// share; `tls://` for TLS. Userinfo in it is used, never shown.
    pub nats_url: CredentialUrl,
    /// A NATS credentials file (`.creds`: a user JWT and its NKey seed), as
    /// `nsc` writes them; must be mode 600.
    #[serde(default)]
    pub nats_creds: Option<PathBuf>,
    /// A file holding a NATS token; must be mode 600.
    #[serde(default)]
    pub nats_token_file: Option<PathBuf>,
    /// CA certificates (PEM) that the NATS server's certificate must chain
    /// to; with it, TLS is required.
    #[serde(default)]
    pub nats_tls_ca: Option<PathBuf>,
    /// This host's client certificate (PEM), for servers that verify
    /// clients; with `nats_tls_key` (mode 600).
    #[serde(default)]
    pub nats_tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub nats_tls_key: Option<PathBuf>,
    /// This host's name in entries (`node`) and viewer leases; unique per
    /// host. `None`: `{hostname}-{pid}`.
    #[serde(default)]
    pub node: Option<String>,
    /// How long a host's claim on viewer slots lasts without renewal: a
    /// crashed host's viewers stop counting after this long.
    #[serde(default = "ClusterSettings::default_viewer_lease_secs")]
    pub viewer_lease_secs: u64,
}

impl ClusterSettings {
    pub const DEFAULT_VIEWER_LEASE_SECS: u64 = 15;

    fn default_viewer_lease_secs() -> u64 {
        Self::DEFAULT_VIEWER_LEASE_SECS
    }

    /// Settings for `nats_url` with every other value defaulted.
    pub fn new(nats_url: String) -> Self {
        ClusterSettings {
            nats_url: CredentialUrl::new(nats_url),
            nats_creds: None,
            nats_token_file: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            node: None,
            viewer_lease_secs: Self::DEFAULT_VIEWER_LEASE_SECS,
        }
    }

    /// Problems with these settings, each a line for the operator.
    pub fn check(&self, problems: &mut Vec<String>) {
        if self.nats_url.is_blank() {
            problems.push("[cluster] nats_url cannot be empty".to_string());
        }
        if self.nats_creds.is_some() && self.nats_token_file.is_some() {
            problems.push("[cluster] nats_creds and nats_token_file: choose one".to_string());
        }
        if self.nats_tls_cert.is_some() != self.nats_tls_key.is_some() {
            problems.push("[cluster] nats_tls_cert and nats_tls_key go together".to_string());
        }
        if let Some(Err(e)) = self.node.as_deref().map(Self::check_node) {
            problems.push(format!("[cluster] {e}"));
        }
        if self.viewer_lease_secs < 3 {
            problems.push("[cluster] viewer_lease_secs must be at least 3".to_string());
        }
    }

    /// Makes the files' paths relative to the tenants file's folder.
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        relative_to(base, self.nats_files());
    }

    /// The files this host proves itself to NATS with, in the order of
    /// their `--nats-*` flags: creds, token, TLS CA, cert, key.
    pub fn nats_files(&mut self) -> [&mut Option<PathBuf>; 5] {
        [
            &mut self.nats_creds,
            &mut self.nats_token_file,
            &mut self.nats_tls_ca,
            &mut self.nats_tls_cert,
            &mut self.nats_tls_key,
        ]
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

    pub fn viewer_lease(&self) -> Duration {
        Duration::from_secs(self.viewer_lease_secs)
    }
}

/// Paths given relative to the tenants file, made relative to `base` (its
/// folder); `base.join` keeps an absolute path as it is.
fn relative_to<'a>(base: &Path, paths: impl IntoIterator<Item = &'a mut Option<PathBuf>>) {
    for path in paths.into_iter().flatten() {
        *path = base.join(&*path);
    }
}
