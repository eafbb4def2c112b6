//! How a request reached the host, as the edge marks it for the layers
//! above: a request that arrived over TLS carries [`OverTls`] in its
//! extensions, so the guest sees scheme `https` (`run::dispatch`) and the
//! session cookie is `Secure` (`edge::dashboard`).

use std::future::Future as _;

use crate::base::refusals::{Refusal, Refusals};

/// The request arrived over TLS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;

/// Whether `request` arrived over TLS.
pub(crate) fn over_tls<B>(request: &http::Request<B>) -> bool {
    request.extensions().get::<OverTls>().is_some()
}

/// Put on a tenant's response by the dispatcher: set by the edge when the
/// response body is dropped before its end (the client went away
/// mid-body), so the request event can say `responseStreamDisconnected`.
#[derive(Clone, Debug)]
pub(crate) struct BodyWatch(pub(crate) std::sync::Arc<std::sync::atomic::AtomicBool>);

/// A request's body as the edge hands it on: hyper's, with a deadline on
/// every read. hyper times out a request's head (`header_read_timeout`)
/// but not its body, so a client that declares `Content-Length: 1000` and
/// sends nothing would hold its connection — and the dashboard's, the
/// API's or a guest's read — for ever. Here a body that sends no bytes for
/// `idle` fails the read (the connection then closes, hyper cannot reuse
/// it) and is counted once as [`Refusal::BodyStalled`]. An idle deadline,
/// not a total one: a large deploy over a slow link still arrives. The
/// clock starts at the first read, not at arrival: a client waiting for
/// `100 Continue` sends nothing until then.
pub(crate) struct RequestBody {
    body: hyper::body::Incoming,
    idle: std::time::Duration,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    refusals: Option<std::sync::Arc<Refusals>>,
}

/// Why a request body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// No bytes for this long.
    Stalled(std::time::Duration),
    Http(hyper::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Stalled(idle) => write!(
                f,
                "the request body stalled: no bytes for {} s",
                idle.as_secs()
            ),
            BodyError::Http(e) => write!(f, "reading the request body: {e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// The status for a body that could not be read: 408 when it stalled
/// (`error` is what `http_body_util` hands back, boxed), else `otherwise`.
pub(crate) fn read_failure_status(
    error: &(dyn std::error::Error + 'static),
    otherwise: http::StatusCode,
) -> http::StatusCode {
    match error.downcast_ref::<BodyError>() {
        Some(BodyError::Stalled(_)) => http::StatusCode::REQUEST_TIMEOUT,
        _ => otherwise,
    }
}

impl RequestBody {
    pub(crate) fn new(
        body: hyper::body::Incoming,
        idle: std::time::Duration,
        refusals: std::sync::Arc<Refusals>,
    ) -> Self {
        RequestBody {
            body,
            idle,
            deadline: None,
            refusals: Some(refusals),
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, BodyError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(deadline) = &mut this.deadline {
                    let next = tokio::time::Instant::now() + this.idle;
                    deadline.as_mut().reset(next);
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Http)))
            }
            Poll::Pending => match this
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.idle)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    if let Some(refusals) = this.refusals.take() {
                        refusals.count(Refusal::BodyStalled);
                    }
                    Poll::Ready(Some(Err(BodyError::Stalled(this.idle))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
