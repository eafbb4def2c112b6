//! `mctx-host serve`: its flags (ours and `wasmtime serve`'s), how they and
//! the tenants file become an [`AppConfig`], the start-up messages, and
//! what stops the host.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use tokio::net::TcpListener;

use super::session_secret_from_env;
use super::wasmtime;
use crate::app::{App, AppConfig};
use crate::base::auth::Sessions;
use crate::base::config::{Base, Config, Layers, Overrides, Slug};
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
    /// the server list, and the kept logs of tenants granted retention
    /// (`logs.sqlite3`; `[tenants.logs] retain`, docs/log-retention.md)
    /// [default: the config's `[host] state_dir`, else
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
    /// What this invocation's configuration is settled from: the tenants
    /// file, or the one component, with every flag given over it; and what
    /// `wasmtime serve`'s flags ask of the runtime beyond it.
    fn layers(&self) -> Result<(Layers, wasmtime::Asked)> {
        let base = match (&self.config, &self.component) {
            (Some(path), _) => Base::File(path.clone()),
            (None, Some(component)) => Base::Component {
                slug: Slug::parse(&self.slug)
                    .map_err(|e| anyhow::anyhow!("--slug {:?}: {e}", self.slug))?,
                component: component.clone(),
            },
            (None, None) => unreachable!("clap requires a component or --config"),
        };
        let mut over = Overrides::default();
        if let Some(secret) = session_secret_from_env() {
            over.auth(
                "MCTX_SESSION_SECRET",
                "[auth] session_secret",
                move |auth| {
                    auth.session_secret = Some(secret.clone());
                },
            );
        }
        macro_rules! host {
            ($flag:literal, $key:ident $(, $wrap:path)?) => {
                if let Some(value) = self.$key.clone() {
                    over.host($flag, concat!("[host] ", stringify!($key)), move |host| {
                        host.$key = $($wrap)?(value.clone());
                    });
                }
            };
        }
        host!("--addr", addr);
        host!("--cpu-limit-ms", cpu_limit_ms);
        host!("--memory-limit-mb", memory_limit_mb);
        host!("--max-concurrent-requests", max_concurrent_requests);
        host!("--shutdown-grace-secs", shutdown_grace_secs);
        host!("--header-read-timeout-secs", header_read_timeout_secs);
        host!("--request-timeout-ms", request_timeout_ms);
        host!("--max-request-body-bytes", max_request_body_bytes);
        host!("--max-connections", max_connections, Some);
        host!("--max-connections-per-ip", max_connections_per_ip);
        host!("--state-dir", state_dir, Some);
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let files = (cert.clone(), key.clone());
            over.host("--tls-cert", "[host] tls_cert", move |host| {
                (host.tls_cert, host.tls_key) = (Some(files.0.clone()), Some(files.1.clone()));
            });
        }
        if let Some(addr) = self.metrics_addr {
            over.metrics("--metrics-addr", "[metrics] addr", move |metrics| {
                metrics.addr = Some(addr);
            });
        }
        if let Some(url) = &self.nats_url {
            over.join_cluster("--nats-url", url.clone());
        }
        macro_rules! cluster {
            ($flag:literal, $key:ident) => {
                if let Some(value) = self.$key.clone() {
                    over.cluster($flag, concat!("[cluster] ", stringify!($key)), move |c| {
                        c.$key = Some(value.clone());
                    });
                }
            };
        }
        cluster!("--nats-creds", nats_creds);
        cluster!("--nats-token-file", nats_token_file);
        cluster!("--nats-tls-ca", nats_tls_ca);
        cluster!("--nats-tls-cert", nats_tls_cert);
        cluster!("--nats-tls-key", nats_tls_key);
        cluster!("--node", node);
        let asked = self.wasmtime.apply(&mut over)?;
        Ok((Layers { base, over }, asked))
    }

    pub(crate) async fn run(self) -> Result<()> {
        let (mut layers, asked) = self.layers()?;
        let dev_secret = self.dev_session_secret(&mut layers);
        let config = layers.settle()?;
        let dev_tokens = dev_tokens(&config, dev_secret.as_deref());
        let routing = match &layers.base {
            Base::File(_) => RoutingMode::Multi {
                base_domain: config.host.base_domain.clone(),
            },
            Base::Component { slug, .. } => RoutingMode::Single {
                slug: slug.to_string(),
            },
        };
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
                config
                    .host
                    .state_dir
                    .clone()
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
            reload_from: matches!(layers.base, Base::File(_)).then_some(layers),
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
    /// Development mode (and single-component mode) makes up a session
    /// secret where neither MCTX_SESSION_SECRET nor the file gives one, and
    /// prints a token for each owner; without any secret, the app refuses
    /// to start, after reporting any other problem.
    fn dev_session_secret(&self, layers: &mut Layers) -> Option<String> {
        let single = matches!(layers.base, Base::Component { .. });
        if !(self.dev || single) {
            return None;
        }
        let secret = match Sessions::generate_secret() {
            Ok(secret) => secret,
            Err(e) => {
                // The app then refuses to start for want of a secret.
                tracing::error!("cannot generate a development session secret: {e:#}");
                return None;
            }
        };
        let generated = secret.clone();
        layers
            .over
            .auth("--dev", "[auth] session_secret", move |auth| {
                auth.session_secret.get_or_insert_with(|| generated.clone());
            });
        Some(secret)
    }
}

/// A token for each owner and admin, signed with the development secret if
/// it is the one the host uses.
fn dev_tokens(config: &Config, dev_secret: Option<&str>) -> Vec<(String, String)> {
    let Some(secret) = dev_secret.filter(|s| config.auth.session_secret.as_deref() == Some(*s))
    else {
        return Vec::new();
    };
    let Ok(sessions) = Sessions::new(secret.as_bytes()) else {
        return Vec::new();
    };
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
