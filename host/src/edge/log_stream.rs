//! `GET /log-stream/{slug}`: the WebSocket a viewer watches a tenant's logs on.
//!
//! Every check the contract asks for happens *before* the upgrade, so a
//! refused client gets a plain HTTP status and a JSON reason it can show:
//! a foreign browser `Origin` (403, cross-site WebSocket hijacking), no or
//! bad session (401), unknown slug (404), not the owner (403), inactive
//! server (403), a malformed upgrade or filter (400), the slug's viewers
//! full (429). Only then is the connection upgraded and subscribed.
//!
//! Frames are the JSON of `crate::logs::wire::Frame`. The host pings every
//! `ping_interval`; a viewer that sends nothing (pongs count) for
//! `idle_timeout` is closed, after a `closing` frame that says why.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::base::auth::{Claims, Sessions, unix_now};
use crate::base::config::Status;
use crate::base::responses::{Body, error_response, full_body};
use crate::base::transport::RequestBody;
use crate::logs::cluster::{Admission, Cluster};
use crate::logs::filter::Filter;
use crate::logs::hub::{Closed, LogHub, Outgoing, SubscribeError, Subscription};
use crate::logs::wire::Frame;
use crate::run::tenants::{LiveTenants, Tenant, TenantRegistry};

/// Everything the endpoint needs. Its limits and timers are the hub's
/// `[logs]` settings.
pub(crate) struct LogStreams {
    pub(crate) hub: LogHub,
    /// Set on a cluster: the viewer limit counts every host's viewers.
    pub(crate) cluster: Option<Cluster>,
    pub(crate) sessions: Sessions,
    /// Browser origins allowed besides the control plane's own (`[auth]`).
    pub(crate) allowed_origins: Vec<String>,
    /// The viewers' tasks, so that shutdown can wait for their goodbyes.
    pub(crate) viewers: TaskTracker,
    /// Refused viewers since start, by HTTP status (for the metrics).
    pub(crate) refused: Arc<StreamRefusals>,
}

/// Log-stream refusals by HTTP status.
#[derive(Debug, Default)]
pub(crate) struct StreamRefusals(std::sync::Mutex<std::collections::BTreeMap<u16, u64>>);

impl StreamRefusals {
    fn count(&self, status: StatusCode) {
        let mut counts = crate::base::sync::lock(&self.0);
        *counts.entry(status.as_u16()).or_default() += 1;
    }

    /// Each status with its count.
    pub(crate) fn totals(&self) -> Vec<(u16, u64)> {
        let counts = crate::base::sync::lock(&self.0);
        counts
            .iter()
            .map(|(status, count)| (*status, *count))
            .collect()
    }
}

/// How often a viewer is pinged, and how long it may stay silent.
#[derive(Clone, Copy, Debug)]
struct Timers {
    ping_interval: Duration,
    idle_timeout: Duration,
    /// A write the viewer's socket does not take within this long (it
    /// does not read) closes it: otherwise a blocked write would hold the
    /// viewer, its queue and its slot for ever.
    write_timeout: Duration,
}

/// Why a viewer is turned away: an HTTP status and a reason for the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    pub(crate) reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        error_response(self.status, &self.reason)
    }
}

impl LogStreams {
    /// Answers `GET /log-stream/{slug}?{query}`: a refusal, or `101
    /// Switching Protocols` with the viewer running in its own task.
    pub(crate) async fn handle(
        &self,
        live: &Arc<LiveTenants>,
        mut request: Request<RequestBody>,
        slug: &str,
        query: &str,
    ) -> Response<Body> {
        // Subscribed to swaps before the check, so that no change between
        // the check and the stream goes unseen.
        let swaps = live.swaps();
        let tenants = live.snapshot();
        let admitted = self
            .authorize(&tenants, request.headers(), slug)
            .and_then(|claims| {
                // Checked before the upgrade headers, so that a plain GET (what a
                // browser can send to learn why its WebSocket failed) learns it.
                let max = self.hub.settings().max_viewers_per_slug;
                if self.hub.viewer_count(slug) >= max {
                    return Err(full(slug, max));
                }
                let accept = websocket_accept(request.headers())
                    .map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, why))?;
                let filter = Filter::from_query(query)
                    .map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, why))?;
                let subscription = self
                    .hub
                    .subscribe(slug, filter)
                    .map_err(|SubscribeError::Full { max }| full(slug, max))?;
                Ok((accept, subscription, claims))
            });
        let (accept, subscription, claims) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.refused.count(refusal.status);
                return refusal.into_response();
            }
        };
        if let Some(cluster) = &self.cluster {
            let max = self.hub.settings().max_viewers_per_slug;
            if let Admission::Full { max } = cluster.admit(&subscription, max).await {
                let refusal = full_across_hosts(slug, max);
                self.refused.count(refusal.status);
                return refusal.into_response();
            }
        }

        let upgrade = hyper::upgrade::on(&mut request);
        let settings = self.hub.settings();
        let timers = Timers {
            ping_interval: settings.ping_interval(),
            idle_timeout: settings.idle_timeout(),
            write_timeout: settings.slow_viewer_grace(),
        };
        let span = tracing::info_span!("viewer", slug);
        let live = live.clone();
        let viewer = async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    let socket = WebSocketStream::from_raw_socket(
                        io,
                        Role::Server,
                        Some(viewer_socket_config()),
                    )
                    .await;
                    let authority = Authority {
                        live,
                        swaps,
                        user: claims.sub,
                        expires: claims.exp,
                    };
                    run_viewer(socket, subscription, timers, authority).await;
                }
                Err(e) => tracing::debug!("log stream upgrade failed: {e}"),
            }
        };
        self.viewers.spawn(viewer.instrument(span));

        let mut response = Response::new(full_body(""));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        response
    }

    /// The contract's three requirements (signed session, owner, active
    /// server), after the browser-origin check. Unauthenticated callers
    /// learn nothing about which slugs exist.
    pub(crate) fn authorize(
        &self,
        tenants: &TenantRegistry,
        headers: &HeaderMap,
        slug: &str,
    ) -> Result<Claims, Refusal> {
        crate::base::auth::check_origin(headers, &self.allowed_origins)
            .map_err(|why| Refusal::new(StatusCode::FORBIDDEN, why))?;
        let claims = self
            .sessions
            .authenticate_claims(headers)
            .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        may_watch(tenants.get(slug).map(|t| &**t), &claims.sub, slug)?;
        Ok(claims)
    }
}

/// The rules that outlive the upgrade: `user` owns `slug`, which exists
/// and is active. Checked at the upgrade and again whenever the tenants
/// change while the stream is open.
fn may_watch(tenant: Option<&Tenant>, user: &str, slug: &str) -> Result<(), Refusal> {
    let tenant = tenant
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, format!("unknown server {slug:?}")))?;
    if tenant.owner != user {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("you do not own server {slug:?}"),
        ));
    }
    if tenant.status != Status::Active {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("server {slug:?} is inactive: logs are only available for active servers"),
        ));
    }
    Ok(())
}

impl LogStreams {
    /// Shutdown: closes every viewer (a `closing` frame, then close code
    /// 1001) and waits up to `grace` for them to be gone.
    pub(crate) async fn close_all(&self, grace: Duration) {
        self.hub.close_all();
        self.viewers.close();
        if tokio::time::timeout(grace, self.viewers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.viewers.len(),
                "log viewers did not close in time"
            );
        }
    }
}

fn full(slug: &str, max: usize) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("server {slug:?} already has {max} log viewers; try again when one closes"),
    )
}

fn full_across_hosts(slug: &str, max: usize) -> Refusal {
    Refusal::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "server {slug:?} already has {max} log viewers across the cluster's hosts; try again when one closes"
        ),
    )
}

/// A viewer only sends pongs and closes, and receives frames we flush
/// ourselves: tungstenite's 128 KiB default buffers would be most of an idle
/// viewer's memory.
fn viewer_socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

/// Validates a WebSocket upgrade request and returns `Sec-WebSocket-Accept`.
fn websocket_accept(headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err("this endpoint is a WebSocket: send Upgrade: websocket");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err("unsupported WebSocket version: use 13");
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or("missing Sec-WebSocket-Key")?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// What an open stream was granted on, to be checked again: the viewer's
/// session ends at `expires`, and every change of the tenants may take the
/// server away from `user` (another owner, inactive, deleted).
struct Authority {
    live: Arc<LiveTenants>,
    swaps: tokio::sync::watch::Receiver<()>,
    user: String,
    /// Seconds since the epoch.
    expires: u64,
}

/// Pumps frames to one viewer until it leaves, idles out, falls too far
/// behind, loses its authority, or the socket fails.
async fn run_viewer<S>(
    socket: WebSocketStream<S>,
    subscription: Subscription,
    timers: Timers,
    mut authority: Authority,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let left = Duration::from_secs(authority.expires.saturating_sub(unix_now()));
    let expired = tokio::time::sleep(left);
    tokio::pin!(expired);
    let (mut outgoing, mut incoming) = socket.split();
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + timers.ping_interval,
        timers.ping_interval,
    );
    let idle = tokio::time::sleep(timers.idle_timeout);
    tokio::pin!(idle);
    let close = loop {
        tokio::select! {
            frame = subscription.recv() => {
                // Write every frame already waiting, then flush once: under
                // load that is one write for many frames.
                let write = async {
                    let mut next = Some(frame);
                    while let Some(frame) = next.take() {
                        if let Outgoing::Closed(why) = frame {
                            outgoing.flush().await?;
                            return Ok(Some(why));
                        }
                        outgoing.feed(Message::Text(frame.to_json().into())).await?;
                        next = subscription.try_recv();
                    }
                    outgoing.flush().await.map(|()| None)
                };
                match bounded(timers.write_timeout, write).await {
                    Ok(None) => {}
                    Ok(Some(closed)) => {
                        let code = match closed {
                            Closed::TooSlow(_) => CloseCode::Policy,
                            Closed::ShuttingDown => CloseCode::Away,
                            Closed::Removed(_) => CloseCode::Normal,
                        };
                        break Some((code, closed.reason()));
                    }
                    Err(leaving) => break leaving,
                }
            }
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                Some(Ok(_)) => idle.as_mut().reset(tokio::time::Instant::now() + timers.idle_timeout),
            },
            _ = ping.tick() => {
                let ping = outgoing.send(Message::Ping(Default::default()));
                if let Err(leaving) = bounded(timers.write_timeout, ping).await {
                    break leaving;
                }
            }
            () = &mut idle => break Some((
                CloseCode::Normal,
                format!("idle: no activity from this viewer for {} s", timers.idle_timeout.as_secs()),
            )),
            () = &mut expired => break Some((
                CloseCode::Policy,
                "your session expired: sign in again to keep watching".to_string(),
            )),
            Ok(()) = authority.swaps.changed() => {
                let slug = subscription.slug();
                // A deleted server's viewers are closed by its hub, with
                // who deleted it: only a server still here is checked.
                if let Some(tenant) = authority.live.get(slug)
                    && let Err(refusal) = may_watch(Some(&tenant), &authority.user, slug)
                {
                    break Some((CloseCode::Policy, refusal.reason));
                }
            }
        }
    };
    tracing::debug!(slug = subscription.slug(), ?close, "log viewer leaving");
    // Saying goodbye is bounded too: a viewer that does not read would
    // never take these frames.
    let goodbye = async {
        let Some((code, reason)) = close else {
            return;
        };
        let closing = Frame::<()>::Closing {
            reason: reason.clone(),
        };
        let _ = outgoing.send(Message::Text(closing.json().into())).await;
        // A close frame's reason is limited to 123 bytes.
        let short = reason[..reason.floor_char_boundary(120)].to_string();
        let _ = outgoing
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: short.into(),
            })))
            .await;
        let _ = outgoing.close().await;
    };
    let _ = tokio::time::timeout(timers.write_timeout, goodbye).await;
}

/// A write to the viewer that must finish within `after`. `Err` says how
/// the viewer leaves: `None` when its socket failed (nothing more can be
/// sent), a close with the slow-viewer reason when it took nothing for
/// that long (it is not reading).
async fn bounded<T, E>(
    after: Duration,
    write: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Option<(CloseCode, String)>> {
    match tokio::time::timeout(after, write).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(_)) => Err(None),
        Err(_) => Err(Some((
            CloseCode::Policy,
            format!(
                "too slow: this viewer took no frames for {} s (it is not reading)",
                after.as_secs()
            ),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_requests_are_validated() {
        let mut headers = HeaderMap::new();
        assert!(websocket_accept(&headers).is_err());
        headers.insert(header::UPGRADE, "WebSocket".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert!(websocket_accept(&headers).is_err(), "no key");
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        // RFC 6455's worked example.
        assert_eq!(
            websocket_accept(&headers).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
