//! The dispatcher: runs one request in an instance of a tenant's component,
//! with its limits, and turns whatever happened into a response.
//!
//! A request goes through four rooms, in this order ([`Dispatcher::run`]):
//!
//! - `admit.rs`: refused at once (a body declared too large) or given one
//!   of the tenant's slots;
//! - `prepare.rs`: its own [`RequestCapture`](crate::logs::capture::RequestCapture)
//!   for what the guest writes, its own
//!   [`RequestMeter`](crate::run::limits::RequestMeter), its outbound
//!   budget and the report that becomes its request event;
//! - `call.rs`: the guest called in an instance of its own (fresh, or kept
//!   from the version's last request) or in a shared WASIp3 instance, run
//!   to its end and reported; an instance whose request went well is kept;
//! - `answer.rs`: the client's response, from the guest's head or, if it
//!   ended without one, from its [`Outcome`](crate::logs::entry::Outcome).
//!
//! The guest runs in the connection's task until it sends its head, and in
//! a task of its own after that if it is still streaming: the call, not
//! the response, decides the request's outcome.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::base::metrics::Metrics;
use crate::base::refusals::Refusals;
use crate::base::responses::{Body, error_response};
use crate::base::transport::RequestBody;
use crate::logs::entry::RequestMeta;
use crate::logs::sink::LogSink;
use crate::run::body::{BodyFaults, LimitedBody};
use crate::run::outbound::OutboundContext;
use crate::run::runtime::Runtime;
use crate::run::tenants::{Deployment, Tenant};

mod admit;
mod answer;
mod call;
mod prepare;

use admit::admit;
use answer::Answer;
use call::Keep;

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

    /// A request's way through: admitted (or refused), its capture, meter
    /// and report prepared, the guest called (in an instance of its own or
    /// a shared one), and answered with whatever came first, its head or
    /// its end.
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
        let tenant_slot = match admit(tenant, &request, deadline, &self.refusals).await {
            Ok(slot) => slot,
            Err(refused) => return refused,
        };
        let (mut report, serves) = self.prepare(meta, tenant, deployment, &request);
        let (on_response, head) = answer::head_channel(report.status.clone());
        // Counted as the guest reads it: past the limit the guest's read
        // fails and the client gets 413; a body that stalls, 408.
        let faults = Arc::new(BodyFaults::default());
        let request = request.map(|body| LimitedBody::new(body, limits.body_bytes, faults.clone()));
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down");
        };
        let call = match self.call(deployment, capabilities, serves, request, on_response) {
            Ok(call) => call,
            Err(e) => {
                report.done = true;
                return error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("cannot pass this request to the guest: {e}"),
                );
            }
        };
        let answer = Answer {
            meter: report.meter.clone(),
            faults,
            refusals: self.refusals.clone(),
            body_limit: limits.body_bytes,
            disconnected: report.disconnected.clone(),
        };
        let keep = Keep {
            pool: deployment.kept.clone(),
            budget: self.runtime.kept().clone(),
            reuse: limits.reuse,
            max_idle: capabilities.gate.max_concurrent(),
        };
        let guest = call.run(report, deadline, keep, (slot, tenant_slot));
        answer.race(Box::pin(guest.in_current_span()), head).await
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
