//! Serving a WASIp3 component (`wasi:http/service@0.3`): one request in
//! one fresh instance, with the same store, limits and capture as WASIp2.
//!
//! What differs is who drives the guest. A p2 guest writes its response
//! body into a host channel, so once it has handed over its response the
//! host can stream the body without the store. A p3 guest's `handle`
//! returns the response while its body is still being written by guest
//! tasks that run only inside the store's event loop
//! ([`Store::run_concurrent`]): so the loop runs until the guest has no
//! task left (body written, or the client gone and its writes failing),
//! and only then is the request over and its event published.
//!
//! Here an instance serves one request at a time, which keeps every line
//! the guest writes attributed to the request that wrote it, exactly as for
//! p2: a tenant that reuses instances (`instance_reuse`) gets them back one
//! after another. A tenant granted `instance_concurrent_reuse` has its
//! requests served several at once by `run::shared` instead.

use bytes::Bytes;
use http::Response;
use wasmtime::Store;
use wasmtime_wasi_http::p3::Request as GuestRequest;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};
use wasmtime_wasi_http::{FieldMap, WasiHttpHooks, WasiHttpView};

use crate::base::responses::Body;
use crate::run::state::RequestState;

/// Runs `request` in `kept` (an instance that served an earlier request of
/// this version) or else a fresh instance of `pre`, hands the response head
/// (or the guest's error) to `on_response`, and returns the instance once
/// the guest has finished everything it started for this request.
pub(crate) async fn serve<B>(
    mut store: Store<RequestState>,
    pre: ServicePre<RequestState>,
    kept: Option<Service>,
    request: http::Request<B>,
    scheme: http::uri::Scheme,
    on_response: impl FnOnce(Result<Response<Body>, ErrorCode>) + Send + 'static,
) -> wasmtime::Result<(Store<RequestState>, Service)>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let service = match kept {
        Some(service) => service,
        None => pre.instantiate_async(&mut store).await?,
    };
    store
        .run_concurrent(async |accessor| -> wasmtime::Result<()> {
            let (request, request_io) = accessor
                .with(|mut access| guest_request(access.get().http().hooks, request, scheme));
            match service.handle(accessor, request).await? {
                Ok(response) => {
                    let response =
                        accessor.with(|mut access| response.into_http(&mut access, request_io))?;
                    on_response(Ok(response));
                }
                Err(code) => on_response(Err(code)),
            }
            // The body is written by the guest's own tasks, which run only
            // while this loop does.
            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            Ok(())
        })
        .await??;
    Ok((store, service))
}

/// `request` as the guest sees it, and the future that feeds it its body.
pub(crate) fn guest_request<B>(
    hooks: &mut dyn WasiHttpHooks,
    request: http::Request<B>,
    scheme: http::uri::Scheme,
) -> (
    GuestRequest,
    impl Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send + 'static + use<B>,
)
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let (parts, body) = request.into_parts();
    // As the p2 bindings do: the authority from the URI, else `Host`.
    let authority = parts.uri.authority().cloned().or_else(|| {
        parts
            .headers
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse().ok())
    });
    let path = parts.uri.path_and_query().cloned();
    let headers = FieldMap::new_immutable(hooks, parts.headers);
    GuestRequest::new(
        parts.method,
        Some(scheme),
        authority,
        path,
        headers,
        None,
        body,
    )
}
