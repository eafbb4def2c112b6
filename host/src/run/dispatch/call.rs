//! Calling the guest: in an instance of its own (fresh, or kept from the
//! version's previous request) or in a shared WASIp3 instance, the store
//! each call starts with, and the call run to its end and reported.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::Either;
use http::{Request, Response};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::Dispatcher;
use super::answer::Head;
use crate::base::responses::Body;
use crate::logs::entry::Outcome;
use crate::run::body::LimitedBody;
use crate::run::budget::Budget;
use crate::run::capabilities::Capabilities;
use crate::run::instances::InstancePool;
use crate::run::limits::Metered;
use crate::run::p3;
use crate::run::report::RequestReport;
use crate::run::runtime::{Guest, GuestPre};
use crate::run::shared::{self, Job, Submitted};
use crate::run::state::{Attributed, RequestState};
use crate::run::tenants::Deployment;

/// A guest running in an instance of its own: the instance back when the
/// call went well.
pub(super) trait OwnCall:
    Future<Output = wasmtime::Result<(Store<RequestState>, Guest)>> + Send + 'static
{
}

impl<F> OwnCall for F where
    F: Future<Output = wasmtime::Result<(Store<RequestState>, Guest)>> + Send + 'static
{
}

/// `on_response` for a guest whose error codes are `E` (WASIp2's or
/// WASIp3's): the response head, or the code as text.
fn error_as_text<E: std::fmt::Debug>(
    on_response: impl FnOnce(Result<Response<Body>, String>),
) -> impl FnOnce(Result<Response<Body>, E>) {
    move |response| on_response(response.map_err(|code| format!("{code:?}")))
}

/// The scheme a WASIp3 guest is told.
fn p3_scheme(https: bool) -> http::uri::Scheme {
    if https {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    }
}

/// What runs a request's guest: its own instance (fresh, or kept and
/// having served `served` requests), or a shared one.
pub(super) enum Call<F> {
    Own { call: F, served: u32 },
    Shared(Submitted),
}

/// Where an instance whose request went well goes to serve another.
pub(super) struct Keep {
    pub(super) pool: Arc<InstancePool>,
    /// The host-wide count of kept instances.
    pub(super) budget: Arc<Budget>,
    /// Requests an instance may serve in all.
    pub(super) reuse: u32,
    /// Instances the version may keep waiting.
    pub(super) max_idle: usize,
}

impl<F: OwnCall> Call<F> {
    /// Runs the guest to its end (stopped at `deadline`), reports the
    /// request and keeps the instance if it may serve another; `slots` are
    /// held until then.
    pub(super) async fn run(
        self,
        report: RequestReport,
        deadline: Instant,
        keep: Keep,
        slots: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) -> Outcome {
        let _slots = slots;
        let meter = report.meter.clone();
        let (result, instance) = match self {
            Call::Own { call, served } => {
                let guest = Metered::new(meter.clone(), call);
                // Past the deadline the guest is dropped mid-call: stopped.
                let result = match tokio::time::timeout_at(deadline, guest).await {
                    Ok(result) => result,
                    Err(_) => {
                        meter.set_wall_exceeded();
                        Err(wasmtime::format_err!("stopped at the wall-clock limit"))
                    }
                };
                match result {
                    Ok(instance) => (Ok(()), Some((instance, served))),
                    Err(e) => (Err(e), None),
                }
            }
            Call::Shared(submitted) => {
                let request_id = report.capture.meta().request_id.clone();
                (submitted.wait(deadline, &meter, &request_id).await, None)
            }
        };
        report.finish(result, |outcome| {
            // Only an instance whose guest returned serves another: after
            // a trap, a limit or a cancel there is no instance here. One
            // that reported an exception it caught itself (a JS Worker's
            // uncaught error, answered 500 by its runtime) returned intact,
            // and is kept as a Worker's isolate is; one whose client went
            // away mid-body is dropped.
            if let Some(((store, guest), served)) = instance
                && matches!(outcome, Outcome::Ok | Outcome::Exception)
            {
                keep.pool.put(
                    &keep.budget,
                    store,
                    guest,
                    served + 1,
                    keep.reuse,
                    keep.max_idle,
                );
            }
        })
    }
}

impl Dispatcher {
    /// The call that runs `request`: in a shared WASIp3 instance for a p3
    /// tenant that lets an instance serve several requests at once, else
    /// in an instance of its own; `Err` when the request cannot be handed
    /// to the guest.
    pub(super) fn call(
        &self,
        deployment: &Deployment,
        capabilities: &Capabilities,
        serves: Attributed,
        request: Request<LimitedBody>,
        on_response: impl FnOnce(Head) + Send + Sync + 'static,
    ) -> Result<Call<impl OwnCall>, String> {
        let https = crate::base::transport::over_tls(&request);
        let limits = capabilities.limits;
        match &deployment.pre {
            GuestPre::P3(pre) if limits.concurrent_reuse > 1 && limits.reuse > 1 => {
                Ok(Call::Shared(self.shared_call(
                    deployment,
                    pre,
                    capabilities,
                    serves,
                    request,
                    p3_scheme(https),
                    on_response,
                )))
            }
            _ => Self::own_call(
                deployment,
                capabilities,
                serves,
                request,
                https,
                on_response,
            ),
        }
    }

    /// Hands the request to one of `deployment`'s shared WASIp3 instances
    /// (`run::shared`), or to a new one whose store starts with this
    /// request's state.
    #[allow(clippy::too_many_arguments)]
    fn shared_call(
        &self,
        deployment: &Deployment,
        pre: &ServicePre<RequestState>,
        capabilities: &Capabilities,
        serves: Attributed,
        request: Request<LimitedBody>,
        scheme: http::uri::Scheme,
        on_response: impl FnOnce(Result<Response<Body>, String>) + Send + 'static,
    ) -> Submitted {
        let job = Job {
            request,
            scheme,
            serves: serves.clone(),
            on_response: Box::new(error_as_text(on_response)),
        };
        let engine = pre.engine();
        deployment.shared.submit(
            job,
            capabilities.limits,
            self.runtime.kept(),
            pre,
            |instance| {
                shared::shared_store(engine, RequestState::new(serves, capabilities), instance)
            },
        )
    }

    /// The request in an instance of its own: one kept from the version's
    /// previous request if the tenant reuses them, else a fresh one. Gives
    /// the future that runs the guest (and returns the instance, to be kept
    /// if the request ends well) and how many requests the instance had
    /// served; `Err` when the request cannot be handed to the guest.
    fn own_call(
        deployment: &Deployment,
        capabilities: &Capabilities,
        serves: Attributed,
        request: Request<LimitedBody>,
        https: bool,
        on_response: impl FnOnce(Result<Response<Body>, String>) + Send + Sync + 'static,
    ) -> Result<Call<impl OwnCall>, String> {
        let limits = capabilities.limits;
        let kept = (limits.reuse > 1)
            .then(|| deployment.kept.take(limits.idle))
            .flatten();
        let (mut store, kept, served) = match kept {
            Some(warm) => {
                let mut store = warm.store;
                store.data_mut().begin(serves);
                (store, Some(warm.guest), warm.served)
            }
            None => (
                Self::new_store(
                    deployment.pre.engine(),
                    RequestState::new(serves, capabilities),
                ),
                None,
                0,
            ),
        };
        store.set_epoch_deadline(1);
        let call = match deployment.pre.clone() {
            GuestPre::P2(pre) => {
                let scheme = if https { Scheme::Https } else { Scheme::Http };
                let guest_request = store
                    .data_mut()
                    .http()
                    .new_incoming_request(scheme, request)
                    .map_err(|e| e.to_string())?;
                let response_out = store
                    .data_mut()
                    .http()
                    .new_response_outparam_from_callback(error_as_text(on_response))
                    .map_err(|e| e.to_string())?;
                Either::Left(async move {
                    let proxy = match kept {
                        Some(Guest::P2(proxy)) => proxy,
                        _ => pre.instantiate_async(&mut store).await?,
                    };
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, guest_request, response_out)
                        .await?;
                    Ok((store, Guest::P2(proxy)))
                })
            }
            GuestPre::P3(pre) => {
                let scheme = p3_scheme(https);
                Either::Right(async move {
                    let on_response = error_as_text(on_response);
                    let kept = match kept {
                        Some(Guest::P3(service)) => Some(service),
                        _ => None,
                    };
                    let (store, service) =
                        p3::serve(store, pre, kept, request, scheme, on_response).await?;
                    Ok((store, Guest::P3(service)))
                })
            }
        };
        Ok(Call::Own { call, served })
    }

    /// A store for a fresh instance: its memory limiter and the epoch
    /// callback that enforces the CPU limit of whichever request it serves.
    pub(super) fn new_store(engine: &wasmtime::Engine, state: RequestState) -> Store<RequestState> {
        let mut store = Store::new(engine, state);
        store.limiter(|state| state.limiter());
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().meter().check_cpu() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store
    }
}
