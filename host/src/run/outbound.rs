//! What a tenant may reach over HTTP: the store's [`WasiHttpHooks`], so
//! every `wasi:http/outgoing-handler` call of a guest comes through here.
//!
//! Default deny. A request goes out only when
//! 1. the request has made fewer than `max_subrequests` outbound calls;
//! 2. an `allowed_outbound_hosts` entry allows its scheme, host and port;
//! 3. the name resolves to an address the list allows: a public one, or an
//!    internal one (loopback, private, link-local …) that an entry names as
//!    an IP literal; the host's own listening addresses (main, metrics,
//!    redirect, shutdown) only through an entry with that exact address and
//!    port.
//!
//! The connection is made to the address that passed (3), never to a name
//! resolved again, so DNS cannot change between the check and the connect.
//! HTTPS is verified against the public web roots with the URL's name.
//! Each call has a connect timeout and a total deadline that also bounds
//! reading the response body, which is streamed to the guest, not buffered.
//!
//! A refused call fails in the guest with `HTTP-request-denied` and leaves
//! one `warn` entry in the tenant's log stream naming the URL and why.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::base::config::{OutboundSpec, Scheme, Target, is_own_address, without_userinfo};
use crate::logs::capture::RequestCapture;
use crate::logs::entry::Level;
use crate::run::body::DeadlineBody;

/// A response and the future that drives its connection, as the hooks
/// hand them back to wasmtime.
type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// What every request's outbound calls share: the TLS client settings and
/// the host's own addresses, as each listener binds.
pub(crate) struct OutboundContext {
    tls: tokio_rustls::TlsConnector,
    /// Every address the host listens on: a handful, written at start-up.
    own_addresses: RwLock<Vec<SocketAddr>>,
}

impl OutboundContext {
    pub(crate) fn new() -> Self {
        OutboundContext {
            tls: crate::base::tls::web_connector(),
            own_addresses: RwLock::default(),
        }
    }

    /// Records one more address the host listens on (never reachable
    /// without an exact entry).
    pub(crate) fn add_own_address(&self, address: SocketAddr) {
        crate::base::sync::write(&self.own_addresses).push(address);
    }

    fn own_addresses(&self) -> Vec<SocketAddr> {
        crate::base::sync::read(&self.own_addresses).clone()
    }
}

/// One request's outbound calls: the rules of its tenant, and counts.
#[derive(Clone)]
pub(crate) struct Outbound {
    spec: Arc<OutboundSpec>,
    context: Arc<OutboundContext>,
    capture: Arc<RequestCapture>,
    calls: Arc<OutboundCounts>,
}

/// What one request's outbound calls came to, for its request event and
/// the metrics.
#[derive(Debug, Default)]
pub(crate) struct OutboundCounts {
    /// Calls made, refused ones included.
    pub(crate) made: AtomicU32,
    /// Calls refused by the tenant's rules.
    pub(crate) refused: AtomicU32,
}

impl Outbound {
    pub(crate) fn new(
        spec: Arc<OutboundSpec>,
        context: Arc<OutboundContext>,
        capture: Arc<RequestCapture>,
        calls: Arc<OutboundCounts>,
    ) -> Self {
        Outbound {
            spec,
            context,
            capture,
            calls,
        }
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let call = Call {
            number: self.calls.made.fetch_add(1, Ordering::Relaxed) + 1,
            counts: self.calls.clone(),
            spec: self.spec.clone(),
            context: self.context.clone(),
            capture: self.capture.clone(),
        };
        Box::new(call.send(request))
    }
}

/// One outbound call, on its way.
struct Call {
    /// 1 for the request's first outbound call.
    number: u32,
    counts: Arc<OutboundCounts>,
    spec: Arc<OutboundSpec>,
    context: Arc<OutboundContext>,
    capture: Arc<RequestCapture>,
}

impl Call {
    /// Refuses the call: a `warn` entry for the tenant, and
    /// `HTTP-request-denied` for the guest.
    fn refuse(&self, method: &http::Method, url: &str, why: &str) -> Error {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        self.capture.publish_host_entry(
            Level::Warn,
            format!("[mctx] outbound request refused: {method} {url}: {why}"),
        );
        Error::HttpRequestDenied
    }

    async fn send(self, mut request: http::Request<WasiBody>) -> Result<Sent, Error> {
        let method = request.method().clone();
        // As shown in the owner's log: a credential in the URL stays out.
        let url = without_userinfo(&request.uri().to_string()).into_owned();
        let target = target_of(request.uri()).ok_or(Error::HttpRequestUriInvalid)?;
        let spec = &self.spec;
        if self.number > spec.max_subrequests {
            return Err(self.refuse(
                &method,
                &url,
                &format!(
                    "this request already made {} outbound requests, the most one may make (max_subrequests)",
                    spec.max_subrequests
                ),
            ));
        }
        if spec.allowed.is_empty() {
            return Err(self.refuse(
                &method,
                &url,
                "this tenant may not make outbound requests (no allowed_outbound_hosts)",
            ));
        }
        if spec.allowed.allows(&target).is_none() {
            return Err(self.refuse(
                &method,
                &url,
                &format!(
                    "{target} is not in allowed_outbound_hosts ({})",
                    spec.allowed
                ),
            ));
        }

        let started = Instant::now();
        let deadline = started + Duration::from_millis(spec.timeout_ms);
        let connect_by = deadline.min(started + Duration::from_millis(spec.connect_timeout_ms));
        let addresses = tokio::time::timeout_at(connect_by, resolve(&target))
            .await
            .map_err(|_| Error::DnsTimeout)?
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?;
        let own = self.context.own_addresses();
        let Some(address) = addresses
            .iter()
            .copied()
            .find(|address| spec.allowed.allows_address(&target, *address, &own))
        else {
            let found: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
            let mine = own
                .iter()
                .find(|&&own| addresses.iter().any(|&a| is_own_address(a, own)));
            let why = match mine {
                Some(own) => format!(
                    "{target} is this host's own address ({own}); only an allowed_outbound_hosts \
                     entry with exactly that IP address and port allows it"
                ),
                None => format!(
                    "{} resolves to {}, not a public internet address; list the address itself \
                     (e.g. \"http://{}:{}\") in allowed_outbound_hosts to allow it",
                    target.host,
                    found.join(", "),
                    found.first().map_or("127.0.0.1", String::as_str),
                    target.port
                ),
            };
            return Err(self.refuse(&method, &url, &why));
        };

        let stream = tokio::time::timeout_at(connect_by, TcpStream::connect(address))
            .await
            .map_err(|_| Error::ConnectionTimeout)?
            .map_err(Error::Connect)?;
        let _ = stream.set_nodelay(true);
        let stream: Box<dyn Stream> = match target.scheme {
            Scheme::Http => Box::new(stream),
            Scheme::Https => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                let tls =
                    tokio::time::timeout_at(connect_by, self.context.tls.connect(name, stream))
                        .await
                        .map_err(|_| Error::ConnectionTimeout)?
                        .map_err(Error::Tls)?;
                Box::new(tls)
            }
        };
        let (mut sender, connection) = tokio::time::timeout_at(
            connect_by,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;

        // The URL's scheme and authority are for us; the upstream gets the
        // path (and the Host header wasi:http already set).
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        // The connection must be driven while the response head is awaited.
        // An upstream that answers and closes at once (`Connection: close`)
        // ends the connection in the same poll that hands the response over,
        // so a connection that ended is not yet a failure: the response may
        // be waiting; `send` says which (hyper fails it if none came).
        let mut connection = Box::pin(connection);
        let mut send = std::pin::pin!(sender.send_request(request));
        let head = async {
            let ended = tokio::select! {
                biased;
                response = &mut send => return (response, None),
                ended = &mut connection => ended,
            };
            ((&mut send).await, Some(ended))
        };
        let (response, ended) = match tokio::time::timeout_at(deadline, head).await {
            Ok(raced) => raced,
            Err(_) => {
                self.capture.publish_host_entry(
                    Level::Warn,
                    format!(
                        "[mctx] outbound request timed out: {method} {url}: no response within {} ms \
                         (subrequest_timeout_ms)",
                        spec.timeout_ms
                    ),
                );
                return Err(Error::ConnectionReadTimeout);
            }
        };
        let response = match (response, &ended) {
            (Ok(response), _) => response,
            (Err(_), Some(Ok(()))) => return Err(Error::HttpResponseIncomplete),
            (Err(e), _) => return Err(Error::from(e)),
        };
        let response = response.map(|body| DeadlineBody::new(body, deadline).boxed_unsync());
        // A connection that already ended is not polled again.
        let drive = async move {
            match ended {
                Some(ended) => ended.map_err(Error::from),
                None => connection.await.map_err(Error::from),
            }
        };
        Ok((response, Box::new(drive)))
    }
}

/// A TCP or TLS stream to an upstream.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Scheme, host and port of an absolute request URI.
fn target_of(uri: &http::Uri) -> Option<Target> {
    let scheme = match uri.scheme_str()? {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let authority = uri.authority()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(scheme.default_port());
    Some(Target { scheme, host, port })
}

/// The addresses of a target's host. `localhost` and `*.localhost` are
/// loopback without asking DNS (RFC 6761), so they mean the same here as
/// in a browser.
async fn resolve(target: &Target) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    if target.host == "localhost" || target.host.ends_with(".localhost") {
        return Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), target.port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), target.port),
        ]);
    }
    Ok(tokio::net::lookup_host((target.host.as_str(), target.port))
        .await?
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_absolute_uris() {
        let t = target_of(&"https://API.example.com/x?y".parse().unwrap()).unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Https, "api.example.com", 443)
        );
        let t = target_of(&"http://[::1]:8080/".parse().unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert!(target_of(&"/relative".parse().unwrap()).is_none());
        assert!(target_of(&"ftp://x/".parse().unwrap()).is_none());
    }

    #[tokio::test]
    async fn localhost_names_are_loopback_without_dns() {
        let target = Target {
            scheme: Scheme::Http,
            host: "api.localhost".into(),
            port: 9,
        };
        let addresses = resolve(&target).await.unwrap();
        assert!(
            addresses
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9)
        );
    }
}
