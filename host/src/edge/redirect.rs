//! `[host] http_redirect_addr`: a plain-HTTP listener that answers every
//! request with `308 Permanent Redirect` to the same path on the https
//! origin. It never serves a tenant or the control plane, so nothing —
//! no response body, no session cookie — is sent in clear. Its connections
//! count against the front door's budget like any other.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::base::responses::{Body, error_response, full_body};
use crate::edge::routing::{Route, route};
use crate::edge::server::FrontDoor;

/// Binds the redirect listener (at build time, so that it is there as soon
/// as the host says it listens).
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("[host] http_redirect_addr: cannot listen on {address}"))
}

/// Serves redirects to `https_port` on `listener` until aborted.
pub(crate) fn spawn(
    listener: TcpListener,
    https_port: u16,
    door: Arc<FrontDoor>,
) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "redirecting plain HTTP to https");
    }
    let task = async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let Ok(ticket) = door.connections.admit(peer.ip()) else {
                continue; // dropped: a redirect is not worth a slot
            };
            let door = door.clone();
            let timeout = door.http.header_read_timeout;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let door = door.clone();
                    async move { Ok::<_, Infallible>(redirect(&door, &request, https_port)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(ticket);
            });
        }
    };
    tokio::spawn(task.instrument(tracing::info_span!("redirect")))
}

/// `308` to `https://{host}[:port]{path}` for a host this front door
/// serves; `421` for any other (no open redirect), `400` without one.
fn redirect(door: &FrontDoor, request: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match route(&door.mode, authority, path) {
        Route::ForeignHost { host } => {
            return error_response(
                StatusCode::MISDIRECTED_REQUEST,
                &format!("this host does not serve {host:?}"),
            );
        }
        Route::MissingHost => {
            return error_response(StatusCode::BAD_REQUEST, "the request has no Host header");
        }
        Route::Tenant { .. } | Route::ControlPlane { .. } => {}
    }
    let authority = authority.unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        // `[::1]:80` or `name:80`, not a bare IPv6 address.
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            host
        }
        _ => authority,
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{host}{port}{path}");
    let mut response = Response::new(full_body(""));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => error_response(StatusCode::BAD_REQUEST, "cannot redirect this request"),
    }
}
