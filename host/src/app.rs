//! The composition root: [`App::build`] wires a host from its
//! configuration — runtime, tenants, log hubs, cluster, log streams,
//! control plane, front door — and [`App::serve`] runs it on a listener
//! until told to stop, then shuts it down in order.
//!
//! The command line (`cli`) only turns flags and the tenants file into an
//! [`AppConfig`]; tests and benchmarks can build and serve a host
//! in-process the same way.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use tracing::Instrument as _;

use crate::base::auth::Sessions;
use crate::base::config::{Config, Layers};
use crate::base::metrics::{Metrics, Sampled};
use crate::base::refusals::Refusals;
use crate::deploy::{Deployments, Sources, StateLocation};
use crate::edge::connections::{Budget, Connections};
use crate::edge::control::{ControlConfig, ControlPlane};
use crate::edge::log_stream::LogStreams;
use crate::edge::redirect;
use crate::edge::routing::RoutingMode;
use crate::edge::server::{self, FrontDoor, HttpLimits};
use crate::edge::tls::Tls;
use crate::logs::cluster::Cluster;
use crate::logs::console::{ConsoleLog, GuestLogFormat};
use crate::logs::export::{Destination, Exports};
use crate::logs::hub::LogHub;
use crate::logs::publish::Publisher;
use crate::logs::sink::{LogSink, Tee};
use crate::logs::store::LogStore;
use crate::run::dispatch::Dispatcher;
use crate::run::limits;
use crate::run::memory;
use crate::run::pool::PoolOptions;
use crate::run::runtime::{Runtime, RuntimeSettings};

/// How long a host joining a cluster waits to catch up with the servers
/// deployed there before it serves without them (and catches up later).
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(10);

/// Everything a host is built from.
pub struct AppConfig {
    /// The tenants and the settings tables (from a tenants file, or the
    /// one-component equivalent the command line makes).
    pub config: Config,
    /// How a request finds its tenant.
    pub routing: RoutingMode,
    /// Where compiled components are cached; `None` compiles at start.
    pub cache_dir: Option<PathBuf>,
    /// Where instances' memories come from and how they are reset
    /// (`--no-pooling`, `-O`).
    pub pool: PoolOptions,
    /// Guest output printed on this process's stdout, or not.
    pub guest_logs: GuestLogFormat,
    /// What a reload settles the configuration from again (the tenants
    /// file under the command line's settings); `None` in single-component
    /// mode.
    pub reload_from: Option<Layers>,
    /// Where servers deployed through the API live (`[host] state_dir`,
    /// resolved); `None` turns the deploy API off.
    pub state_dir: Option<PathBuf>,
}

/// A host, built and ready to serve.
pub struct App {
    door: Arc<FrontDoor>,
    cluster: Option<Cluster>,
    grace: Duration,
    /// `[host] http_redirect_addr`, bound: plain HTTP answered with
    /// redirects.
    redirect: Option<TcpListener>,
    /// `[metrics] addr`, bound.
    metrics_listener: Option<TcpListener>,
    metrics: Arc<Metrics>,
    deployments: Arc<Deployments>,
    tenants_file: bool,
    /// Retained tenants' entries (`[host] log_retain`, `[tenants.logs]`).
    store: Option<Arc<LogStore>>,
    /// Export destinations (`[[logs.export]]`, `[[tenants.logs.export]]`).
    exports: Arc<Exports>,
}

/// Re-reads the TLS certificate and the tenants file and applies what
/// changed; see `App::reloader`.
#[derive(Clone)]
pub struct Reloader {
    /// Set when there is a tenants file.
    deployments: Option<Arc<Deployments>>,
    tls: Option<Arc<Tls>>,
}

impl Reloader {
    /// Applies the files as they are now. Each part that cannot be read
    /// changes nothing and says why (every problem, as at start); `by`
    /// names the trigger in the `deploy` entries viewers receive. Returns
    /// a one-line summary.
    pub async fn reload(&self, by: &str) -> Result<String> {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(summary) => done.push(format!("TLS: {summary}")),
                Err(e) => failed.push(format!("TLS kept as it was: {e:#}")),
            }
        }
        if let Some(deployments) = &self.deployments {
            match deployments.reload(by).await {
                Ok(summary) => done.push(format!("tenants: {summary}")),
                Err(e) => failed.push(format!("tenants kept as they were: {e:#}")),
            }
        }
        if failed.is_empty() {
            Ok(done.join("; "))
        } else {
            failed.extend(done);
            anyhow::bail!("{}", failed.join("; "))
        }
    }
}

impl App {
    /// Compiles (or loads from the cache) every tenant's components, checks
    /// the session secret (`[auth] session_secret`) and joins the cluster if
    /// one is configured. Errors name the file, the tenant and the problem.
    pub async fn build(app: AppConfig) -> Result<App> {
        let AppConfig {
            config,
            routing,
            cache_dir,
            pool,
            guest_logs,
            reload_from,
            state_dir,
        } = app;
        let has_tenants_file = reload_from.is_some();
        let host = &config.host;
        // The pool's slots fit the largest memory any tenant may use (those
        // deployed through the API have the host's).
        let largest_memory_mb = config
            .tenants
            .iter()
            .filter_map(|t| t.memory_limit_mb)
            .fold(host.memory_limit_mb, u64::max);
        let runtime = Arc::new(Runtime::new(RuntimeSettings {
            max_concurrent_requests: host.max_concurrent_requests,
            memory_limit_bytes: limits::mib(largest_memory_mb),
            cache_dir,
            pool,
        })?);
        let started = Instant::now();
        let loaded = Deployments::load(
            &config,
            Sources {
                reload_from,
                // On a cluster the hosts share their deployments instead.
                state: state_dir.clone().map(|dir| match config.cluster {
                    Some(_) => StateLocation::Cluster,
                    None => StateLocation::Dir(dir),
                }),
            },
            runtime.clone(),
        )?;
        let stats = loaded.stats;
        let metrics = Metrics::new();
        for (cache, count) in [("hit", stats.cache_hits), ("miss", stats.compiled)] {
            for _ in 0..count {
                metrics.component_loaded(cache);
            }
        }
        tracing::info!(
            tenants = loaded.live().snapshot().len(),
            components = stats.components,
            compiled = stats.compiled,
            cache_hits = stats.cache_hits,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tenants loaded"
        );

        // After the tenants, so that every problem with them is reported
        // even when this one is there too.
        let Some(secret) = &config.auth.session_secret else {
            anyhow::bail!(
                "{}: no session secret for log streams: set MCTX_SESSION_SECRET or [auth] session_secret \
                 (at least 32 bytes), or run with --dev to generate one",
                config.source
            );
        };
        let sessions = Sessions::new(secret.as_bytes())?;
        let tls = match (&host.tls_cert, &host.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
            _ if host.hsts || host.http_redirect_addr.is_some() => anyhow::bail!(
                "{}: [host] hsts and http_redirect_addr need TLS: set tls_cert and tls_key (or --tls-cert and --tls-key)",
                config.source
            ),
            _ => None,
        };

        let hub = LogHub::new(config.logs.clone());
        let cluster = match &config.cluster {
            Some(settings) => Some(Cluster::start(settings, hub.clone()).await?),
            None => None,
        };
        if let Some(cluster) = &cluster {
            // Tenants' key-value stores live in JetStream, shared by the hosts.
            runtime
                .stores()
                .share(async_nats::jetstream::new(cluster.client()));
        }
        hub.count_losses(metrics.clone());
        // Retained tenants' logs are kept beside the servers (each host its
        // own copy; on a cluster, of every host's entries, from JetStream).
        let store = match state_dir {
            Some(dir) => Some(Arc::new(LogStore::open(
                &dir,
                metrics.clone(),
                cluster.as_ref().map(Cluster::node),
            )?)),
            None => None,
        };
        let mut problems = Vec::new();
        let everyone = Destination::settle_all(
            &config.logs.export,
            crate::run::capabilities::read_secret,
            |n| format!("{}: [[logs.export]] #{n}", config.source),
            &mut problems,
        );
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("; "));
        }
        let exports = Arc::new(Exports::new(everyone, metrics.clone()));
        loaded
            .live()
            .snapshot()
            .direct_logs(store.as_deref(), &exports);
        let mut publisher = Publisher::new(hub.clone(), cluster.clone(), metrics.clone())
            .exporting(exports.clone());
        if let Some(store) = &store {
            // After the policies: it follows the retained tenants' streams.
            if let Some(cluster) = &cluster {
                store.replicate(async_nats::jetstream::new(cluster.client()));
            }
            publisher = publisher.storing(store.clone());
        }
        let publisher: Arc<dyn LogSink> = Arc::new(publisher);
        exports.report_to(Arc::downgrade(&publisher));
        let deployments =
            Arc::new(loaded.announce_to(publisher.clone(), hub.clone(), metrics.clone()));
        if let Some(cluster) = &cluster {
            deployments
                .follow_cluster(cluster.client(), CATCH_UP_PATIENCE)
                .await;
        }
        let sink: Arc<dyn LogSink> = match guest_logs {
            GuestLogFormat::Off => publisher,
            format => Arc::new(Tee(publisher, Arc::new(ConsoleLog::new(format)))),
        };
        let streams = LogStreams {
            hub: hub.clone(),
            cluster: cluster.clone(),
            sessions,
            allowed_origins: config.auth.allowed_origins.clone(),
            viewers: TaskTracker::new(),
            refused: Arc::default(),
        };
        let refusals = Arc::new(Refusals::default());
        metrics.sample(Sampled {
            viewers: Box::new(move || hub.viewer_counts()),
            refusals: {
                let refusals = refusals.clone();
                Box::new(move || refusals.counts())
            },
            stream_refusals: {
                let refused = streams.refused.clone();
                Box::new(move || refused.totals())
            },
            cluster: {
                let cluster = cluster.clone();
                Box::new(move || cluster.as_ref().map(Cluster::sample))
            },
            kept_instances: {
                let kept = runtime.kept().clone();
                Box::new(move || (kept.kept(), kept.max()))
            },
            keyvalue: {
                let stores = runtime.stores().clone();
                Box::new(move || stores.usage())
            },
            pool_idle_resident: {
                let runtime = runtime.clone();
                Box::new(move || runtime.pool_idle_resident_bytes())
            },
        });
        let connections = Connections::new(Budget::new(
            host.max_connections,
            host.max_connections_per_ip,
        ));
        let door = FrontDoor {
            tenants: deployments.live().clone(),
            control: ControlPlane::new(ControlConfig {
                streams,
                deployments: deployments.clone(),
                max_component_bytes: host.max_component_bytes,
                base: routing.control_base().to_string(),
                store: store.clone(),
                connections: connections.clone(),
                refusals: refusals.clone(),
            }),
            mode: routing,
            dispatcher: Dispatcher::new(runtime, sink, refusals.clone(), metrics.clone()),
            connections,
            refusals,
            http: HttpLimits {
                header_read_timeout: host.header_read_timeout(),
                body_read_timeout: host.body_read_timeout(),
                max_header_bytes: host.max_header_bytes,
            },
            tls: tls.clone(),
            hsts: host.hsts,
        };
        Ok(App {
            door: Arc::new(door),
            cluster,
            grace: host.shutdown_grace(),
            redirect: match host.http_redirect_addr {
                Some(address) => Some(redirect::bind(address).await?),
                None => None,
            },
            metrics_listener: match config.metrics.addr {
                Some(address) => Some(
                    TcpListener::bind(address)
                        .await
                        .with_context(|| format!("[metrics] addr: cannot listen on {address}"))?,
                ),
                None => None,
            },
            metrics,
            deployments,
            tenants_file: has_tenants_file,
            store,
            exports,
        })
    }

    /// What re-reads the TLS certificate and the tenants file (on
    /// `SIGHUP`, `--watch`).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            deployments: self.tenants_file.then(|| self.deployments.clone()),
            tls: self.door.tls.clone(),
        }
    }

    /// Records a listener the CLI holds (`--shutdown-addr`) as the host's
    /// own: tenants reach it only through an exact outbound entry.
    pub fn add_own_address(&self, address: std::net::SocketAddr) {
        self.door.dispatcher.add_own_address(address);
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Whether the front door speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.door.tls.is_some()
    }

    /// This host's node name, on a cluster.
    pub fn cluster_node(&self) -> Option<&str> {
        self.cluster.as_ref().map(Cluster::node)
    }

    /// Serves `listener` until `shutdown` resolves, then shuts down in
    /// order, within the grace period (`[host] shutdown_grace_secs`):
    /// 1. stop accepting; each connection closes after its current response;
    /// 2. wait for the guests still running (a guest can outlive its HTTP
    ///    exchange by a little, and its last entries with it);
    /// 3. send every log viewer what is left, a `closing` frame and close
    ///    code 1001;
    /// 4. give this host's viewer slots on the cluster back.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        // Every listener of the host is its own: none is a tenant's to reach.
        let own = [
            Some(&listener),
            self.redirect.as_ref(),
            self.metrics_listener.as_ref(),
        ];
        for address in own
            .into_iter()
            .flatten()
            .filter_map(|l| l.local_addr().ok())
        {
            self.door.dispatcher.add_own_address(address);
        }
        let refusals = self.door.refusals.clone();
        let logging = tokio::spawn(
            async move { refusals.log_periodically().await }
                .instrument(tracing::info_span!("refusals")),
        );
        let door = self.door.clone();
        let trimming = tokio::spawn(
            async move { memory::trim_after_bursts(|| door.dispatcher.in_flight()).await }
                .instrument(tracing::info_span!("memory")),
        );
        let live = self.deployments.live().clone();
        let sweeping = tokio::spawn(
            async move { crate::run::tenants::sweep_every_second(&live).await }
                .instrument(tracing::info_span!("instances")),
        );
        // Retention and export follow the registry: a reload or a deploy
        // changes whom they apply to.
        let following = {
            let (store, exports) = (self.store.clone(), self.exports.clone());
            let live = self.deployments.live().clone();
            tokio::spawn(
                async move {
                    let mut swaps = live.swaps();
                    while swaps.changed().await.is_ok() {
                        live.snapshot().direct_logs(store.as_deref(), &exports);
                    }
                }
                .instrument(tracing::info_span!("log retention and export")),
            )
        };
        let https_port = listener.local_addr()?.port();
        let redirecting = self
            .redirect
            .map(|plain| redirect::spawn(plain, https_port, self.door.clone()));
        let scraped = self
            .metrics_listener
            .map(|listener| crate::edge::metrics::spawn(listener, self.metrics.clone()));
        let connections = server::accept_until(listener, self.door.clone(), shutdown).await;
        if let Some(redirecting) = redirecting {
            redirecting.abort();
        }
        if let Some(scraped) = scraped {
            scraped.abort();
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        let drained = async {
            connections.wait().await;
            self.door.dispatcher.wait_idle().await;
        };
        if tokio::time::timeout_at(deadline, drained).await.is_err() {
            tracing::warn!(
                left = connections.len(),
                "grace period over with requests still in flight"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.door
            .control
            .streams
            .close_all(left.max(Duration::from_millis(500)))
            .await;
        if let Some(cluster) = &self.cluster {
            cluster.leave().await;
        }
        following.abort();
        // What the last requests wrote goes out (once, no retries) and
        // reaches the disk before exit.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.exports.close(left.max(Duration::from_secs(1))).await;
        if let Some(store) = self.store {
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        logging.abort();
        trimming.abort();
        sweeping.abort();
        if let Some(summary) = self.door.refusals.take_summary() {
            tracing::warn!("refused since the last summary: {summary}");
        }
        tracing::info!("shut down");
        Ok(())
    }
}
