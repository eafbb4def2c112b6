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

use crate::base::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::Response;
use http_body_util::BodyExt as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::Instrument as _;
use wasmtime::component::Accessor;
use wasmtime::{CallHook, Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

use crate::base::responses::Body;
use crate::run::body::LimitedBody;
use crate::run::budget::{Budget, Held};
use crate::run::limits::{Limits, Metered, RequestMeter};
use crate::run::p3;
use crate::run::state::{Attributed, RequestState};

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

/// The handle on one shared instance's task.
struct Instance {
    jobs: mpsc::UnboundedSender<Queued>,
    /// Requests in flight (low 32 bits) and taken in all (high 32), or
    /// [`CLOSED`] once it takes no more.
    load: AtomicU64,
    /// Set (with `why`) to stop the instance from outside.
    stop: Notify,
    /// Requests it takes in all.
    reuse: u32,
    /// Told when it has taken all it takes and served them: its task ends.
    spent: Notify,
    /// Why it stopped.
    why: OnceLock<String>,
    /// Told once `why` is set.
    ended: Notify,
}

const CLOSED: u64 = u64::MAX;
const ONE_IN_FLIGHT: u64 = 1;
const ONE_TAKEN: u64 = 1 << 32;
const IN_FLIGHT: u64 = (1 << 32) - 1;

impl Instance {
    /// Takes one more request if it has room: fewer than `concurrent` in
    /// flight and fewer than its `reuse` in all.
    fn admit(&self, concurrent: u32) -> bool {
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                let (in_flight, taken) = (load & IN_FLIGHT, load >> 32);
                (load != CLOSED
                    && in_flight < u64::from(concurrent)
                    && taken < u64::from(self.reuse))
                .then(|| load + ONE_IN_FLIGHT + ONE_TAKEN)
            })
            .is_ok()
    }

    /// Requests in flight now (0 when closed).
    fn in_flight(&self) -> u64 {
        let load = self.load.load(Ordering::Acquire);
        if load == CLOSED { 0 } else { load & IN_FLIGHT }
    }

    /// One request fewer in flight (none once closed: a closed instance
    /// keeps [`CLOSED`]).
    fn served_one(&self) {
        let before = self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load != CLOSED && load & IN_FLIGHT > 0).then(|| load - ONE_IN_FLIGHT)
            });
        if let Ok(load) = before
            && load & IN_FLIGHT == 1
            && load >> 32 >= u64::from(self.reuse)
        {
            self.spent.notify_one();
        }
    }

    /// Closes it to new requests if none is in flight (nor on its way):
    /// true when closed.
    fn close_if_idle(&self) -> bool {
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load & IN_FLIGHT == 0).then_some(CLOSED)
            })
            .is_ok()
            || self.is_closed()
    }

    /// Closes it, whatever is in flight (it is stopping).
    fn close_now(&self) {
        self.load.store(CLOSED, Ordering::Release);
    }

    fn is_closed(&self) -> bool {
        self.load.load(Ordering::Acquire) == CLOSED
    }

    fn spent(&self) -> bool {
        let load = self.load.load(Ordering::Acquire);
        load != CLOSED && load >> 32 >= u64::from(self.reuse)
    }

    /// Why it stopped, once the worker has said.
    async fn why(&self) -> String {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(why) = self.why.get() {
                return why.clone();
            }
            ended.await;
        }
    }

    fn say_why(&self, why: String) {
        let _ = self.why.set(why);
        self.ended.notify_waiters();
    }
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
                self.instance.say_why(format!(
                    "stopped with its shared instance: request {request_id} ran past its \
                     wall-clock limit"
                ));
                self.instance.stop.notify_one();
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
            match instance.jobs.send(queued) {
                Ok(()) => {
                    return Submitted {
                        instance: instance.clone(),
                        served: served_rx,
                    };
                }
                // Its task has ended: it takes nothing more.
                Err(mpsc::error::SendError(back)) => queued = back,
            }
        }
        let held = budget.hold();
        let mut limits = limits;
        if held.is_none() {
            // No room to keep it: it serves this request alone.
            limits.reuse = 1;
        }
        let (jobs, receiver) = mpsc::unbounded_channel();
        let instance = Arc::new(Instance {
            jobs,
            load: AtomicU64::new(ONE_IN_FLIGHT + ONE_TAKEN),
            stop: Notify::new(),
            reuse: limits.reuse,
            spent: Notify::new(),
            why: OnceLock::new(),
            ended: Notify::new(),
        });
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

/// The `handle` call that the code running now serves.
fn root_task(
    ctx: &mut wasmtime::StoreContextMut<'_, RequestState>,
) -> Option<wasmtime::component::GuestTaskId> {
    ctx.async_call_stack().ok().and_then(|stack| stack.last())
}

/// One shared instance's task.
struct Worker {
    instance: Arc<Instance>,
    limits: Limits,
    /// Times the instance's polls, for the CPU limit.
    meter: Arc<RequestMeter>,
    /// Its place among the host's kept instances, if it has one.
    _held: Option<Held>,
}

/// Requests taken and not yet served, by request id: shared by the worker
/// and the response bodies, which say when their request is served.
type Waiting = Arc<Mutex<HashMap<String, Taken>>>;

struct Taken {
    /// Says it was served, or how it failed.
    served: Served,
    /// Marked if the instance dies of its memory limit.
    meter: Arc<RequestMeter>,
}

impl Worker {
    async fn run(
        self,
        mut store: Store<RequestState>,
        pre: ServicePre<RequestState>,
        first: Queued,
        mut jobs: mpsc::UnboundedReceiver<Queued>,
    ) {
        let waiting = Waiting::default();
        let result = {
            let serving = Metered::new(
                self.meter.clone(),
                self.serve(&mut store, &pre, first, &mut jobs, &waiting),
            );
            let mut serving = std::pin::pin!(serving);
            let result = tokio::select! {
                biased;
                () = self.instance.stop.notified() => Err(wasmtime::format_err!("stopped")),
                result = &mut serving => result,
            };
            // Closed before the event loop goes: a body that ends now
            // knows it ended with the instance.
            self.instance.close_now();
            result
        };
        // Stopped from outside, the reason is already set.
        if let Err(e) = result
            && self.instance.why.get().is_none()
        {
            tracing::debug!("shared instance stopped: {e:#}");
            // The request whose code was running when it failed.
            let culprit = store
                .data()
                .acting_for()
                .map(|serves| serves.capture.meta().request_id.clone());
            let why = self.why(&store, &waiting, &e, culprit.as_deref());
            // That request gets the error itself: its trap, its stack.
            if let Some(taken) = culprit.and_then(|id| lock(&waiting).remove(&id)) {
                let _ = taken.served.send(Err(e));
            }
            self.instance.say_why(why);
        }
        self.instance
            .say_why("its shared instance ended".to_string());
        // The requests it was serving learn why.
        lock(&waiting).clear();
        drop(jobs);
    }

    /// Why the requests it was serving did not end well.
    fn why(
        &self,
        store: &Store<RequestState>,
        waiting: &Waiting,
        error: &wasmtime::Error,
        culprit: Option<&str>,
    ) -> String {
        if self.meter.memory_exceeded() {
            for taken in lock(waiting).values() {
                taken.meter.set_memory_exceeded();
            }
            return format!(
                "stopped with its shared instance, which went past its memory limit ({} MiB)",
                self.limits.memory_bytes >> 20
            );
        }
        if let Some(culprit) = store.data().served().find(|s| s.meter.cpu_exceeded()) {
            return format!(
                "stopped with its shared instance: request {} exceeded its CPU limit ({} ms)",
                culprit.capture.meta().request_id,
                self.limits.cpu.as_millis()
            );
        }
        match culprit {
            Some(id) => {
                format!("stopped with its shared instance when request {id} failed: {error:#}")
            }
            None => format!("stopped with its shared instance: {error:#}"),
        }
    }

    /// Instantiates, then serves requests until the instance is spent, has
    /// waited `idle` for one, or fails.
    async fn serve(
        &self,
        store: &mut Store<RequestState>,
        pre: &ServicePre<RequestState>,
        first: Queued,
        jobs: &mut mpsc::UnboundedReceiver<Queued>,
        waiting: &Waiting,
    ) -> wasmtime::Result<()> {
        let service = pre.instantiate_async(&mut *store).await?;
        let instance = &self.instance;
        let limits = self.limits;
        store
            .run_concurrent(async |accessor| -> wasmtime::Result<()> {
                let mut running = FuturesUnordered::new();
                let mut arrived = Some(first);
                loop {
                    if let Some(Queued { job, served }) = arrived.take() {
                        let request_id = job.serves.capture.meta().request_id.clone();
                        let meter = job.serves.meter.clone();
                        lock(waiting).insert(request_id.clone(), Taken { served, meter });
                        let done = Done {
                            request_id,
                            waiting: waiting.clone(),
                            instance: instance.clone(),
                        };
                        running.push(serve_one(accessor, &service, job, done));
                    }
                    if running.is_empty() && instance.spent() && instance.close_if_idle() {
                        break;
                    }
                    tokio::select! {
                        queued = jobs.recv() => match queued {
                            Some(queued) => arrived = Some(queued),
                            None => break,
                        },
                        // Answered: its body says when it is served.
                        // A failed call: the request gets the error itself
                        // (its trap, its stack); the others, what it did
                        // to their instance.
                        Some((request_id, result)) = running.next(), if !running.is_empty() => {
                            if let Err(e) = result {
                                let why = format!("request {request_id}: {e:#}");
                                if let Some(taken) = lock(waiting).remove(&request_id) {
                                    let _ = taken.served.send(Err(e));
                                }
                                return Err(wasmtime::format_err!("{why}"));
                            }
                        }
                        // Its last body has ended: checked above.
                        () = instance.spent.notified(), if running.is_empty() => {}
                        () = tokio::time::sleep(limits.idle), if running.is_empty() => {
                            if instance.close_if_idle() {
                                break;
                            }
                        }
                    }
                }
                // What the guest still does for requests already served
                // (post-return work), within one request's time limit.
                let _ = tokio::time::timeout(
                    limits.wall,
                    std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)),
                )
                .await;
                Ok(())
            })
            .await?
    }
}

/// Serves one request in the shared instance: calls `handle` as a task the
/// request adopts and hands over the response, whose body (or, without
/// one, this) says when the request is `done`. A trap is the instance's
/// end; the request's id comes back with it.
async fn serve_one(
    accessor: &Accessor<RequestState>,
    service: &Service,
    job: Job,
    done: Done,
) -> (String, wasmtime::Result<()>) {
    let request_id = done.request_id.clone();
    (request_id, serve_call(accessor, service, job, done).await)
}

async fn serve_call(
    accessor: &Accessor<RequestState>,
    service: &Service,
    job: Job,
    done: Done,
) -> wasmtime::Result<()> {
    let Job {
        request,
        scheme,
        serves,
        on_response,
    } = job;
    let handler = service.wasi_http_handler();
    let (call, request_io) = accessor.with(|mut access| -> wasmtime::Result<_> {
        let state = access.get();
        let (request, request_io) = p3::guest_request(state.http().hooks, request, scheme);
        let request = state.http().table.push(request)?;
        let call = handler
            .func_handle()
            .start_call_concurrent(&mut access, (request,))?;
        access.get().adopt(call.task(), serves);
        Ok((call, request_io))
    })?;
    let (answer,) = handler
        .func_handle()
        .finish_call_concurrent(accessor, call)
        .await?;
    match answer {
        Ok(response) => {
            let response = accessor.with(|mut access| -> wasmtime::Result<_> {
                let response = access.get().http().table.delete(response)?;
                response.into_http(&mut access, request_io)
            })?;
            let (parts, mut body) = response.into_parts();
            // What the guest writes before it waits for anything goes with
            // the head: the client gets head and body in one write (and
            // one wake-up) instead of a head alone and the rest after it.
            // Its writer task runs in this event loop, so one yield lets
            // it run; a guest that waits (a stream) is not waited for.
            let mut ready = std::collections::VecDeque::new();
            let mut ended = false;
            loop {
                tokio::select! {
                    biased;
                    frame = body.frame() => match frame {
                        Some(Ok(frame)) => ready.push_back(Ok(frame)),
                        Some(Err(e)) => {
                            ready.push_back(Err(e));
                            break;
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    },
                    () = tokio::task::yield_now() => break,
                }
            }
            let body = Sent {
                ready,
                body: (!ended).then_some(body),
                done: Some(done),
            };
            on_response(Ok(Response::from_parts(parts, body.boxed_unsync())));
        }
        Err(code) => {
            on_response(Err(code));
            done.finish();
        }
    }
    Ok(())
}

/// Says that a request is done: served, unless its instance has stopped
/// (then the request learns why from the instance). Dropped without
/// [`Done::finish`], when its call is dropped with the dying instance, it
/// says nothing: the instance does.
struct Done {
    request_id: String,
    waiting: Waiting,
    instance: Arc<Instance>,
}

impl Done {
    fn finish(self) {
        let taken = lock(&self.waiting).remove(&self.request_id);
        if self.instance.is_closed() {
            return;
        }
        self.instance.served_one();
        if let Some(taken) = taken {
            let _ = taken.served.send(Ok(()));
        }
    }
}

/// A response body: the frames already written, then the rest (`None`
/// when the guest had ended it); its request is done when it has ended,
/// failed or been dropped.
struct Sent<B: http_body::Body> {
    ready: std::collections::VecDeque<Result<http_body::Frame<B::Data>, B::Error>>,
    body: Option<B>,
    done: Option<Done>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Sent<B>
where
    B::Data: Unpin,
    B::Error: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = match this.ready.pop_front() {
            Some(frame) => Some(frame),
            None => match &mut this.body {
                Some(body) => std::task::ready!(std::pin::Pin::new(body).poll_frame(cx)),
                None => None,
            },
        };
        if !matches!(frame, Some(Ok(_)))
            && let Some(done) = this.done.take()
        {
            done.finish();
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.body.as_ref().is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let buffered: u64 = self
            .ready
            .iter()
            .filter_map(|frame| frame.as_ref().ok()?.data_ref())
            .map(|data| bytes::Buf::remaining(data) as u64)
            .sum();
        match &self.body {
            None => http_body::SizeHint::with_exact(buffered),
            Some(body) => {
                let rest = body.size_hint();
                let mut hint = http_body::SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

/// Sent or not, a body dropped (the exchange is over, or the client left)
/// is its request done.
impl<B: http_body::Body> Drop for Sent<B> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(reuse: u32) -> Instance {
        Instance {
            jobs: mpsc::unbounded_channel().0,
            load: AtomicU64::new(0),
            stop: Notify::new(),
            reuse,
            spent: Notify::new(),
            why: OnceLock::new(),
            ended: Notify::new(),
        }
    }

    #[test]
    fn an_instance_takes_what_it_has_room_for_and_closes_only_when_idle() {
        let shared = instance(3);
        // Two at once…
        assert!(shared.admit(2) && shared.admit(2));
        assert!(!shared.admit(2), "a third at once");
        assert!(!shared.close_if_idle(), "closed with requests in flight");
        shared.served_one();
        // …and three in all.
        assert!(shared.admit(2));
        assert!(!shared.admit(2), "a fourth in all");
        assert!(shared.spent());
        shared.served_one();
        assert_eq!(shared.in_flight(), 1);
        shared.served_one();
        assert_eq!(shared.in_flight(), 0);
        assert!(shared.close_if_idle() && shared.is_closed());
        // Closed stays closed: a late body's end changes nothing.
        shared.served_one();
        assert!(shared.is_closed() && !shared.admit(2));
    }

    #[tokio::test]
    async fn a_spent_instance_is_told_when_its_last_request_is_served() {
        let shared = instance(1);
        assert!(shared.admit(4));
        let told = shared.spent.notified();
        shared.served_one();
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .expect("told");
    }

    #[tokio::test]
    async fn a_waiting_request_learns_why_once_it_is_said() {
        let shared = Arc::new(instance(1));
        let waiting = tokio::spawn({
            let shared = shared.clone();
            async move { shared.why().await }
        });
        shared.say_why("because".to_string());
        assert_eq!(waiting.await.unwrap(), "because");
    }
}
