//! Several requests in one WASIp3 instance at once
//! (`instance_concurrent_reuse = N`, `wasmtime serve
//! --max-instance-concurrent-reuse-count N`).
//!
//! A shared instance is a task of its own that owns the store and runs its
//! event loop ([`Store::run_concurrent`]) for as long as the instance lives.
//! Requests come to it over a channel; each becomes one call of the guest's
//! `handle` export, which the component model runs as a task of its own,
//! and the calls run interleaved as the guest's async code lets them.
//!
//! What stays each request's, and what becomes the instance's:
//! - **log lines, outbound calls, key-value refusals** stay each request's,
//!   exactly: every host call is made by some guest task, the root of its
//!   async call stack is the `handle` call it serves, and the store's call
//!   hook points the state at that request before the host function runs
//!   (`RequestState::act_for`). This holds for the body a guest writes after
//!   returning its response too: that work runs in the same task.
//! - **memory** is the instance's: the limit bounds the one linear memory
//!   its requests share.
//! - **CPU**: many requests' code runs in one poll of the event loop, so
//!   the instance's polls are timed as one, and at each epoch tick the time
//!   since the last is charged to the request whose code is running
//!   (`RequestState::charge_cpu_at_tick`). A request computing past its
//!   limit is stopped and named; one done between two ticks is charged
//!   little or nothing, so a request event's CPU time is a sample here.
//! - **a trap, a limit or a request's wall-clock limit stops the
//!   instance**, and with it every request it is serving: each ends with
//!   the reason, naming the request that caused it. Only requests of the
//!   same tenant version that share that instance are affected.
//!
//! A request is served once its response body has been sent (or the client
//! has gone): lines its task writes after that still carry its request id,
//! but arrive after its request event.

mod instance;
mod worker;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::Response;
use tokio::sync::oneshot;
use tracing::Instrument as _;
use wasmtime::{CallHook, Store, UpdateDeadline};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

use crate::base::responses::Body;
use crate::run::body::LimitedBody;
use crate::run::budget::Budget;
use crate::run::limits::{Limits, RequestMeter};
use crate::run::state::{Attributed, RequestState};
use instance::Instance;
use worker::{Worker, root_task};

/// Where a shared instance hands a request's response head (or the guest's
/// error).
pub(crate) type OnResponse = Box<dyn FnOnce(Result<Response<Body>, ErrorCode>) + Send>;

/// One request for a shared instance.
pub(crate) struct Job {
    pub(crate) request: http::Request<LimitedBody>,
    pub(crate) scheme: http::uri::Scheme,
    /// Its capture, meter and outbound calls.
    pub(crate) serves: Attributed,
    pub(crate) on_response: OnResponse,
}

/// A job on its way to an instance, with the channel that says it was
/// served, or the error that ended it (dropped unsent when the instance
/// stopped for another reason).
struct Queued {
    job: Job,
    served: Served,
}

type Served = oneshot::Sender<wasmtime::Result<()>>;

/// A deployment's shared instances.
#[derive(Default)]
pub(crate) struct SharedInstances {
    live: Mutex<Vec<Arc<Instance>>>,
}

/// A request handed to a shared instance.
pub(crate) struct Submitted {
    instance: Arc<Instance>,
    served: oneshot::Receiver<wasmtime::Result<()>>,
}

impl Submitted {
    /// Resolves once the request has been served, or with why not: its
    /// instance stopped, or `deadline` passed. A request cannot be stopped
    /// alone (its task shares the instance's state), so passing its
    /// deadline stops the instance.
    pub(crate) async fn wait(
        self,
        deadline: tokio::time::Instant,
        meter: &RequestMeter,
        request_id: &str,
    ) -> wasmtime::Result<()> {
        match tokio::time::timeout_at(deadline, self.served).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(wasmtime::format_err!("{}", self.instance.why().await)),
            Err(_) => {
                meter.set_wall_exceeded();
                self.instance.stop(format!(
                    "stopped with its shared instance: request {request_id} ran past its \
                     wall-clock limit"
                ));
                Err(wasmtime::format_err!("stopped at the wall-clock limit"))
            }
        }
    }
}

impl SharedInstances {
    /// Hands `job` to one of these instances with room for it, else to a
    /// new one made by `new_store` (given the instance's own meter) from
    /// `pre`. A new instance is kept for more requests only while the
    /// host's `budget` of kept instances allows.
    pub(crate) fn submit(
        &self,
        job: Job,
        limits: Limits,
        budget: &Arc<Budget>,
        pre: &ServicePre<RequestState>,
        new_store: impl FnOnce(Arc<RequestMeter>) -> Store<RequestState>,
    ) -> Submitted {
        let (served, served_rx) = oneshot::channel();
        let mut queued = Queued { job, served };
        let mut live = crate::base::sync::lock(&self.live);
        live.retain(|instance| !instance.is_closed());
        // Which instances to try, in order: an idle one; else, while there
        // are fewer instances than cores, none (a new one: an instance runs
        // on one thread at a time, so one instance taking every request
        // would leave the other cores idle); else the least busy.
        live.sort_by_key(|instance| instance.in_flight());
        let spread =
            live.first().is_none_or(|idle| idle.in_flight() > 0) && live.len() < parallelism();
        for instance in live.iter().filter(|_| !spread) {
            if !instance.admit(limits.concurrent_reuse) {
                continue;
            }
            match instance.send(queued) {
                None => {
                    return Submitted {
                        instance: instance.clone(),
                        served: served_rx,
                    };
                }
                // Its task has ended: it takes nothing more.
                Some(back) => queued = back,
            }
        }
        let held = budget.hold();
        let mut limits = limits;
        if held.is_none() {
            // No room to keep it: it serves this request alone.
            limits.reuse = 1;
        }
        let (instance, receiver) = Instance::new(limits.reuse);
        let instance = Arc::new(instance);
        if limits.reuse > 1 {
            live.push(instance.clone());
        }
        drop(live);
        let meter = Arc::new(RequestMeter::new(limits.cpu, Duration::MAX));
        let store = new_store(meter.clone());
        let meta = queued.job.serves.capture.meta();
        let span = tracing::debug_span!(
            "shared instance",
            slug = %meta.slug,
            version = %meta.version,
        );
        let worker = Worker {
            instance: instance.clone(),
            limits,
            meter,
            _held: held,
        };
        tracing::debug!(parent: &span, kept = limits.reuse > 1, "shared instance started");
        tokio::spawn(
            worker
                .run(store, pre.clone(), queued, receiver)
                .instrument(span),
        );
        Submitted {
            instance,
            served: served_rx,
        }
    }
}

/// The threads that run guests: how many shared instances of one version
/// may run side by side before requests are stacked into busy ones.
fn parallelism() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A store for a shared instance: its memory limited as a whole, its epoch
/// callback charging CPU time to the request computing (and stopping it
/// past its limit), and the call hook that points its state at the request
/// each host call, and each entry into guest code, serves.
pub(crate) fn shared_store(
    engine: &wasmtime::Engine,
    mut state: RequestState,
    meter: Arc<RequestMeter>,
) -> Store<RequestState> {
    state.share(meter);
    let mut store = Store::new(engine, state);
    store.limiter(|state| state.limiter());
    store.epoch_deadline_callback(|mut ctx| {
        let computing = root_task(&mut ctx);
        Ok(if ctx.data_mut().charge_cpu_at_tick(computing) {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store.call_hook(|mut ctx, hook| {
        if let CallHook::CallingHost | CallHook::CallingWasm = hook
            && let Some(task) = root_task(&mut ctx)
        {
            ctx.data_mut().act_for(task);
        }
        Ok(())
    });
    store.set_epoch_deadline(1);
    store
}
