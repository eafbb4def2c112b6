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

use futures_util::FutureExt as _;
use futures_util::future::Either;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use tokio::sync::{Semaphore, oneshot};
use tracing::Instrument as _;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use crate::base::metrics::Metrics;
use crate::base::refusals::{Refusal, Refusals};
use crate::base::responses::{Body, busy_response, error_response};
use crate::base::transport::RequestBody;
use crate::logs::capture::RequestCapture;
use crate::logs::entry::{McpCall, Outcome, RequestHeaders, RequestMeta};
use crate::logs::sink::LogSink;
use crate::run::body::{BodyFaults, LimitedBody, body_too_large};
use crate::run::capabilities::Capabilities;
use crate::run::gate;
use crate::run::limits::{Metered, RequestMeter};
use crate::run::outbound::{Outbound, OutboundContext, OutboundCounts};
use crate::run::p3;
use crate::run::report::{RequestReport, event_headers, outcome_response};
use crate::run::runtime::{Guest, GuestPre, Runtime};
use crate::run::shared::{self, Job, Submitted};
use crate::run::state::{Attributed, RequestState};
use crate::run::tenants::{Deployment, Tenant};

mod call;

use call::{Call, First, p3_scheme};

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

    /// One of the addresses the host listens on: tenants reach it only
    /// through an exact `allowed_outbound_hosts` entry.
    pub(crate) fn add_own_address(&self, address: std::net::SocketAddr) {
        self.outbound.add_own_address(address);
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
        mut request: Request<RequestBody>,
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
        // At debug level: an enabled span is formatted for every request
        // (its fields kept as text), measured at about 2 % of a reused
        // instance's throughput. `RUST_LOG=mctx_host=debug` turns it on.
        let span = tracing::debug_span!(
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
        request: Request<RequestBody>,
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
            metrics: deployment
                .metrics
                .get_or_init(|| {
                    Arc::new(
                        self.metrics
                            .version(tenant.slug.as_str(), &deployment.version_label),
                    )
                })
                .clone(),
            method: request.method().to_string(),
            path: request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            status: Arc::new(AtomicU16::new(0)),
            done: false,
            exception: None,
            mcp: McpCall::from_headers(request.headers()),
            headers,
            disconnected: Arc::new(AtomicBool::new(false)),
        };
        let disconnected = report.disconnected.clone();

        // The guest hands its response head to this callback; the status is
        // kept for the request event, which is published when the guest
        // finishes (possibly long after, if it streams the body).
        let (response_tx, mut response_rx) = oneshot::channel();
        let status = report.status.clone();
        let on_response = move |response: Result<Response<Body>, String>| {
            let code = response.as_ref().map_or(500, |r| r.status().as_u16());
            status.store(code, Ordering::Relaxed);
            let _ = response_tx.send(response);
        };
        // Counted as the guest reads it: past the limit the guest's read
        // fails and the client gets 413; a body that stalls, 408.
        let faults = Arc::new(BodyFaults::default());
        let request = request.map(|body| LimitedBody::new(body, limits.body_bytes, faults.clone()));
        let https = crate::base::transport::over_tls(&request);

        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down");
        };
        let serves = Attributed {
            capture,
            meter: meter.clone(),
            outbound,
        };
        let call = match &deployment.pre {
            // A p3 tenant that lets an instance serve several requests at
            // once: to one of its version's shared instances.
            GuestPre::P3(pre) if limits.concurrent_reuse > 1 && limits.reuse > 1 => {
                Call::Shared(self.shared_call(
                    deployment,
                    pre,
                    capabilities,
                    serves,
                    request,
                    p3_scheme(https),
                    on_response,
                ))
            }
            _ => match Self::own_call(
                deployment,
                capabilities,
                serves,
                request,
                https,
                on_response,
            ) {
                Ok(call) => call,
                Err(e) => {
                    report.done = true;
                    return error_response(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot pass this request to the guest: {e}"),
                    );
                }
            },
        };

        let pool = deployment.kept.clone();
        let budget = self.runtime.kept().clone();
        let (reuse, max_idle) = (limits.reuse, capabilities.gate.max_concurrent());
        let mut guest = Box::pin(
            async move {
                let _slots = (slot, tenant_slot);
                let meter = report.meter.clone();
                let (result, instance) = match call {
                    Call::Own { call, served } => {
                        let guest = Metered::new(meter.clone(), call);
                        // Past the deadline the guest is dropped mid-call:
                        // stopped.
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
                    // Only an instance whose request went well serves
                    // another: after a trap, a limit or a cancel it is
                    // dropped here.
                    if let Some(((store, guest), served)) = instance
                        && outcome == Outcome::Ok
                    {
                        pool.put(&budget, store, guest, served + 1, reuse, max_idle);
                    }
                })
            }
            .in_current_span(),
        );
        // The guest runs here, in the connection's task, until it sends its
        // response head: no task to spawn and no other thread to wake for
        // most requests, whose guests are done by then. A guest still
        // running after its head (streaming a body) is handed to a task of
        // its own. If the client goes away before the head, this future is
        // dropped, and the guest with it: stopped, reported `canceled`.
        let first = tokio::select! {
            biased;
            head = &mut response_rx => First::Head(head),
            outcome = &mut guest => First::Ended(outcome),
        };
        let head = match first {
            First::Head(Ok(head)) => {
                // Answered: a guest still running (streaming its body) goes
                // on in a task of its own.
                if guest.as_mut().now_or_never().is_none() {
                    tokio::spawn(guest);
                }
                head
            }
            First::Ended(outcome) => match response_rx.try_recv() {
                Ok(head) => head,
                Err(_) => {
                    let response = outcome_response(outcome, &meter);
                    return faults.finish(response, &self.refusals, limits.body_bytes);
                }
            },
            // Dropped unsent: the guest is ending (or died) without an answer.
            First::Head(Err(_)) => {
                let response = outcome_response(guest.await, &meter);
                return faults.finish(response, &self.refusals, limits.body_bytes);
            }
        };
        let response = match head {
            Ok(response) => {
                let mut response = response.map(|body| body.boxed_unsync());
                response
                    .extensions_mut()
                    .insert(crate::base::transport::BodyWatch(disconnected));
                response
            }
            Err(code) => error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("the tenant answered with an error: {code}"),
            ),
        };
        faults.finish(response, &self.refusals, limits.body_bytes)
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
