//! The host's own endpoints (the "control plane"), served on the bare base
//! domain (or under `/.mctx/` in single-component mode).

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::base::refusals::Refusals;
use crate::base::responses::{Body, error_response, json_response};
use crate::base::transport::RequestBody;
use crate::deploy::Deployments;
use crate::edge::connections::Connections;
use crate::edge::dashboard::Dashboard;
use crate::edge::log_stream::LogStreams;
use crate::edge::{deploy_api, log_query};
use crate::logs::store::LogStore;

/// State of the control plane.
pub(crate) struct ControlPlane {
    started: Instant,
    /// Where the control plane is mounted: `""`, or `/.mctx` in
    /// single-component mode. Links in the dashboard start with it.
    base: String,
    pub(crate) streams: LogStreams,
    pub(crate) deployments: Arc<Deployments>,
    /// `[host] max_component_bytes`: the largest deploy.
    max_component_bytes: u64,
    /// Retained tenants' entries, when the host keeps any.
    store: Option<Arc<LogStore>>,
    connections: Arc<Connections>,
    refusals: Arc<Refusals>,
}

/// What the control plane is built from.
pub(crate) struct ControlConfig {
    pub(crate) streams: LogStreams,
    pub(crate) deployments: Arc<Deployments>,
    pub(crate) max_component_bytes: u64,
    /// `""`, or `/.mctx` in single-component mode.
    pub(crate) base: String,
    pub(crate) store: Option<Arc<LogStore>>,
    pub(crate) connections: Arc<Connections>,
    pub(crate) refusals: Arc<Refusals>,
}

impl ControlPlane {
    pub(crate) fn new(config: ControlConfig) -> Self {
        ControlPlane {
            started: Instant::now(),
            base: config.base,
            streams: config.streams,
            deployments: config.deployments,
            max_component_bytes: config.max_component_bytes,
            store: config.store,
            connections: config.connections,
            refusals: config.refusals,
        }
    }

    /// Answers a control-plane request; `path` is relative to its root.
    pub(crate) async fn handle(&self, request: Request<RequestBody>, path: &str) -> Response<Body> {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        if let Some(slug) = log_query::route_slug(route) {
            return log_query::handle(
                &self.deployments,
                &self.streams.sessions,
                &self.streams.allowed_origins,
                self.store.as_deref(),
                request,
                slug,
            )
            .await;
        }
        if route.starts_with("/api/") {
            return deploy_api::handle(
                &self.deployments,
                &self.streams.sessions,
                &self.streams.allowed_origins,
                self.max_component_bytes,
                request,
                route,
            )
            .await;
        }
        let tenants = self.deployments.live().snapshot();
        let tenants = &*tenants;
        if let Some(slug) = route.strip_prefix("/log-stream/") {
            if request.method() != Method::GET {
                return error_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET (a WebSocket upgrade)",
                );
            }
            return self
                .streams
                .handle(self.deployments.live(), request, slug, query)
                .await;
        }
        match (request.method(), route) {
            (&Method::GET, "/healthz") => json_response(
                StatusCode::OK,
                &json!({
                    "status": "ok",
                    "tenants": tenants.len(),
                    "logHubs": self.streams.hub.active_slugs(),
                    "uptimeSeconds": self.started.elapsed().as_secs(),
                    "cluster": self.streams.cluster.as_ref().map(|c| c.status()),
                    "connections": self.connections.open(),
                    "refused": self.refusals.totals(),
                }),
            ),
            (_, "/healthz") => error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
            _ => {
                let dashboard = Dashboard {
                    base: &self.base,
                    sessions: &self.streams.sessions,
                    tenants,
                };
                match dashboard.handle(request, route).await {
                    Some(response) => response,
                    None => {
                        error_response(StatusCode::NOT_FOUND, &format!("no such endpoint: {route}"))
                    }
                }
            }
        }
    }
}
