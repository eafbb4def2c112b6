//! A tenant's response body on its way out: it keeps its connection
//! marked busy (so an idle-connection eviction never cuts it off) until it
//! ends, and says when it was dropped before its end — the client went
//! away mid-body — so the request event can say
//! `responseStreamDisconnected`.

use crate::base::responses::Body;
use crate::base::transport::BodyWatch;
use crate::edge::connections::BusyGuard;

/// A response body that keeps its connection marked busy until it ends,
/// and says so when it is dropped before its end (a tenant's response: the
/// client went away mid-body).
pub(crate) struct BusyBody {
    body: Body,
    _busy: BusyGuard,
    watch: Option<BodyWatch>,
    ended: bool,
    /// Bytes of the declared `Content-Length` not yet sent.
    left: Option<u64>,
}

impl BusyBody {
    /// `left`: the response's `Content-Length`, if it declares one.
    pub(crate) fn new(
        body: Body,
        busy: BusyGuard,
        watch: Option<BodyWatch>,
        left: Option<u64>,
    ) -> Self {
        BusyBody {
            body,
            _busy: busy,
            watch,
            // hyper never polls a body declared empty.
            ended: left == Some(0),
            left,
        }
    }
}

impl Drop for BusyBody {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch
            && !self.ended
            && !http_body::Body::is_end_stream(&self.body)
        {
            watch.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        // hyper drops a body without polling it again once it has what
        // the head promised: its `Content-Length`, or trailers (the last
        // frame there is).
        match &polled {
            std::task::Poll::Ready(None) => self.ended = true,
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.left = self.left.map(|left| left.saturating_sub(data.len() as u64));
                }
                if frame.is_trailers() || self.left == Some(0) {
                    self.ended = true;
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
