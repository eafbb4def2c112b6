//! The WebAssembly side of the host: one [`Engine`] and [`Linker`] for every
//! tenant, the store state each request gets, and loading components.
//!
//! Everything here is done once per process (engine, linker, epoch ticker)
//! or once per component (compile, link, pre-instantiate); the per-request
//! work is only `Store::new` plus instantiating a [`ProxyPre`], which with the
//! pooling allocator takes microseconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::artifacts::{ArtifactCache, CacheOutcome};
use crate::capture::RequestCapture;
use crate::entry::Stream;
use crate::limits::{MemoryLimiter, RequestMeter};

/// How often the epoch advances. The CPU limit is enforced at this
/// granularity, and a running guest yields to other requests this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings that shape the engine; fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    pub cpu_limit: Duration,
    pub memory_limit_bytes: usize,
    /// Requests running at once; also sizes the instance pool.
    pub max_concurrent_requests: u32,
    /// `None` compiles every component at start.
    pub cache_dir: Option<PathBuf>,
    pub pooling: bool,
}

/// The state of one request's store.
pub struct TenantState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    meter: Arc<RequestMeter>,
    capture: Arc<RequestCapture>,
}

impl TenantState {
    /// The state of a request whose stdout and stderr go to `capture`.
    pub fn new(
        capture: Arc<RequestCapture>,
        memory_limit_bytes: usize,
        meter: Arc<RequestMeter>,
    ) -> Self {
        let wasi = WasiCtx::builder()
            .stdout(capture.stream(Stream::Stdout))
            .stderr(capture.stream(Stream::Stderr))
            .build();
        TenantState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit_bytes, meter.clone()),
            meter,
            capture,
        }
    }

    pub fn capture(&self) -> &RequestCapture {
        &self.capture
    }

    pub fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    pub fn meter(&self) -> &RequestMeter {
        &self.meter
    }
}

impl WasiView for TenantState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for TenantState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// The engine, the linker and the artifact cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<TenantState>,
    cache: Option<ArtifactCache>,
    settings: RuntimeSettings,
    _ticker: EpochTicker,
}

impl Runtime {
    pub fn new(settings: RuntimeSettings) -> Result<Runtime> {
        let engine = build_engine(&settings)?;
        let mut linker = Linker::new(&engine);
        // The whole of WASI p2 (as `wasmtime serve` links by default), so that
        // guests built with a standard toolchain link; the context grants no
        // files, sockets or environment.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::guest_logging::add_to_linker(&mut linker)?;
        let cache = settings
            .cache_dir
            .as_ref()
            .map(ArtifactCache::open)
            .transpose()?;
        let ticker = EpochTicker::spawn(engine.clone());
        Ok(Runtime {
            engine,
            linker,
            cache,
            settings,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// Compiles (or loads from the cache) a component and pre-instantiates
    /// it, checking that it is a `wasi:http/proxy` whose imports this host
    /// provides. Errors say which of those failed.
    pub fn load(&self, path: &Path) -> Result<(ProxyPre<TenantState>, CacheOutcome)> {
        let wasm = std::fs::read(path)
            .with_context(|| format!("cannot read component {}", path.display()))?;
        let (component, outcome) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &wasm),
            None => Component::new(&self.engine, &wasm)
                .map(|c| (c, CacheOutcome::Disabled))
                .map_err(anyhow::Error::from),
        }
        .map_err(|e| describe_compile_error(e, &wasm))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something this host does not provide")?;
        let pre = ProxyPre::new(instance_pre).map_err(|e| {
            anyhow!(
                "not a wasi:http proxy component (it must export wasi:http/incoming-handler): {e}"
            )
        })?;
        Ok((pre, outcome))
    }
}

/// Turns wasmtime's compile error into one a tenant author can act on.
fn describe_compile_error(error: anyhow::Error, wasm: &[u8]) -> anyhow::Error {
    const MAGIC: &[u8] = b"\0asm";
    // Byte 4..8 is the version/layer: core modules are version 1, layer 0.
    let is_core_module = wasm.len() >= 8 && &wasm[..4] == MAGIC && wasm[4..8] == [1, 0, 0, 0];
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        anyhow!(
            "not a WebAssembly file (no `\\0asm` header, {} bytes)",
            wasm.len()
        )
    } else if is_core_module {
        anyhow!(
            "this is a core WebAssembly module, not a component: build for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
        )
    } else {
        error.context("invalid or truncated component")
    }
}

fn build_engine(settings: &RuntimeSettings) -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if settings.pooling {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(settings)));
        match Engine::new(&config) {
            Ok(engine) => return Ok(engine),
            // Typically a virtual-memory limit (ulimit -v) too small for the
            // pool's reservations: serve anyway, just slower to instantiate.
            Err(e) => {
                tracing::warn!(
                    "the pooling allocator is unavailable ({e:#}); using on-demand allocation"
                );
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            }
        }
    }
    Engine::new(&config).map_err(anyhow::Error::from)
}

/// Sizes the instance pool from the request concurrency and memory limit.
fn pool_config(settings: &RuntimeSettings) -> PoolingAllocationConfig {
    let n = settings.max_concurrent_requests.max(1);
    let mut pool = PoolingAllocationConfig::default();
    // A component is several core instances (the guest, its WASI shims); a
    // Rust guest uses 2-5, a JavaScript runtime more.
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(10))
        .total_memories(n.saturating_mul(2))
        .total_tables(n.saturating_mul(4))
        .total_stacks(n)
        .max_memory_size(settings.memory_limit_bytes)
        // Reset tables by rewriting them rather than with madvise: the TLB
        // shootdowns madvise causes dominate a small guest's per-request
        // cost (measured with benches/compare.rs: hello goes from ~8.5k to
        // ~14k requests/s). Not for linear memories: a 1 MiB memset per
        // request measured as slow as the madvise it replaces.
        .table_keep_resident(64 << 10);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on one thread for the
/// whole engine (one ticker per request costs orders of magnitude more).
struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn spawn(engine: Engine) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EPOCH_TICK) {
                    engine.increment_epoch();
                }
            })
            .expect("spawning a thread at start-up");
        EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
