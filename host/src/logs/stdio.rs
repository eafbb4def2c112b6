//! A request's stdout and stderr as the guest sees them: WASI output
//! streams (both the p2 resource and the async writer wasmtime asks for)
//! that write into the request's [`RequestCapture`]. They never block and
//! never fail: capture keeps at most one line per stream and drops what is
//! over budget.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::logs::capture::RequestCapture;
use crate::logs::entry::Stream;

/// A guest's stdout or stderr. Cheap to clone: the guest may open its stdout
/// many times (Rust's std does so per write) and every handle shares one
/// line buffer.
///
/// It writes to whichever request the instance serves *now*: an instance
/// kept for reuse holds its stdout handle from one request to the next,
/// so the capture it reaches is swapped when a request begins
/// ([`OutputTarget`]).
#[derive(Clone)]
pub struct CaptureStream {
    pub(crate) target: Arc<OutputTarget>,
    pub(crate) stream: Stream,
}

/// The capture an instance's output goes to: the request it serves.
pub(crate) type OutputTarget = arc_swap::ArcSwap<RequestCapture>;

impl RequestCapture {
    /// The guest's stdout or stderr for this request alone (an instance
    /// that serves several requests writes through its own
    /// `OutputTarget` instead: `CaptureStream::to`).
    pub fn stream(self: &Arc<Self>, stream: Stream) -> CaptureStream {
        CaptureStream::to(&Arc::new(OutputTarget::new(self.clone())), stream)
    }
}

impl CaptureStream {
    /// The guest's `stream`, written to whichever capture `target` holds
    /// when the bytes arrive.
    pub fn to(target: &Arc<OutputTarget>, stream: Stream) -> Self {
        CaptureStream {
            target: target.clone(),
            stream,
        }
    }

    fn write_now(&self, bytes: &[u8]) {
        self.target.load().write(self.stream, bytes);
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_now(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Capture never applies back-pressure: it keeps at most one line per
        // stream and drops what is over budget.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_now(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
