//! The HTTP bodies the host wraps around a guest's: what it reads of a
//! request (counted against the body limit, a stall noticed) and what an
//! upstream sends back to it (bounded by the call's deadline).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use wasmtime_wasi_http::Error;

use crate::base::refusals::{Refusal, Refusals};
use crate::base::responses::{Body, error_response};
use crate::base::transport::{BodyError, RequestBody};

/// What went wrong with a request body as the guest read it.
#[derive(Default)]
pub(crate) struct BodyFaults {
    too_large: AtomicBool,
    stalled: std::sync::OnceLock<String>,
}

impl BodyFaults {
    /// The response, unless the guest read past the body limit (413) or the
    /// client stopped sending it (408): whatever the guest made of its failed
    /// read, the client is told what the host refused.
    pub(crate) fn finish(
        &self,
        response: Response<Body>,
        refusals: &Refusals,
        limit: u64,
    ) -> Response<Body> {
        if self.too_large.load(Ordering::Relaxed) {
            refusals.count(Refusal::BodyTooLarge);
            return body_too_large(limit);
        }
        if let Some(error) = self.stalled.get() {
            // Already counted where it stalled.
            return error_response(StatusCode::REQUEST_TIMEOUT, error);
        }
        response
    }
}

/// 413, naming the limit.
pub(crate) fn body_too_large(limit: u64) -> Response<Body> {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than this tenant accepts ({limit} bytes)"),
    )
}

/// A request body that fails once more than `limit` bytes have come,
/// without buffering anything; `faults` tells the dispatcher.
pub(crate) struct LimitedBody {
    body: RequestBody,
    read: u64,
    limit: u64,
    faults: Arc<BodyFaults>,
}

impl LimitedBody {
    pub(crate) fn new(body: RequestBody, limit: u64, faults: Arc<BodyFaults>) -> Self {
        LimitedBody {
            body,
            read: 0,
            limit,
            faults,
        }
    }
}

impl http_body::Body for LimitedBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.read += data.len() as u64;
            if self.read > self.limit {
                self.faults.too_large.store(true, Ordering::Relaxed);
                return std::task::Poll::Ready(Some(Err(
                    wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.read)),
                )));
            }
        }
        std::task::Poll::Ready(frame.map(|f| {
            f.map_err(|e| match e {
                BodyError::Stalled(_) => {
                    let _ = self.faults.stalled.set(e.to_string());
                    wasmtime_wasi_http::Error::ConnectionReadTimeout
                }
                BodyError::Http(e) => e.into(),
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that fails once the call's deadline passes, so a slow
/// upstream cannot hold the guest (and its request) past it.
pub(crate) struct DeadlineBody {
    body: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    pub(crate) fn new(body: hyper::body::Incoming, deadline: tokio::time::Instant) -> Self {
        DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Error::from))),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
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
