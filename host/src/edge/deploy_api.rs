//! The deploy API on the control plane: HTTP and JSON around
//! `crate::deploy` (which owns the rules and the state).
//!
//! ```text
//! GET    /api/servers                          the caller's servers (admins: all)
//! POST   /api/servers            {slug,owner}  create an empty server (admins)
//! GET    /api/servers/{slug}                   one server: versions, status, limits
//! PATCH  /api/servers/{slug}     {status}      active | inactive
//! DELETE /api/servers/{slug}                   delete it (slug reserved for its owner)
//! PUT    /api/servers/{slug}/versions/{v}      deploy a component (application/wasm)
//! DELETE /api/servers/{slug}/versions/{v}      delete one version
//! POST   /api/reload                           re-read the tenants file (admins)
//! GET    /api/servers/{slug}/logs?…            stored entries (`edge::log_query`)
//! ```
//!
//! Authentication is the log stream's: the `session` cookie or a bearer
//! token, and a browser `Origin` must be the host's own or allowed. Every
//! refusal is `{"error": "..."}` with the status saying which kind.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::base::auth::{Sessions, check_origin};
use crate::base::config::Status;
use crate::base::responses::{Body, json_response};
use crate::base::transport::{RequestBody, read_failure_status};
use crate::deploy::{Caller, DeployError, Deployed, Deployments, Why};
use crate::run::tenants::{FILE_DEPLOYER, Source, Tenant};

/// A refusal as the API answers it: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        crate::base::responses::error_response(self.status, &self.message)
    }
}

/// Each kind of refusal of the deploy layer, as an HTTP status.
impl From<DeployError> for ApiError {
    fn from(refused: DeployError) -> Self {
        let status = match refused.why {
            Why::Invalid => StatusCode::BAD_REQUEST,
            Why::Forbidden => StatusCode::FORBIDDEN,
            Why::NotFound => StatusCode::NOT_FOUND,
            Why::Conflict => StatusCode::CONFLICT,
            Why::Unservable => StatusCode::UNPROCESSABLE_ENTITY,
            Why::OverQuota => StatusCode::INSUFFICIENT_STORAGE,
            Why::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, refused.message)
    }
}

/// The largest JSON body (`POST`, `PATCH`).
const MAX_JSON_BYTES: usize = 64 * 1024;

/// Answers a request under `/api/`; `route` is the path after the
/// control plane's root.
pub(crate) async fn handle(
    deployments: &Deployments,
    sessions: &Sessions,
    allowed_origins: &[String],
    max_component_bytes: u64,
    request: Request<RequestBody>,
    route: &str,
) -> Response<Body> {
    let caller = match authenticate(deployments, sessions, allowed_origins, request.headers()) {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    answer(deployments, &caller, max_component_bytes, request, route)
        .await
        .unwrap_or_else(ApiError::into_response)
}

async fn answer(
    deployments: &Deployments,
    caller: &Caller,
    max_component_bytes: u64,
    request: Request<RequestBody>,
    route: &str,
) -> Result<Response<Body>, ApiError> {
    let parts: Vec<&str> = route
        .trim_start_matches("/api/")
        .trim_end_matches('/')
        .split('/')
        .collect();
    let method = request.method().clone();
    Ok(match (&method, parts.as_slice()) {
        (&Method::GET, ["servers"]) => {
            let servers: Vec<Value> = deployments.list(caller).iter().map(|t| view(t)).collect();
            json_response(StatusCode::OK, &json!({ "servers": servers }))
        }
        (&Method::POST, ["servers"]) => {
            let body: CreateServer = read_json(request).await?;
            let tenant = deployments.create(caller, &body.slug, &body.owner).await?;
            json_response(StatusCode::CREATED, &view(&tenant))
        }
        (&Method::GET, ["servers", slug]) => {
            json_response(StatusCode::OK, &view(&*deployments.get(caller, slug)?))
        }
        (&Method::PATCH, ["servers", slug]) => {
            let body: ChangeServer = read_json(request).await?;
            let tenant = deployments.set_status(caller, slug, body.status).await?;
            json_response(StatusCode::OK, &view(&tenant))
        }
        (&Method::DELETE, ["servers", slug]) => {
            deployments.delete(caller, slug).await?;
            json_response(
                StatusCode::OK,
                &json!({ "deleted": slug, "by": caller.user }),
            )
        }
        (&Method::PUT, ["servers", slug, "versions", version]) => {
            let declared = declared_length(request.headers());
            deployments
                .may_deploy(caller, slug, version, declared)
                .await?;
            let wasm = read_component(request, max_component_bytes).await?;
            match deployments.deploy(caller, slug, version, wasm).await? {
                Deployed::Created(tenant) => json_response(
                    StatusCode::CREATED,
                    &json!({ "deployed": version, "server": view(&tenant) }),
                ),
                Deployed::Unchanged(tenant) => json_response(
                    StatusCode::OK,
                    &json!({ "unchanged": version, "server": view(&tenant) }),
                ),
            }
        }
        (&Method::DELETE, ["servers", slug, "versions", version]) => {
            let tenant = deployments.delete_version(caller, slug, version).await?;
            json_response(StatusCode::OK, &view(&tenant))
        }
        (&Method::POST, ["reload"]) => {
            if !caller.admin {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "only admins ([auth] admins) reload the tenants file",
                ));
            }
            let summary = deployments.reload(&caller.user).await.map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("nothing changed: {e:#}"))
            })?;
            json_response(
                StatusCode::OK,
                &json!({
                    "added": summary.added,
                    "changed": summary.changed,
                    "removed": summary.removed,
                    "unchanged": summary.unchanged,
                }),
            )
        }
        (_, ["servers"] | ["servers", _] | ["servers", _, "versions", _] | ["reload"]) => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {route}"),
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {route}"),
            ));
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateServer {
    slug: String,
    owner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeServer {
    status: Status,
}

/// The caller of an API request, or why it is refused.
pub(crate) fn authenticate(
    deployments: &Deployments,
    sessions: &Sessions,
    allowed_origins: &[String],
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    check_origin(headers, allowed_origins)
        .map_err(|why| ApiError::new(StatusCode::FORBIDDEN, why))?;
    let user = sessions
        .authenticate(headers)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    Ok(Caller {
        admin: deployments.is_admin(&user),
        user,
    })
}

/// A server as the API shows it.
fn view(tenant: &Tenant) -> Value {
    let limits = &tenant.capabilities.limits;
    json!({
        "slug": tenant.slug.as_str(),
        "owner": tenant.owner,
        "status": tenant.status.as_str(),
        "source": match tenant.source {
            Source::File(_) => FILE_DEPLOYER,
            Source::Api => "api",
        },
        "versions": tenant.versions.values().map(|d| {
            let mut version = serde_json::to_value(&d.provenance).expect("provenance serializes");
            version["version"] = json!(d.version_label);
            version
        }).collect::<Vec<_>>(),
        "limits": {
            "cpuLimitMs": limits.cpu.as_millis() as u64,
            "memoryLimitMb": limits.memory_bytes >> 20,
            "requestTimeoutMs": limits.wall.as_millis() as u64,
            "maxRequestBodyBytes": limits.body_bytes,
            "maxConcurrent": tenant.capabilities.gate.max_concurrent(),
        },
    })
}

/// What `Content-Length` says, if it says.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A deploy's body: the component's bytes, at most `max` (413 past it,
/// before reading when `Content-Length` says so).
async fn read_component(request: Request<RequestBody>, max: u64) -> Result<Bytes, ApiError> {
    if let Some(kind) = request.headers().get(header::CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default();
        let essence = kind.split(';').next().unwrap_or_default().trim();
        if !matches!(essence, "application/wasm" | "application/octet-stream") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("send the component as application/wasm, not {kind:?}"),
            ));
        }
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a component may have at most {max} bytes ([host] max_component_bytes)"),
        )
    };
    let declared = declared_length(request.headers());
    if declared.is_some_and(|length| length > max) {
        return Err(too_large());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            read_failure_status(&*e, StatusCode::BAD_REQUEST),
            format!("the upload did not complete: {e}"),
        )),
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    request: Request<RequestBody>,
) -> Result<T, ApiError> {
    let bytes = match Limited::new(request.into_body(), MAX_JSON_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(ApiError::new(
                read_failure_status(&*e, StatusCode::BAD_REQUEST),
                format!("cannot read the body (at most {MAX_JSON_BYTES} bytes of JSON): {e}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not the JSON this endpoint takes: {e}"),
        )
    })
}
