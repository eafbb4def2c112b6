//! Calling the guest: in an instance of its own (fresh, or kept from the
//! version's previous request) or in a shared WASIp3 instance, and the
//! store each call starts with.

use super::*;

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
pub(super) fn error_as_text<E: std::fmt::Debug>(
    on_response: impl FnOnce(Result<Response<Body>, String>),
) -> impl FnOnce(Result<Response<Body>, E>) {
    move |response| on_response(response.map_err(|code| format!("{code:?}")))
}

/// The scheme a WASIp3 guest is told.
pub(super) fn p3_scheme(https: bool) -> http::uri::Scheme {
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

/// What happened first while the guest ran: it sent its response head, or
/// it ended.
pub(super) enum First<H> {
    Head(Result<H, oneshot::error::RecvError>),
    Ended(Outcome),
}

impl Dispatcher {
    /// Hands the request to one of `deployment`'s shared WASIp3 instances
    /// (`run::shared`), or to a new one whose store starts with this
    /// request's state.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn shared_call(
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
    pub(super) fn own_call(
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
