//! The dispatcher: runs one request in a fresh instance of a tenant's
//! component, with its limits, and turns whatever happened into a response.
//!
//! Each request gets its own [`Store`] (so no state leaks between requests or
//! tenants), its own [`RequestCapture`] for stdout/stderr and its own
//! [`RequestMeter`]. The guest runs in a spawned task, as `wasmtime serve`
//! does, because it may keep running after it has handed back the response
//! head (streaming the body); the task, not the response, decides the
//! request's [`Outcome`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument as _;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use crate::base::metrics::Metrics;
use crate::base::refusals::{Refusal, Refusals};
use crate::base::responses::{Body, busy_response, error_response};
use crate::logs::capture::RequestCapture;
use crate::logs::entry::{RequestHeaders, RequestMeta};
use crate::logs::sink::LogSink;
use crate::run::gate;
use crate::run::limits::{Metered, RequestMeter};
use crate::run::outbound::{Outbound, OutboundContext, OutboundCounts};
use crate::run::report::{RequestReport, event_headers, outcome_response};
use crate::run::runtime::Runtime;
use crate::run::state::RequestState;
use crate::run::tenants::{Deployment, Tenant};

pub(crate) const X_TENANT_SLUG: HeaderName = HeaderName::from_static("x-tenant-slug");
pub(crate) const X_TENANT_VERSION: HeaderName = HeaderName::from_static("x-tenant-version");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Runs requests against tenants' components.
pub(crate) struct Dispatcher {
    runtime: Arc<Runtime>,
    sink: Arc<dyn LogSink>,
    outbound: Arc<OutboundContext>,
    refusals: Arc<Refusals>,
    metrics: Arc<Metrics>,
    /// Bounds the requests in flight to what the instance pool holds; a
    /// request beyond it waits for a slot instead of failing.
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        sink: Arc<dyn LogSink>,
        refusals: Arc<Refusals>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(
            runtime.settings().max_concurrent_requests as usize,
        ));
        Dispatcher {
            runtime,
            sink,
            outbound: Arc::new(OutboundContext::new()),
            refusals,
            metrics,
            slots,
        }
    }

    /// Where the host listens: tenants reach it only through an exact
    /// `allowed_outbound_hosts` entry.
    pub(crate) fn set_own_address(&self, address: std::net::SocketAddr) {
        self.outbound.set_own_address(address);
    }

    /// Requests running now.
    pub(crate) fn in_flight(&self) -> usize {
        self.runtime.settings().max_concurrent_requests as usize - self.slots.available_permits()
    }

    /// Resolves once no guest is running (shutdown). A guest can outlive its
    /// HTTP exchange by a little (the response body is complete before the
    /// guest's task has published its request event), so draining
    /// connections alone would lose the last entries.
    pub(crate) async fn wait_idle(&self) {
        let all = self.runtime.settings().max_concurrent_requests;
        let _ = self.slots.acquire_many(all).await;
    }

    /// Runs `request` in a fresh instance of `deployment`, one of
    /// `tenant`'s. Never fails: every error becomes a response (and, for the
    /// tenant's owner, a log entry).
    pub(crate) async fn dispatch(
        &self,
        tenant: &Tenant,
        deployment: &Deployment,
        mut request: Request<Incoming>,
    ) -> Response<Body> {
        let slug = tenant.slug.as_str();
        let request_id = new_request_id();
        let headers = request.headers_mut();
        for (name, value) in &tenant.capabilities.request_headers {
            headers.insert(name.clone(), value.clone());
        }
        // `insert` replaces every value a client sent: these two are ours.
        headers.insert(
            X_TENANT_SLUG,
            HeaderValue::from_str(slug).expect("slugs are valid header values"),
        );
        headers.insert(
            X_TENANT_VERSION,
            HeaderValue::from_str(&deployment.version_label)
                .expect("versions are valid header values"),
        );
        let span = tracing::info_span!(
            "request",
            slug,
            version = %deployment.version_label,
            request_id = %request_id
        );
        let meta = Arc::new(RequestMeta {
            slug: slug.to_string(),
            version: deployment.version_label.clone(),
            request_id: request_id.clone(),
        });
        let response = self
            .run(meta, tenant, deployment, request)
            .instrument(span)
            .await;
        with_request_id(response, &request_id)
    }

    async fn run(
        &self,
        meta: Arc<RequestMeta>,
        tenant: &Tenant,
        deployment: &Deployment,
        request: Request<Incoming>,
    ) -> Response<Body> {
        let capabilities = &tenant.capabilities;
        let limits = capabilities.limits;
        // The request's wall clock starts now: waiting for a slot counts.
        let deadline = tokio::time::Instant::now() + limits.wall;
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limits.body_bytes) {
            self.refusals.count(Refusal::BodyTooLarge);
            return body_too_large(limits.body_bytes);
        }
        let tenant_slot = match capabilities.gate.enter(deadline).await {
            Ok(slot) => slot,
            Err(closed) => {
                self.refusals.count(Refusal::TenantBusy);
                let message = match closed {
                    gate::Closed::Full {
                        max_concurrent,
                        max_queued,
                    } => format!(
                        "tenant {:?} is running its {max_concurrent} requests at once and {max_queued} \
                         more are waiting; try again shortly",
                        tenant.slug.as_str()
                    ),
                    gate::Closed::Waited => format!(
                        "tenant {:?} had no free slot before this request's time limit ({} ms)",
                        tenant.slug.as_str(),
                        limits.wall.as_millis()
                    ),
                };
                return busy_response(&message);
            }
        };
        let capture = RequestCapture::redacting(
            meta,
            self.sink.clone(),
            capabilities.secrets.values().clone(),
        );
        let meter = Arc::new(RequestMeter::new(limits.cpu, limits.wall));
        let subrequests = Arc::new(OutboundCounts::default());
        let outbound = Outbound::new(
            capabilities.outbound.clone(),
            self.outbound.clone(),
            capture.clone(),
            subrequests.clone(),
        );
        // Only a watched request's event goes anywhere: copy its headers
        // for it then, and not on every request.
        let headers = if self.sink.wants_headers(&capture.meta().slug) {
            event_headers(request.headers(), capabilities.secrets.values())
        } else {
            RequestHeaders::new()
        };
        let mut report = RequestReport {
            capture: capture.clone(),
            meter: meter.clone(),
            subrequests,
            metrics: self.metrics.clone(),
            method: request.method().to_string(),
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            status: Arc::new(AtomicU16::new(0)),
            done: false,
            exception: None,
            headers,
            disconnected: Arc::new(AtomicBool::new(false)),
        };
        let disconnected = report.disconnected.clone();

        let mut store = Store::new(
            self.runtime.engine(),
            RequestState::new(capture, capabilities, meter.clone(), outbound),
        );
        store.limiter(|state| state.limiter());
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().meter().check_cpu() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });

        // The guest hands its response head to this callback; the status is
        // kept for the request event, which is published when the guest
        // finishes (possibly long after, if it streams the body).
        let (response_tx, response_rx) = oneshot::channel();
        let status = report.status.clone();
        let on_response = move |response: Result<Response<_>, _>| {
            let code = response.as_ref().map_or(500, |r| r.status().as_u16());
            status.store(code, Ordering::Relaxed);
            let _ = response_tx.send(response);
        };
        // Counted as the guest reads it: past the limit the guest's read
        // fails and the client gets 413.
        let too_large = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| LimitedBody {
            body,
            read: 0,
            limit: limits.body_bytes,
            too_large: too_large.clone(),
        });
        let scheme = if crate::base::transport::over_tls(&request) {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(scheme, request)
            .and_then(|req| {
                let out = store
                    .data_mut()
                    .http()
                    .new_response_outparam_from_callback(on_response)?;
                Ok((req, out))
            });
        let (guest_request, response_out) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                report.done = true;
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot pass this request to the guest: {e}"),
                );
            }
        };

        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down");
        };
        let pre = deployment.pre.clone();
        let task = tokio::spawn(
            async move {
                let _slots = (slot, tenant_slot);
                let meter = report.meter.clone();
                let guest = Metered::new(meter.clone(), async move {
                    let proxy = pre.instantiate_async(&mut store).await?;
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, guest_request, response_out)
                        .await
                });
                // Past the deadline the guest is dropped mid-call: stopped.
                let result = match tokio::time::timeout_at(deadline, guest).await {
                    Ok(result) => result,
                    Err(_) => {
                        meter.set_wall_exceeded();
                        Err(wasmtime::format_err!("stopped at the wall-clock limit"))
                    }
                };
                report.finish(result)
            }
            .in_current_span(),
        );
        // If the client goes away before the response head, stop the guest.
        let mut abort_guard = AbortOnDrop(Some(task.abort_handle()));

        let response = match response_rx.await {
            Ok(Ok(response)) => {
                let mut response = response.map(|body| body.boxed_unsync());
                response
                    .extensions_mut()
                    .insert(crate::base::transport::BodyWatch(disconnected));
                response
            }
            Ok(Err(code)) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the tenant answered with an error: {code:?}"),
            ),
            // The guest returned or died without sending a response.
            Err(_) => match task.await {
                Ok(outcome) => outcome_response(outcome, &meter),
                Err(e) => {
                    tracing::error!("request task failed: {e}");
                    error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error in the host",
                    )
                }
            },
        };
        // From here on the guest may still be streaming the body: let it.
        abort_guard.0 = None;
        if too_large.load(Ordering::Relaxed) {
            self.refusals.count(Refusal::BodyTooLarge);
            return body_too_large(limits.body_bytes);
        }
        response
    }
}

/// Aborts a task when dropped, unless its handle was taken out first.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

/// 413, naming the limit.
fn body_too_large(limit: u64) -> Response<Body> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than this tenant accepts ({limit} bytes)"),
    )
}

/// A request body that fails once more than `limit` bytes have come,
/// without buffering anything; `too_large` tells the dispatcher.
struct LimitedBody {
    body: Incoming,
    read: u64,
    limit: u64,
    too_large: Arc<AtomicBool>,
}

impl http_body::Body for LimitedBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.read += data.len() as u64;
            if self.read > self.limit {
                self.too_large.store(true, Ordering::Relaxed);
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.read)),
                )));
            }
        }
        std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn with_request_id(mut response: Response<Body>, request_id: &str) -> Response<Body> {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

/// A request id: 16 hex digits, random so that ids from several hosts (or
/// restarts) do not collide.
pub(crate) fn new_request_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}
