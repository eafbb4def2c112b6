//! The WebAssembly side of the host: one [`Engine`] and [`Linker`] for every
//! tenant, and loading components.
//!
//! Everything here is done once per process (engine, linker, epoch ticker)
//! or once per component (compile, link, pre-instantiate); the per-request
//! work is only `Store::new` plus instantiating a [`ProxyPre`], which with the
//! pooling allocator takes microseconds.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::run::artifacts::{ArtifactCache, CacheOutcome};
use crate::run::budget::Budget;
use crate::run::keyvalue::KeyValueStores;
use crate::run::pool::{self, PoolOptions};
use crate::run::state::RequestState;

/// How often the epoch advances. The CPU limit is enforced at this
/// granularity, and a running guest yields to other requests this often.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Settings that shape the engine; fixed for the life of the process.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeSettings {
    /// Requests running at once; sizes the instance pool.
    pub(crate) max_concurrent_requests: u32,
    /// The most linear memory one instance may have; sizes the pool's slots.
    pub(crate) memory_limit_bytes: usize,
    /// Where compiled components are cached; `None` compiles every
    /// component at start.
    pub(crate) cache_dir: Option<PathBuf>,
    /// The instance pool, as asked (`run::pool`).
    pub(crate) pool: PoolOptions,
}

impl RuntimeSettings {
    /// Instances kept for reuse, host-wide at most: a quarter of the
    /// requests in flight (at least 16). The instance pool holds them on
    /// top of the requests in flight, so keeping them never starves a
    /// request of a fresh instance.
    pub(crate) fn max_kept_instances(&self) -> u32 {
        (self.max_concurrent_requests / 4).max(16)
    }
}

/// The engines, their linkers and the artifact cache.
pub(crate) struct Runtime {
    /// For WASIp2 components: every tenant until one deploys a WASIp3
    /// component, and still most of them then.
    p2: Flavor,
    /// For WASIp3 components, made when the first one loads.
    p3: OnceLock<Flavor>,
    cache: Option<ArtifactCache>,
    settings: RuntimeSettings,
    /// Instances kept for reuse, host-wide (`run::instances`).
    kept: Arc<Budget>,
    /// Every tenant's key-value store (`run::keyvalue`).
    stores: Arc<KeyValueStores>,
}

/// An engine, the linker made for it and its epoch ticker.
///
/// Why two: an engine that can run WASIp3 (`concurrency_support`) sets up
/// its concurrency state in every store, which measured 9 % of a fresh
/// WASIp2 instance's throughput and 12 % of a reused one's (hello.wasm,
/// wrk -c16, 14.9k vs 13.6k and 37.2k vs 32.8k req/s). WASIp2 components,
/// which need none of it, get an engine without it.
struct Flavor {
    engine: Engine,
    linker: Linker<RequestState>,
    _ticker: EpochTicker,
}

impl Flavor {
    fn new(settings: &RuntimeSettings, p3: bool) -> Result<Flavor> {
        let engine = build_engine(settings, p3)?;
        let mut linker = Linker::new(&engine);
        // The whole of WASI p2 (as `wasmtime serve` links by default), so
        // that guests built with a standard toolchain link; the context
        // grants no files, sockets or environment.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        if p3 {
            // And WASI p3, for components built against it (`run::p3`).
            wasmtime_wasi::p3::add_to_linker(&mut linker)?;
            wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        }
        crate::run::guest_logging::add_to_linker(&mut linker)?;
        crate::run::keyvalue::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::spawn(engine.clone());
        Ok(Flavor {
            engine,
            linker,
            _ticker: ticker,
        })
    }
}

impl Runtime {
    pub(crate) fn new(mut settings: RuntimeSettings) -> Result<Runtime> {
        // Decided once, so that the WASIp3 engine made later agrees.
        settings.pool.pagemap_scan = match pool::reset_in_place(&settings.pool)? {
            true => Enabled::Yes,
            false => Enabled::No,
        };
        let p2 = Flavor::new(&settings, false)?;
        let cache = settings
            .cache_dir
            .as_ref()
            .map(ArtifactCache::open)
            .transpose()?;
        Ok(Runtime {
            p2,
            p3: OnceLock::new(),
            cache,
            kept: Budget::new(settings.max_kept_instances() as usize),
            stores: Arc::default(),
            settings,
        })
    }

    /// The WASIp3 flavor, made on first use.
    fn p3(&self) -> Result<&Flavor> {
        if let Some(flavor) = self.p3.get() {
            return Ok(flavor);
        }
        let flavor = Flavor::new(&self.settings, true)?;
        // Two loads racing: one flavor wins, the other is dropped unused.
        Ok(self.p3.get_or_init(|| flavor))
    }

    /// Bytes the instance pools' unused slots keep resident: tables and
    /// the zeroed tops of stacks always, memories when reset in place
    /// (`run::pool`).
    pub(crate) fn pool_idle_resident_bytes(&self) -> usize {
        [Some(&self.p2), self.p3.get()]
            .into_iter()
            .flatten()
            .filter_map(|flavor| flavor.engine.pooling_allocator_metrics())
            .map(|pool| {
                pool.unused_memory_bytes_resident()
                    + pool.unused_table_bytes_resident()
                    + pool.unused_stack_bytes_resident().unwrap_or(0)
            })
            .sum()
    }

    /// The host-wide budget of instances kept for reuse.
    pub(crate) fn kept(&self) -> &Arc<Budget> {
        &self.kept
    }

    /// Every tenant's key-value store, by slug.
    pub(crate) fn stores(&self) -> &Arc<KeyValueStores> {
        &self.stores
    }

    pub(crate) fn settings(&self) -> &RuntimeSettings {
        &self.settings
    }

    /// Compiles (or loads from the cache) a component and pre-instantiates
    /// it, checking that it is a `wasi:http/proxy` whose imports this host
    /// provides. The error says which of those failed, and whether the
    /// bytes are no component at all or a component this host cannot run.
    /// `sha256` is the bytes' [`sha256_hex`](crate::run::artifacts::sha256_hex),
    /// which every caller has already.
    pub(crate) fn load_bytes(
        &self,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<(GuestPre, CacheOutcome), Rejected> {
        let compile = |engine: &Engine| match &self.cache {
            Some(cache) => cache.load_or_compile(engine, wasm, sha256),
            None => Component::new(engine, wasm)
                .map(|c| (c, CacheOutcome::Disabled))
                .map_err(anyhow::Error::from),
        };
        // A WASIp3 component does not validate without the component
        // model's async features: that failure is how it is told apart.
        let (flavor, is_p3, (component, outcome)) = match compile(&self.p2.engine) {
            Ok(compiled) => (&self.p2, false, compiled),
            Err(e) if format!("{e:#}").contains("component model async") => {
                let p3 = self.p3().map_err(Rejected::Unfit)?;
                let compiled = compile(&p3.engine)
                    .map_err(|e| Rejected::Malformed(describe_compile_error(e, wasm)))?;
                (p3, true, compiled)
            }
            Err(e) => return Err(Rejected::Malformed(describe_compile_error(e, wasm))),
        };
        let instance_pre = flavor
            .linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .context("the component imports something this host does not provide")
            .map_err(Rejected::Unfit)?;
        let unfit = |e: wasmtime::Error| {
            Rejected::Unfit(anyhow!(
                "not a wasi:http component (it must export wasi:http/incoming-handler@0.2, or \
                 wasi:http/handler@0.3 for WASIp3): {e}"
            ))
        };
        let pre = if is_p3 {
            GuestPre::P3(ServicePre::new(instance_pre).map_err(unfit)?)
        } else {
            GuestPre::P2(ProxyPre::new(instance_pre).map_err(unfit)?)
        };
        Ok((pre, outcome))
    }
}

/// A tenant's component, ready to instantiate. Which generation of
/// wasi:http it speaks decides how a request runs in it.
#[derive(Clone)]
pub(crate) enum GuestPre {
    /// WASIp2, `wasi:http/proxy@0.2`: `incoming-handler.handle` answers
    /// through a response outparam; its body goes through a host channel.
    P2(ProxyPre<RequestState>),
    /// WASIp3, `wasi:http/service@0.3`: `handler.handle` returns the
    /// response, whose body guest tasks write inside the store's event loop
    /// (`run::p3`).
    P3(ServicePre<RequestState>),
}

/// An instance of a tenant's component, kept to serve its next request.
pub(crate) enum Guest {
    P2(wasmtime_wasi_http::p2::bindings::Proxy),
    P3(wasmtime_wasi_http::p3::bindings::Service),
}

impl GuestPre {
    /// The engine it was compiled for, which its stores must use.
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            GuestPre::P2(pre) => pre.instance_pre().engine(),
            GuestPre::P3(pre) => pre.instance_pre().engine(),
        }
    }

    /// `p2` or `p3`, for logs and the dashboard.
    pub(crate) fn generation(&self) -> &'static str {
        match self {
            GuestPre::P2(_) => "p2",
            GuestPre::P3(_) => "p3",
        }
    }
}

/// Why a component cannot be served.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Not a component: not WebAssembly, a core module, truncated or
    /// invalid (the deploy API answers 400).
    Malformed(anyhow::Error),
    /// A valid component this host cannot run: not a `wasi:http/proxy`, or
    /// it imports what the host does not provide (422).
    Unfit(anyhow::Error),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed(e) | Rejected::Unfit(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for Rejected {}

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

fn build_engine(settings: &RuntimeSettings, p3: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.concurrency_support(p3);
    // Fresh instances get their data segments copied in rather than
    // mapped copy-on-write from the module's image: each first write to a
    // CoW page is a fault that flushes the TLB of every core running the
    // process, and those shootdowns were a fifth of the host's CPU on the
    // fresh-instance path. Measured (2 cores, wrk -c16): hello.wasm 13.4k →
    // 14.8k req/s, js-hello (13 MB) 640 → 704 req/s (docs/profile.md).
    // `-O memory-init-cow=y` turns CoW back on.
    config.memory_init_cow(settings.pool.memory_init_cow);
    // A pooled stack goes from tenant to tenant like a memory slot does.
    // Compiled code never reads a stack slot it did not write, so this is
    // defence in depth: should a compiler bug ever let it, what it finds is
    // zeros, not the last tenant's spilled values. The cost is bounded by
    // `run::pool`'s keep-resident size and the batched decommit. `-W
    // async-stack-zeroing=n` turns it off (measured: docs/profile.md).
    config.async_stack_zeroing(settings.pool.stack_zeroing);
    if settings.pool.pooling {
        let pool = pool::config(
            &settings.pool,
            settings
                .max_concurrent_requests
                .saturating_add(settings.max_kept_instances()),
            settings.memory_limit_bytes,
        );
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (func (export "f")))`, assembled by hand.
    const EMPTY_FUNC: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type 0: [] -> []
        0x03, 0x02, 0x01, 0x00, // func 0 has type 0
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f" = func 0
        0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // its body: end
    ];

    #[tokio::test]
    async fn a_pooled_stack_is_zeroed_before_its_next_tenant() {
        let settings = RuntimeSettings {
            max_concurrent_requests: 2,
            memory_limit_bytes: 1 << 20,
            cache_dir: None,
            pool: PoolOptions::default(),
        };
        let engine = build_engine(&settings, false).unwrap();
        let module = wasmtime::Module::new(&engine, EMPTY_FUNC).unwrap();
        // More uses than the pool has stacks: returned stacks wait in the
        // decommit batch, which a full pool flushes.
        for _ in 0..64 {
            let mut store = wasmtime::Store::new(&engine, ());
            store.set_epoch_deadline(1);
            let instance = wasmtime::Instance::new_async(&mut store, &module, &[])
                .await
                .unwrap();
            let f = instance.get_typed_func::<(), ()>(&mut store, "f").unwrap();
            f.call_async(&mut store, ()).await.unwrap();
        }
        // wasmtime counts returned stacks' resident bytes only when it zeroes
        // them (`None` otherwise): the top it zeroed in place, per stack, the
        // rest decommitted.
        let pool = engine.pooling_allocator_metrics().unwrap();
        let resident = pool
            .unused_stack_bytes_resident()
            .expect("stacks are zeroed");
        assert!(
            resident > 0 && resident.is_multiple_of(16 << 10),
            "{resident} bytes: a multiple of the 16 KiB zeroed in place"
        );
    }
}
