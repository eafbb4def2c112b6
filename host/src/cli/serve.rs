//! `mctx-host serve`: its flags (ours and `wasmtime serve`'s), how they and
//! the tenants file become an [`AppConfig`], the start-up messages, and
//! what stops the host.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use semver::Version;
use tokio::net::TcpListener;

use super::session_secret_from_env;
use super::wasmtime;
use crate::app::{App, AppConfig};
use crate::base::auth::Sessions;
use crate::base::config::{ClusterSettings, Config, CredentialUrl, HostSettings, Slug, TenantSpec};
use crate::edge::routing::{RoutingMode, SINGLE_MODE_CONTROL_PREFIX};
use crate::logs::console::GuestLogFormat;
use crate::run::artifacts::ArtifactCache;
use crate::run::pool::PoolOptions;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A wasi:http/proxy component (built for wasm32-wasip2) to serve alone.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    component: Option<PathBuf>,

    /// A tenants file (TOML) describing many tenants; see examples/tenants.toml.
    /// Not wasmtime's `--config` (a file of -O/-C/-W/-S settings): give
    /// those as flags.
    #[arg(long, short)]
    config: Option<PathBuf>,

    /// Address to listen on [default: the config's `[host] addr`, else 127.0.0.1:8080].
    /// Port 0 picks a free port (printed at start).
    #[arg(long)]
    addr: Option<SocketAddr>,

    /// The tenant name of the component in single-component mode (logs, X-Tenant-Slug).
    #[arg(long, default_value = "default")]
    slug: String,

    /// CPU time a request may use, in ms [default: config, else 10000].
    #[arg(long)]
    cpu_limit_ms: Option<u64>,

    /// Linear memory a request may use, in MiB [default: config, else 128].
    #[arg(long)]
    memory_limit_mb: Option<u64>,

    /// Requests run at once; more wait for a slot. Also sizes the instance
    /// pool [default: config, else 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_requests: Option<u32>,

    /// Seconds a client has to send a request head (also closes idle
    /// keep-alive connections) [default: config, else 10].
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_secs: Option<u64>,

    /// Connections open at once [default: config, else half the open-file
    /// limit, at most 10,000].
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: Option<usize>,

    /// Connections one client address may hold [default: config, else 256].
    #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections_per_ip: Option<usize>,

    /// Wall-clock time a request may take, in ms: past it the guest is
    /// stopped and the client gets 504 [default: config, else 60000].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: Option<u64>,

    /// The largest request body, in bytes (413 past it) [default: config,
    /// else 16 MiB].
    #[arg(long, value_name = "BYTES")]
    max_request_body_bytes: Option<u64>,

    /// Where compiled components are cached [default: $XDG_CACHE_HOME/mctx-host or ~/.cache/mctx-host].
    #[arg(long, env = "MCTX_CACHE_DIR")]
    cache_dir: Option<PathBuf>,

    /// Serve https (and HTTP/2) with this PEM certificate chain, leaf first
    /// [default: the config's `[host] tls_cert`]. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert [default: `[host] tls_key`].
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics, on this listener only
    /// [default: the config's `[metrics] addr`; none: no metrics].
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,

    /// Where servers deployed through the API live: their components and
    /// the server list [default: the config's `[host] state_dir`, else
    /// $XDG_DATA_HOME/mctx-host or ~/.local/share/mctx-host]. Multi-tenant
    /// mode only; one host per directory.
    #[arg(long, env = "MCTX_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Reload the tenants file when it or one of its components changes on
    /// disk, and the TLS certificate when its files do (as SIGHUP does; a
    /// broken file is reported and changes nothing).
    #[arg(long, requires = "config")]
    watch: bool,

    /// Compile every component at start instead of using the cache.
    #[arg(long)]
    no_cache: bool,

    /// Allocate instances on demand instead of from a preallocated pool.
    #[arg(long)]
    no_pooling: bool,

    /// Show guest output on this terminal [default: pretty with one component, off with a config].
    #[arg(long, value_enum)]
    guest_logs: Option<GuestLogFormat>,

    /// On SIGTERM or Ctrl-C, how long requests in flight and log viewers get
    /// to finish before the host exits, in s [default: config, else 10].
    #[arg(long)]
    shutdown_grace_secs: Option<u64>,

    /// Share log hubs with other hosts through this NATS server (JetStream
    /// enabled: `nats-server -js`), e.g. nats://127.0.0.1:4222
    /// [default: the config's `[cluster] nats_url`; none: hubs stay in this process].
    #[arg(long, env = "MCTX_NATS_URL", value_name = "URL")]
    nats_url: Option<String>,

    /// A NATS credentials file (`.creds`, mode 600) for the cluster
    /// [default: the config's `[cluster] nats_creds`].
    #[arg(long, env = "MCTX_NATS_CREDS", value_name = "FILE")]
    nats_creds: Option<PathBuf>,

    /// A file (mode 600) holding a NATS token for the cluster [default: the
    /// config's `[cluster] nats_token_file`].
    #[arg(long, env = "MCTX_NATS_TOKEN_FILE", value_name = "FILE")]
    nats_token_file: Option<PathBuf>,

    /// CA certificates (PEM) the NATS server's certificate must chain to;
    /// TLS is then required [default: `[cluster] nats_tls_ca`].
    #[arg(long, value_name = "FILE")]
    nats_tls_ca: Option<PathBuf>,

    /// This host's client certificate (PEM) for NATS, with --nats-tls-key
    /// [default: `[cluster] nats_tls_cert`].
    #[arg(long, value_name = "FILE", requires = "nats_tls_key")]
    nats_tls_cert: Option<PathBuf>,

    /// The client certificate's key (PEM, mode 600) [default: `[cluster] nats_tls_key`].
    #[arg(long, value_name = "FILE", requires = "nats_tls_cert")]
    nats_tls_key: Option<PathBuf>,

    /// This host's name on the cluster (`node` in entries) [default: the
    /// config's `[cluster] node`, else {hostname}-{pid}].
    #[arg(long, env = "MCTX_NODE", value_name = "NAME")]
    node: Option<String>,

    /// Development mode: without a configured session secret, generate one
    /// and print a token for each owner (single-component mode always does).
    #[arg(long)]
    dev: bool,

    /// `wasmtime serve`'s own flags, accepted with its syntax.
    #[command(
        flatten,
        next_help_heading = "Flags of `wasmtime serve` (honoured, or refused with the reason)"
    )]
    wasmtime: wasmtime::WasmtimeFlags,
}

impl ServeArgs {
    /// The configuration this invocation describes: the config file, or a
    /// one-tenant configuration around the component; and what `wasmtime
    /// serve`'s flags asked for beyond it.
    fn config(&self) -> Result<(Config, RoutingMode, wasmtime::Asked)> {
        let mut config = match (&self.config, &self.component) {
            (Some(path), _) => Config::load(path)?,
            (None, Some(component)) => {
                let slug = Slug::parse(&self.slug)
                    .map_err(|e| anyhow::anyhow!("--slug {:?}: {e}", self.slug))?;
                let spec = TenantSpec::new(
                    slug,
                    "local",
                    [(Version::new(0, 0, 0), component.clone())].into(),
                );
                Config {
                    source: "command line".into(),
                    host: HostSettings::default(),
                    auth: Default::default(),
                    logs: Default::default(),
                    metrics: Default::default(),
                    cluster: None,
                    tenants: vec![spec],
                }
            }
            (None, None) => unreachable!("clap requires a component or --config"),
        };
        if let Some(addr) = self.addr {
            config.host.addr = addr;
        }
        if self.metrics_addr.is_some() {
            config.metrics.addr = self.metrics_addr;
        }
        if self.tls_cert.is_some() {
            config.host.tls_cert = self.tls_cert.clone();
            config.host.tls_key = self.tls_key.clone();
        }
        if let Some(ms) = self.cpu_limit_ms {
            config.host.cpu_limit_ms = ms;
        }
        if let Some(mb) = self.memory_limit_mb {
            config.host.memory_limit_mb = mb;
        }
        // Zero is refused by clap for the flags where it cannot work.
        let host = &mut config.host;
        if let Some(n) = self.max_concurrent_requests {
            host.max_concurrent_requests = n;
        }
        if let Some(secs) = self.shutdown_grace_secs {
            host.shutdown_grace_secs = secs;
        }
        if let Some(secs) = self.header_read_timeout_secs {
            host.header_read_timeout_secs = secs;
        }
        if let Some(ms) = self.request_timeout_ms {
            host.request_timeout_ms = ms;
        }
        if let Some(bytes) = self.max_request_body_bytes {
            host.max_request_body_bytes = bytes;
        }
        if self.max_connections.is_some() {
            host.max_connections = self.max_connections;
        }
        if let Some(n) = self.max_connections_per_ip {
            host.max_connections_per_ip = n;
        }
        if let Some(url) = &self.nats_url {
            let cluster = config
                .cluster
                .get_or_insert_with(|| ClusterSettings::new(url.clone()));
            cluster.nats_url = CredentialUrl::new(url.clone());
        }
        // In the order of `ClusterSettings::nats_files`.
        let nats_files = [
            (&self.nats_creds, "--nats-creds"),
            (&self.nats_token_file, "--nats-token-file"),
            (&self.nats_tls_ca, "--nats-tls-ca"),
            (&self.nats_tls_cert, "--nats-tls-cert"),
            (&self.nats_tls_key, "--nats-tls-key"),
        ];
        if let Some((_, flag)) = nats_files.iter().find(|(file, _)| file.is_some()) {
            let Some(cluster) = &mut config.cluster else {
                anyhow::bail!("{flag} is for a cluster: add --nats-url or a [cluster] table");
            };
            for ((given, _), setting) in nats_files.iter().zip(cluster.nats_files()) {
                if given.is_some() {
                    setting.clone_from(given);
                }
            }
            let mut problems = Vec::new();
            cluster.check(&mut problems);
            if !problems.is_empty() {
                anyhow::bail!("{}", problems.join("; "));
            }
        }
        if let Some(node) = &self.node {
            ClusterSettings::check_node(node).map_err(|e| anyhow::anyhow!("--node: {e}"))?;
            let Some(cluster) = &mut config.cluster else {
                anyhow::bail!(
                    "--node names this host on a cluster: add --nats-url or a [cluster] table"
                );
            };
            cluster.node = Some(node.clone());
        }
        let asked = self.wasmtime.apply(&mut config, self.config.is_none())?;
        let mode = match &self.config {
            Some(_) => RoutingMode::Multi {
                base_domain: config.host.base_domain.clone(),
            },
            None => RoutingMode::Single {
                slug: self.slug.clone(),
            },
        };
        Ok((config, mode, asked))
    }

    pub(crate) async fn run(self) -> Result<()> {
        let (mut config, routing, asked) = self.config()?;
        let dev_tokens = self.session_secret(&mut config, &routing);
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(ArtifactCache::default_dir)
        };
        let guest_logs = if self.wasmtime.no_logging_prefix {
            GuestLogFormat::Raw
        } else {
            self.guest_logs.unwrap_or(match routing {
                RoutingMode::Single { .. } => GuestLogFormat::Pretty,
                RoutingMode::Multi { .. } => GuestLogFormat::Off,
            })
        };
        let addr = config.host.addr;
        let tls_files: Vec<PathBuf> = [&config.host.tls_cert, &config.host.tls_key]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let state_dir = match routing {
            RoutingMode::Single { .. } => None,
            RoutingMode::Multi { .. } => Some(
                self.state_dir
                    .clone()
                    .or_else(|| config.host.state_dir.clone())
                    .or_else(default_state_dir)
                    .context("no state directory: pass --state-dir (HOME is not set)")?,
            ),
        };
        let app = App::build(AppConfig {
            config,
            routing: routing.clone(),
            cache_dir,
            pool: PoolOptions {
                pooling: asked.pool.pooling && !self.no_pooling,
                ..asked.pool
            },
            guest_logs,
            tenants_file: self.config.clone(),
            state_dir,
        })
        .await?;
        if self.config.is_some() || app.is_tls() {
            spawn_reload_on_hangup(app.reloader())?;
        }
        if let (Some(file), true) = (&self.config, self.watch) {
            super::watch::spawn(file.clone(), tls_files, app.reloader())?;
        }
        let (shutdown, shutdown_listener) =
            super::shutdown::signal(self.wasmtime.shutdown_addr.as_ref()).await?;
        if let Some(address) = shutdown_listener {
            app.add_own_address(address);
        }
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        announce(
            listener.local_addr()?,
            app.is_tls(),
            &routing,
            &dev_tokens,
            app.cluster_node(),
            app.metrics_address(),
        );
        app.serve(listener, shutdown).await
    }
}

impl ServeArgs {
    /// Puts the session secret where the app reads it (`[auth]
    /// session_secret`): MCTX_SESSION_SECRET wins over the file; without
    /// either, development mode (and single-component mode) generates one
    /// and returns a token to print for each owner. Without any, the app
    /// refuses to start, after reporting any other problem.
    fn session_secret(&self, config: &mut Config, mode: &RoutingMode) -> Vec<(String, String)> {
        if let Some(secret) = session_secret_from_env() {
            config.auth.session_secret = Some(secret);
        }
        let development = self.dev || matches!(mode, RoutingMode::Single { .. });
        if config.auth.session_secret.is_some() || !development {
            return Vec::new();
        }
        let secret = match Sessions::generate_secret() {
            Ok(secret) => secret,
            Err(e) => {
                // The app then refuses to start for want of a secret.
                tracing::error!("cannot generate a development session secret: {e:#}");
                return Vec::new();
            }
        };
        let Ok(sessions) = Sessions::new(secret.as_bytes()) else {
            return Vec::new();
        };
        config.auth.session_secret = Some(secret);
        let mut owners: Vec<&str> = config
            .tenants
            .iter()
            .map(|t| t.owner.as_str())
            .chain(config.auth.admins.iter().map(String::as_str))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners
            .into_iter()
            .map(|owner| (owner.to_string(), sessions.mint(owner, DEV_TOKEN_TTL)))
            .collect()
    }
}

/// `$XDG_DATA_HOME/mctx-host`, else `$HOME/.local/share/mctx-host`.
fn default_state_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .map(|base| base.join("mctx-host"))
}

/// Re-reads the tenants file on every `SIGHUP`; a broken file is reported
/// and changes nothing.
fn spawn_reload_on_hangup(reloader: crate::app::Reloader) -> Result<()> {
    use tracing::Instrument as _;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing a SIGHUP handler")?;
    tokio::spawn(
        async move {
            while hangups.recv().await.is_some() {
                match reloader.reload("SIGHUP").await {
                    Ok(summary) => tracing::info!("reloaded on SIGHUP: {summary}"),
                    Err(e) => tracing::error!("reload on SIGHUP refused, nothing changed: {e:#}"),
                }
            }
        }
        .instrument(tracing::info_span!("reload")),
    );
    Ok(())
}

/// How long the tokens printed in development mode last.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Prints where to reach the host. The first line is stable (`listening on
/// http://ADDR`): scripts and tests read the port from it.
fn announce(
    addr: SocketAddr,
    tls: bool,
    mode: &RoutingMode,
    dev_tokens: &[(String, String)],
    cluster_node: Option<&str>,
    metrics: Option<SocketAddr>,
) {
    let mut out = std::io::stdout().lock();
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let _ = writeln!(out, "mctx-host listening on {http}://{addr}");
    let _ = match mode {
        RoutingMode::Single { slug } => writeln!(
            out,
            "  serving one component as tenant {slug:?}; host endpoints under {http}://{addr}{SINGLE_MODE_CONTROL_PREFIX}/"
        ),
        RoutingMode::Multi { base_domain } => writeln!(
            out,
            "  tenants at {http}://{{slug}}.{base_domain}:{port}/ or {http}://{addr}/t/{{slug}}/",
            port = addr.port()
        ),
    };
    let base = mode.control_base();
    let _ = writeln!(out, "  dashboard at {http}://{addr}{base}/dev/servers");
    let _ = writeln!(
        out,
        "  log streams at {ws}://{addr}{base}/log-stream/{{slug}}"
    );
    if let Some(metrics) = metrics {
        let _ = writeln!(out, "  metrics at http://{metrics}/metrics");
    }
    if let Some(node) = cluster_node {
        let _ = writeln!(out, "  cluster node {node:?}: log hubs shared over NATS");
    }
    for (owner, token) in dev_tokens {
        let _ = writeln!(out, "  dev session token for {owner:?} (24 h): {token}");
        let _ = writeln!(
            out,
            "  sign in as {owner:?}: {http}://{addr}{base}/login#token={token}"
        );
    }
    let _ = out.flush();
}
