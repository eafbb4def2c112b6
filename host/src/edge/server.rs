//! The HTTP front door: accepts connections and routes each request to a
//! tenant or to the control plane. The ordered shutdown that follows the
//! accept loop is the app's (`crate::app`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::base::config::Status;
use crate::base::responses::{Body, error_response};
use crate::edge::control::ControlPlane;
use crate::edge::routing::{Route, RoutingMode, route};
use crate::run::dispatch::Dispatcher;
use crate::run::tenants::TenantRegistry;

/// Everything a request needs: routing, tenants, the dispatcher and the
/// control plane. Shared by every connection.
pub(crate) struct FrontDoor {
    pub(crate) mode: RoutingMode,
    pub(crate) tenants: Arc<TenantRegistry>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) control: ControlPlane,
}

impl FrontDoor {
    /// Answers one request. Never fails: errors are responses.
    pub(crate) async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        match route(&self.mode, authority.as_deref(), &path) {
            Route::Tenant {
                slug,
                version,
                path,
            } => {
                let Some(tenant) = self.tenants.get(&slug) else {
                    return error_response(
                        StatusCode::NOT_FOUND,
                        &format!("unknown tenant {slug:?}"),
                    );
                };
                if tenant.status == Status::Inactive {
                    return error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("tenant {slug:?} is inactive"),
                    );
                }
                let Some(deployment) = tenant.select(&version) else {
                    return error_response(
                        StatusCode::NOT_FOUND,
                        &format!("tenant {slug:?} has no version matching {version}"),
                    );
                };
                let request = match with_path(request, &path) {
                    Ok(request) => request,
                    Err(e) => {
                        return error_response(
                            StatusCode::BAD_REQUEST,
                            &format!("invalid path: {e}"),
                        );
                    }
                };
                self.dispatcher.dispatch(tenant, deployment, request).await
            }
            Route::ControlPlane { path } => {
                self.control.handle(&self.tenants, request, &path).await
            }
            Route::ForeignHost { host } => error_response(
                StatusCode::MISDIRECTED_REQUEST,
                &format!(
                    "this host does not serve {host:?}: use the base domain or one of its subdomains"
                ),
            ),
            Route::MissingHost => {
                error_response(StatusCode::BAD_REQUEST, "the request has no Host header")
            }
        }
    }
}

/// Replaces a request's path (and query) with the routed one, keeping the
/// scheme and authority of an absolute-form URI.
fn with_path(mut request: Request<Incoming>, path: &str) -> Result<Request<Incoming>, http::Error> {
    if request.uri().path_and_query().map(|p| p.as_str()) != Some(path) {
        let mut parts = request.uri().clone().into_parts();
        parts.path_and_query = Some(path.parse()?);
        *request.uri_mut() = http::Uri::from_parts(parts)?;
    }
    Ok(request)
}

/// Serves connections from `listener` until `shutdown` resolves; then stops
/// accepting and asks every connection to close after the response in
/// progress. Returns the connections still open, for the caller to wait on.
pub(crate) async fn accept_until(
    listener: TcpListener,
    door: Arc<FrontDoor>,
    shutdown: impl Future<Output = ()>,
) -> TaskTracker {
    let connections = TaskTracker::new();
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have rather than exiting.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("connection", %peer);
        connections
            .spawn(serve_connection(stream, peer, door.clone(), stopped.clone()).instrument(span));
    }
    drop(listener);
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining requests in flight"
    );
    let _ = stop.send(true);
    connections.close();
    connections
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    door: Arc<FrontDoor>,
    mut stopping: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request| {
        let door = door.clone();
        async move { Ok::<_, Infallible>(door.handle(request).await) }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.changed() => {
            // Finish the response in progress, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}
