//! Admission: what is refused before anything is set up for a request — a
//! body declared too large, a tenant with no free slot.

use http::Request;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::base::refusals::{Refusal, Refusals};
use crate::base::responses::{Body, busy_response};
use crate::base::transport::RequestBody;
use crate::run::body::body_too_large;
use crate::run::gate;
use crate::run::tenants::Tenant;

/// One of `tenant`'s slots for `request`, waited for until `deadline`; or
/// the response that refuses it (counted in `refusals`).
pub(super) async fn admit(
    tenant: &Tenant,
    request: &Request<RequestBody>,
    deadline: Instant,
    refusals: &Refusals,
) -> Result<OwnedSemaphorePermit, http::Response<Body>> {
    let limits = tenant.capabilities.limits;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.body_bytes) {
        refusals.count(Refusal::BodyTooLarge);
        return Err(body_too_large(limits.body_bytes));
    }
    tenant
        .capabilities
        .gate
        .enter(deadline)
        .await
        .map_err(|closed| {
            refusals.count(Refusal::TenantBusy);
            let slug = tenant.slug.as_str();
            busy_response(&match closed {
                gate::Closed::Full {
                    max_concurrent,
                    max_queued,
                } => format!(
                    "tenant {slug:?} is running its {max_concurrent} requests at once and \
                     {max_queued} more are waiting; try again shortly"
                ),
                gate::Closed::Waited => format!(
                    "tenant {slug:?} had no free slot before this request's time limit ({} ms)",
                    limits.wall.as_millis()
                ),
            })
        })
}
