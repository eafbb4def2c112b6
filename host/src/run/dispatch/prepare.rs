//! Preparing a request: what its guest will write to (its capture), what
//! measures it (its meter), what it may call (its outbound), and the report
//! that becomes its request event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16};

use http::Request;

use super::Dispatcher;
use crate::base::transport::RequestBody;
use crate::logs::capture::RequestCapture;
use crate::logs::entry::{McpCall, RequestHeaders, RequestMeta};
use crate::run::limits::RequestMeter;
use crate::run::outbound::{Outbound, OutboundCounts};
use crate::run::report::{RequestReport, event_headers};
use crate::run::state::Attributed;
use crate::run::tenants::{Deployment, Tenant};

impl Dispatcher {
    /// The request's report, and what its guest's store serves it with.
    pub(super) fn prepare(
        &self,
        meta: Arc<RequestMeta>,
        tenant: &Tenant,
        deployment: &Deployment,
        request: &Request<RequestBody>,
    ) -> (RequestReport, Attributed) {
        let capabilities = &tenant.capabilities;
        let limits = capabilities.limits;
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
        // Only a watched request's event goes anywhere: copy its headers for it
        // then, and not on every request.
        let headers = if self.sink.wants_headers(&capture.meta().slug) {
            event_headers(request.headers(), capabilities.secrets.values())
        } else {
            RequestHeaders::new()
        };
        let metrics = deployment.metrics.get_or_init(|| {
            Arc::new(
                self.metrics
                    .version(tenant.slug.as_str(), &deployment.version_label),
            )
        });
        let report = RequestReport {
            capture: capture.clone(),
            meter: meter.clone(),
            subrequests,
            metrics: metrics.clone(),
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
        let serves = Attributed {
            capture,
            meter,
            outbound,
        };
        (report, serves)
    }
}
