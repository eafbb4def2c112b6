//! What one request's [`Store`](wasmtime::Store) holds: the WASI and
//! wasi:http contexts (stdout and stderr wired to the request's capture),
//! the resource table, and the request's limits.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::logs::capture::{CaptureStream, OutputTarget, RequestCapture};
use crate::logs::entry::Stream;
use crate::run::capabilities::Capabilities;
use crate::run::keyvalue::TenantStore;
use crate::run::limits::{MemoryLimiter, RequestMeter};
use crate::run::outbound::Outbound;

/// The state of one request's store.
pub(crate) struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    meter: Arc<RequestMeter>,
    /// Where stdout and stderr go: the capture of the request being served.
    output: Arc<OutputTarget>,
    /// Every outbound HTTP call goes through here (`run::outbound`).
    outbound: Outbound,
    /// The tenant's key-value store, when its table grants one.
    keyvalue: Option<Arc<TenantStore>>,
}

impl RequestState {
    /// The state of a request whose stdout and stderr go to `capture`,
    /// within its tenant's `capabilities`: its environment (and secrets),
    /// its memory limit, its outbound rules. The context grants no files
    /// and no sockets.
    pub(crate) fn new(
        capture: Arc<RequestCapture>,
        capabilities: &Capabilities,
        meter: Arc<RequestMeter>,
        outbound: Outbound,
    ) -> Self {
        let output = Arc::new(OutputTarget::new(capture));
        let mut wasi = WasiCtx::builder();
        wasi.stdout(CaptureStream::to(&output, Stream::Stdout))
            .stderr(CaptureStream::to(&output, Stream::Stderr));
        if !capabilities.env.is_empty() {
            wasi.envs(&capabilities.env);
        }
        for (host, guest) in &capabilities.dirs {
            // Checked at start; a directory gone since leaves the guest
            // without it rather than failing the request.
            if let Err(e) = wasi.preopened_dir(host, guest, FsPerms::ReadOnly) {
                tracing::warn!(dir = %host.display(), "cannot open --dir: {e:#}");
            }
        }
        RequestState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(capabilities.limits.memory_bytes, meter.clone()),
            meter,
            output,
            outbound,
            keyvalue: capabilities.keyvalue.clone(),
        }
    }

    /// Points a kept instance's state at the next request it serves: its
    /// output, its limits' meter, its outbound calls. What the guest keeps
    /// in its own memory stays (that is what reuse is); nothing of the
    /// previous request's host side does.
    pub(crate) fn begin(
        &mut self,
        capture: Arc<RequestCapture>,
        meter: Arc<RequestMeter>,
        outbound: Outbound,
    ) {
        self.output.store(capture);
        self.limiter.set_meter(meter.clone());
        self.meter = meter;
        self.outbound = outbound;
    }

    pub(crate) fn capture(&self) -> arc_swap::Guard<Arc<RequestCapture>> {
        self.output.load()
    }

    pub(crate) fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    pub(crate) fn meter(&self) -> &RequestMeter {
        &self.meter
    }

    pub(crate) fn keyvalue(&self) -> Option<&Arc<TenantStore>> {
        self.keyvalue.as_ref()
    }

    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
