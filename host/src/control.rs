//! The host's own endpoints (the "control plane"), served on the bare base
//! domain (or under `/.mctx/` in single-component mode).

use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::dispatch::{Body, error_response, json_response};
use crate::server::Host;

/// State of the control plane.
pub struct ControlPlane {
    started: Instant,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            started: Instant::now(),
        }
    }
}

impl ControlPlane {
    /// Answers a control-plane request; `path` is relative to its root.
    pub async fn handle(
        &self,
        host: &Host,
        request: Request<Incoming>,
        path: &str,
    ) -> Response<Body> {
        let route = path.split('?').next().unwrap_or(path);
        match (request.method(), route) {
            (&Method::GET, "/healthz") => json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "tenants": host.tenants.len(),
                    "uptimeSeconds": self.started.elapsed().as_secs(),
                }),
            ),
            (_, "/healthz") => error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            _ => error_response(StatusCode::NOT_FOUND, &format!("no such endpoint: {route}")),
        }
    }
}
