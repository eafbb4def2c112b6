//! `GET /api/servers/{slug}/logs?…`: a page of a retained tenant's stored
//! entries, newest first, for its owner or an admin (`logs::store::query`
//! has the parameters and the answer's shape).
//!
//! Authentication is the deploy API's (the `session` cookie or a bearer
//! token; a browser `Origin` must be the host's own or allowed). Someone
//! else's server is refused as in the rest of the API (403); one whose logs
//! are not kept says so (409) rather than answer an empty page that would
//! read as "nothing happened".

use http::{Method, Request, Response, StatusCode};

use crate::base::auth::Sessions;
use crate::base::responses::{Body, error_response, full_body};
use crate::base::transport::RequestBody;
use crate::deploy::Deployments;
use crate::edge::deploy_api;
use crate::logs::store::{LogStore, Query};

/// The slug, when `route` is `/api/servers/{slug}/logs`.
pub(crate) fn route_slug(route: &str) -> Option<&str> {
    let slug = route
        .strip_prefix("/api/servers/")?
        .trim_end_matches('/')
        .strip_suffix("/logs")?;
    (!slug.is_empty() && !slug.contains('/')).then_some(slug)
}

pub(crate) async fn handle(
    deployments: &Deployments,
    sessions: &Sessions,
    allowed_origins: &[String],
    store: Option<&LogStore>,
    request: Request<RequestBody>,
    slug: &str,
) -> Response<Body> {
    if request.method() != Method::GET {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let caller =
        match deploy_api::authenticate(deployments, sessions, allowed_origins, request.headers()) {
            Ok(caller) => caller,
            Err(refused) => return refused.into_response(),
        };
    let tenant = match deployments.get(&caller, slug) {
        Ok(tenant) => tenant,
        Err(refused) => return deploy_api::ApiError::from(refused).into_response(),
    };
    let Some(store) = store else {
        return error_response(
            StatusCode::CONFLICT,
            "this host keeps no logs: in single-component mode it has no state directory; \
             serve with --config (and [tenants.logs] retain) to keep a tenant's",
        );
    };
    if !store.retains(slug) {
        return error_response(
            StatusCode::CONFLICT,
            &format!(
                "{slug}'s logs are not kept: ask the host's operator to grant it retention \
                 ([tenants.logs] retain in the tenants file, or [host] log_retain)"
            ),
        );
    }
    let query = match Query::parse(
        request.uri().query().unwrap_or(""),
        crate::logs::entry::now_ms(),
    ) {
        Ok(query) => query,
        Err(why) => return error_response(StatusCode::BAD_REQUEST, &why),
    };
    match store.query(tenant.slug.as_str(), query).await {
        Ok(page) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(full_body(page.json()))
            .expect("a valid response"),
        Err(e) => {
            tracing::warn!(slug, error = %format!("{e:#}"), "log query failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the log store could not be read (the host's log says why)",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_logs_route_names_a_slug() {
        assert_eq!(route_slug("/api/servers/hello/logs"), Some("hello"));
        assert_eq!(route_slug("/api/servers/hello/logs/"), Some("hello"));
        for other in [
            "/api/servers/hello",
            "/api/servers//logs",
            "/api/servers/a/b/logs",
            "/api/servers/hello/logsx",
        ] {
            assert_eq!(route_slug(other), None, "{other}");
        }
    }
}
