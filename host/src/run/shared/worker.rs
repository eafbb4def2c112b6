//! One shared instance's task: it takes the queued requests, calls
//! `handle` for each as a task of the instance, hands each response over
//! and says when the request is done, and closes the instance when it is
//! spent, idle or broken.

use super::instance::Instance;
use super::{Job, Queued, Served};
use crate::base::sync::lock;
use crate::run::budget::Held;
use crate::run::limits::{Limits, Metered, RequestMeter};
use crate::run::p3;
use crate::run::state::RequestState;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use http::Response;
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use wasmtime::Store;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

/// The `handle` call that the code running now serves.
pub(super) fn root_task(
    ctx: &mut wasmtime::StoreContextMut<'_, RequestState>,
) -> Option<wasmtime::component::GuestTaskId> {
    ctx.async_call_stack().ok().and_then(|stack| stack.last())
}

/// One shared instance's task.
pub(super) struct Worker {
    pub(super) instance: Arc<Instance>,
    pub(super) limits: Limits,
    /// Times the instance's polls, for the CPU limit.
    pub(super) meter: Arc<RequestMeter>,
    /// Its place among the host's kept instances, if it has one.
    pub(super) _held: Option<Held>,
}

/// Requests taken and not yet served, by request id: shared by the worker
/// and the response bodies, which say when their request is served.
pub(super) type Waiting = Arc<Mutex<HashMap<String, Taken>>>;

pub(super) struct Taken {
    /// Says it was served, or how it failed.
    served: Served,
    /// Marked if the instance dies of its memory limit.
    meter: Arc<RequestMeter>,
}

impl Worker {
    pub(super) async fn run(
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
                () = self.instance.stopped() => Err(wasmtime::format_err!("stopped")),
                result = &mut serving => result,
            };
            // Closed before the event loop goes: a body that ends now
            // knows it ended with the instance.
            self.instance.close_now();
            result
        };
        // Stopped from outside, the reason is already set.
        if let Err(e) = result
            && !self.instance.has_said_why()
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
    pub(super) fn why(
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
    pub(super) async fn serve(
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
                        () = instance.until_spent(), if running.is_empty() => {}
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
pub(super) async fn serve_one(
    accessor: &Accessor<RequestState>,
    service: &Service,
    job: Job,
    done: Done,
) -> (String, wasmtime::Result<()>) {
    let request_id = done.request_id.clone();
    (request_id, serve_call(accessor, service, job, done).await)
}

pub(super) async fn serve_call(
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
pub(super) struct Done {
    request_id: String,
    waiting: Waiting,
    instance: Arc<Instance>,
}

impl Done {
    pub(super) fn finish(self) {
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
pub(super) struct Sent<B: http_body::Body> {
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
