//! What one request's [`Store`](wasmtime::Store) holds: the WASI and
//! wasi:http contexts (stdout and stderr wired to the request's capture),
//! the resource table, and the request's limits.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::logs::capture::RequestCapture;
use crate::logs::entry::Stream;
use crate::logs::stdio::{CaptureStream, OutputTarget};
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
    /// In an instance serving several requests at once: which request each
    /// guest task serves.
    sharing: Option<Box<Sharing>>,
}

/// What a host call acts for: the request whose lines it captures, whose
/// limits it counts against, whose outbound calls it makes.
#[derive(Clone)]
pub(crate) struct Attributed {
    pub(crate) capture: Arc<RequestCapture>,
    pub(crate) meter: Arc<RequestMeter>,
    pub(crate) outbound: Outbound,
}

/// The requests of an instance that serves several at once (`run::shared`).
///
/// Each request is one call of the guest's `handle` export, which the
/// component model runs as a task of its own; whatever the guest does for
/// that request, on its way to the response or writing the body after it,
/// runs in that task or in tasks it started. So the root of the async call
/// stack at a host call names the request exactly, and the store's call
/// hook points the state at it before the host function runs.
struct Sharing {
    by_task: HashMap<GuestTaskId, Attributed>,
    /// The task the state points at now.
    current: Option<GuestTaskId>,
    /// The instance's CPU time charged to requests so far.
    charged: std::time::Duration,
    /// The instance's own meter: its polls, whose time is charged at each
    /// tick to the request computing then, and its memory (the limit is on
    /// the instance, whichever request grew it).
    instance: Arc<RequestMeter>,
}

impl RequestState {
    /// The state of the request `serves` names (its stdout and stderr go
    /// to its capture), within its tenant's `capabilities`: its environment
    /// (and secrets), its memory limit, its outbound rules. The context
    /// grants no files and no sockets.
    pub(crate) fn new(serves: Attributed, capabilities: &Capabilities) -> Self {
        let Attributed {
            capture,
            meter,
            outbound,
        } = serves;
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
            sharing: None,
        }
    }

    /// Makes this the state of an instance that serves several requests at
    /// once, metered by `instance`.
    pub(crate) fn share(&mut self, instance: Arc<RequestMeter>) {
        self.limiter.set_meter(instance.clone());
        self.sharing = Some(Box::new(Sharing {
            by_task: HashMap::new(),
            current: None,
            charged: std::time::Duration::ZERO,
            instance,
        }));
    }

    /// Records that guest task `task` serves the request `serves`.
    pub(crate) fn adopt(&mut self, task: GuestTaskId, serves: Attributed) {
        if let Some(sharing) = &mut self.sharing {
            // A task id can be a finished task's, reused: point afresh.
            if sharing.current == Some(task) {
                sharing.current = None;
            }
            sharing.by_task.insert(task, serves);
        }
    }

    /// Points the state at the request guest task `task` serves (from the
    /// store's call hook, before each host call and each entry into guest
    /// code). A task no request adopted (none is known to exist) leaves it
    /// where it was.
    pub(crate) fn act_for(&mut self, task: GuestTaskId) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        if sharing.current == Some(task) {
            return;
        }
        if let Some(serves) = sharing.by_task.get(&task).cloned() {
            sharing.current = Some(task);
            self.point_at(serves);
        }
    }

    /// From the epoch callback of a shared instance, whose meter times all
    /// its polls: the CPU time since the last tick is charged to the
    /// request whose code runs now (`task`, else the one last entered);
    /// true once that request is past its CPU limit. Sampled at ticks, so
    /// a request that computes for long is charged what it uses, and one
    /// that is done in microseconds is charged little or nothing.
    pub(crate) fn charge_cpu_at_tick(&mut self, task: Option<GuestTaskId>) -> bool {
        let Some(sharing) = &mut self.sharing else {
            return self.meter.check_cpu();
        };
        let used = sharing.instance.at_tick();
        let spent = used.saturating_sub(sharing.charged);
        sharing.charged = used;
        let computing = task
            .filter(|task| sharing.by_task.contains_key(task))
            .or(sharing.current);
        match computing.and_then(|task| sharing.by_task.get(&task)) {
            Some(serves) => {
                serves.meter.charge(spent);
                serves.meter.check_cpu()
            }
            None => false,
        }
    }

    /// The request the guest code running (or last run) serves.
    pub(crate) fn acting_for(&self) -> Option<&Attributed> {
        let sharing = self.sharing.as_ref()?;
        sharing.by_task.get(&sharing.current?)
    }

    /// The requests this shared instance has served, for when it ends.
    pub(crate) fn served(&self) -> impl Iterator<Item = &Attributed> {
        self.sharing.iter().flat_map(|s| s.by_task.values())
    }

    /// Points a kept instance's state at the next request it serves: its
    /// output, its limits' meter, its outbound calls. What the guest keeps
    /// in its own memory stays (that is what reuse is); nothing of the
    /// previous request's host side does.
    pub(crate) fn begin(&mut self, serves: Attributed) {
        self.limiter.set_meter(serves.meter.clone());
        self.point_at(serves);
    }

    /// Output, CPU meter and outbound calls become `serves`'s (the memory
    /// limiter is the caller's to point: a shared instance keeps its own).
    fn point_at(&mut self, serves: Attributed) {
        self.output.store(serves.capture);
        self.meter = serves.meter;
        self.outbound = serves.outbound;
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
