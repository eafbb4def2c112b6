//! The HTTP front door: accepts connections and routes each request to a
//! tenant or to the control plane. The ordered shutdown that follows the
//! accept loop is the app's (`crate::app`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::base::config::Status;
use crate::base::refusals::{Refusal, Refusals};
use crate::base::responses::{Body, busy_response, error_response};
use crate::base::transport::{OverTls, RequestBody};
use crate::edge::boundary;
use crate::edge::busy_body::BusyBody;
use crate::edge::connections::{Connections, Refused, Ticket};
use crate::edge::control::ControlPlane;
use crate::edge::routing::{Route, RoutingMode, route};
use crate::edge::tls::{ALPN_H2, Tls};
use crate::run::dispatch::Dispatcher;
use crate::run::tenants::LiveTenants;

/// Everything a request needs: routing, tenants, the dispatcher and the
/// control plane. Shared by every connection.
pub(crate) struct FrontDoor {
    pub(crate) mode: RoutingMode,
    /// The current tenants; a deploy swaps them while requests run.
    pub(crate) tenants: Arc<LiveTenants>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) control: ControlPlane,
    pub(crate) connections: Arc<Connections>,
    pub(crate) refusals: Arc<Refusals>,
    pub(crate) http: HttpLimits,
    /// Set when the front door speaks TLS (`[host] tls_cert`/`tls_key`).
    pub(crate) tls: Option<Arc<Tls>>,
    /// `Strict-Transport-Security` on every response over TLS.
    pub(crate) hsts: bool,
}

/// How much a client may take of a connection (`[host]`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpLimits {
    /// The time a client has to send a request head, from when the
    /// connection is ready for one: after connecting and after each
    /// response (so an idle keep-alive connection is closed after it too).
    pub(crate) header_read_timeout: Duration,
    /// How long a request body may send nothing ([`RequestBody`]).
    pub(crate) body_read_timeout: Duration,
    /// The most bytes a request head may take (431 past it; hyper's read
    /// buffer, at least 8 KiB).
    pub(crate) max_header_bytes: usize,
}

impl FrontDoor {
    /// Answers one request. Never fails: errors are responses. A request on
    /// a connection from the operator's `reserve` reaches the control plane
    /// only.
    pub(crate) async fn handle(
        &self,
        mut request: Request<RequestBody>,
        reserve: bool,
    ) -> Response<Body> {
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
        if let Some(host) = request.headers().get(http::header::HOST)
            && !is_authority(host)
        {
            self.refusals.count(Refusal::BadHost);
            return error_response(
                StatusCode::BAD_REQUEST,
                "the Host header is not a host name or address with an optional port",
            );
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        // HTTP/2 carries the host in `:authority`, not `Host`: give every
        // layer above (the Origin checks, the guest) the one header.
        if !request.headers().contains_key(http::header::HOST)
            && let Some(value) = authority
                .as_deref()
                .and_then(|a| http::HeaderValue::from_str(a).ok())
        {
            request.headers_mut().insert(http::header::HOST, value);
        }
        match route(&self.mode, authority.as_deref(), &path) {
            Route::Tenant { .. } if reserve => busy_response(
                "the host is at max_connections with every connection busy; this one may only \
                 reach the host's own endpoints",
            ),
            Route::Tenant {
                slug,
                version,
                path,
                origin,
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
                boundary::admit(
                    request.headers_mut(),
                    origin,
                    &self.control.streams.sessions,
                );
                let request = match with_path(request, &path) {
                    Ok(request) => request,
                    Err(e) => {
                        return error_response(
                            StatusCode::BAD_REQUEST,
                            &format!("invalid path: {e}"),
                        );
                    }
                };
                let mut response = self.dispatcher.dispatch(&tenant, deployment, request).await;
                boundary::release(&mut response, origin, &self.refusals);
                response
            }
            Route::ControlPlane { path } => self.control.handle(request, &path).await,
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
fn with_path(
    mut request: Request<RequestBody>,
    path: &str,
) -> Result<Request<RequestBody>, http::Error> {
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
                    // connections we have rather than exiting; counted, and
                    // logged once per period rather than per attempt.
                    door.refusals.count(Refusal::AcceptFailed);
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let ticket = match door.connections.admit(peer.ip()) {
            Ok(ticket) => ticket,
            Err(refused) => {
                door.refusals.count(match refused {
                    Refused::TooManyFromAddress => Refusal::ConnectionsFromAddress,
                    Refused::Full => Refusal::ConnectionsFull,
                });
                refuse_connection(&stream, refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::info_span!("connection", %peer);
        connections.spawn(
            serve_connection(stream, ticket, door.clone(), stopped.clone()).instrument(span),
        );
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

/// Answers a refused connection with a 503 and closes it, without reading
/// anything from it (the socket's send buffer is empty, so the write does
/// not block; if it cannot be written whole, the close says enough).
fn refuse_connection(stream: &tokio::net::TcpStream, refused: Refused) {
    let body = serde_json::json!({ "error": refused.reason() }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Serves one admitted connection: TLS first when the front door has it
/// (the handshake within `header_read_timeout`), then HTTP/2 if ALPN chose
/// it, else HTTP/1.1 (with upgrades: the log stream's WebSocket).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    ticket: Ticket,
    door: Arc<FrontDoor>,
    stopping: watch::Receiver<bool>,
) {
    let Some(tls) = door.tls.clone() else {
        return serve_http1(TokioIo::new(stream), ticket, door, stopping, false).await;
    };
    let handshake =
        tokio::time::timeout(door.http.header_read_timeout, tls.acceptor().accept(stream));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                door.refusals.count(Refusal::TlsHandshake);
                tracing::debug!("TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                door.refusals.count(Refusal::TlsHandshake);
                return;
            }
        },
        () = ticket.connection.evicted() => {
            door.refusals.count(Refusal::Evicted);
            return;
        }
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
    if h2 {
        serve_http2(TokioIo::new(stream), ticket, door, stopping).await
    } else {
        serve_http1(TokioIo::new(stream), ticket, door, stopping, true).await
    }
}

/// The service every connection runs: each request handled by the front
/// door, its connection marked busy until the response body ends; over TLS
/// the request is marked [`OverTls`] and the response gets HSTS if asked.
fn service(
    door: Arc<FrontDoor>,
    standing: Arc<crate::edge::connections::Connection>,
    secure: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<BusyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<BusyBody>, Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let door = door.clone();
        // Busy until the response body is sent: never evicted meanwhile.
        let busy = standing.busy();
        let reserve = standing.reserved();
        async move {
            if secure {
                request.extensions_mut().insert(OverTls);
            }
            let head = request.method() == http::Method::HEAD;
            let (idle, refusals) = (door.http.body_read_timeout, door.refusals.clone());
            let request = request.map(|body| RequestBody::new(body, idle, refusals));
            let mut response = door.handle(request, reserve).await;
            if secure && door.hsts {
                response.headers_mut().insert(
                    http::header::STRICT_TRANSPORT_SECURITY,
                    http::HeaderValue::from_static("max-age=31536000"),
                );
            }
            let watch = response
                .extensions_mut()
                .remove::<crate::base::transport::BodyWatch>()
                // hyper sends no body for these, so not reading one is no
                // disconnection.
                .filter(|_| !head && !matches!(response.status().as_u16(), 100..=199 | 204 | 304));
            let left = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            // Not boxed again: hyper takes any body type.
            Ok::<_, Infallible>(response.map(|body| BusyBody::new(body, busy, watch, left)))
        }
    })
}

async fn serve_http1<I>(
    io: I,
    ticket: Ticket,
    door: Arc<FrontDoor>,
    mut stopping: watch::Receiver<bool>,
    secure: bool,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = door.http;
    let refusals = door.refusals.clone();
    let service = service(door, ticket.connection.clone(), secure);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let shutdown =
        |connection: Pin<&mut _>| http1::UpgradeableConnection::graceful_shutdown(connection);
    let Some(result) = drive(connection, shutdown, &mut stopping, &ticket, &refusals).await else {
        return;
    };
    if let Err(e) = result {
        if e.is_timeout() {
            refusals.count(Refusal::HeaderTimeout);
        }
        tracing::debug!("connection ended with an error: {e}");
    }
}

/// Runs a connection until it ends; when the host stops, lets it finish
/// the response in progress and close; when it is evicted (idle or
/// half-open: nothing in flight is lost), drops it and returns `None`.
/// `shutdown` is the protocol's graceful shutdown.
async fn drive<C>(
    mut connection: Pin<&mut C>,
    shutdown: impl FnOnce(Pin<&mut C>),
    stopping: &mut watch::Receiver<bool>,
    ticket: &Ticket,
    refusals: &Refusals,
) -> Option<hyper::Result<()>>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        result = connection.as_mut() => Some(result),
        _ = stopping.changed() => {
            shutdown(connection.as_mut());
            Some(connection.await)
        }
        () = ticket.connection.evicted() => {
            refusals.count(Refusal::Evicted);
            None
        }
    }
}

/// HTTP/2: every stream is a request like any other (same routing, tenant
/// gates and limits); [`MAX_STREAMS`] bounds what one connection may have
/// in flight, as `max_connections_per_ip` bounds connections.
async fn serve_http2<I>(
    io: I,
    ticket: Ticket,
    door: Arc<FrontDoor>,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let limits = door.http;
    let refusals = door.refusals.clone();
    let service = service(door, ticket.connection.clone(), true);
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .serve_connection(io, service);
    tokio::pin!(connection);
    let shutdown = |connection: Pin<&mut _>| http2::Connection::graceful_shutdown(connection);
    let Some(result) = drive(connection, shutdown, &mut stopping, &ticket, &refusals).await else {
        return;
    };
    if let Err(e) = result {
        tracing::debug!("HTTP/2 connection ended with an error: {e}");
    }
}

/// Requests one HTTP/2 connection may have in flight at once.
const MAX_STREAMS: u32 = 100;

/// Whether a `Host` value is `host[:port]` only (RFC 9110 §7.2: no
/// userinfo); a path or query in it would become part of the URL a tenant
/// builds from its authority.
fn is_authority(host: &http::HeaderValue) -> bool {
    host.to_str()
        .ok()
        .filter(|host| !host.is_empty() && !host.contains('@'))
        .is_some_and(|host| host.parse::<http::uri::Authority>().is_ok())
}
