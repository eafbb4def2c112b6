//! How a request ended: the report (a trap's or limit's entry, then the
//! `type:"request"` event) made exactly once, and the response a client
//! gets when the guest sent none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use http::{Response, StatusCode};

use crate::base::metrics::{RequestDone, VersionMetrics};
use crate::base::responses::{Body, error_response};
use crate::logs::capture::RequestCapture;
use crate::logs::entry::{
    Exception, Level, LogEntry, McpCall, Outcome, RequestEvent, RequestHeaders, truncate_message,
};
use crate::logs::redact::{REDACTED, redact};
use crate::run::limits::RequestMeter;
use crate::run::outbound::OutboundCounts;

/// Reports how a request ended, exactly once: when the guest task
/// completes, or, if the task is aborted (client gone), when it is dropped.
/// The report is the trap or limit entry (if any) and the request event.
pub(crate) struct RequestReport {
    pub(crate) capture: Arc<RequestCapture>,
    pub(crate) meter: Arc<RequestMeter>,
    /// Outbound calls the guest made.
    pub(crate) subrequests: Arc<OutboundCounts>,
    pub(crate) metrics: Arc<VersionMetrics>,
    pub(crate) method: String,
    /// The path the guest saw.
    pub(crate) path: String,
    /// The status the guest sent, 0 until it sends one.
    pub(crate) status: Arc<AtomicU16>,
    pub(crate) done: bool,
    /// Set when the guest trapped: what and where.
    pub(crate) exception: Option<Exception>,
    /// The request's headers for its event (empty when nobody watches).
    pub(crate) headers: RequestHeaders,
    /// What an MCP request called, from its headers.
    pub(crate) mcp: Option<McpCall>,
    /// Set by the edge when the response body was dropped before its end.
    pub(crate) disconnected: Arc<std::sync::atomic::AtomicBool>,
}

impl RequestReport {
    /// Reports how the request ended. `before_event` runs once the outcome
    /// is known and before the request event goes out: whoever sees the
    /// event then sees what it did (an instance back in its pool, ready
    /// for the next request).
    pub(crate) fn finish(
        mut self,
        result: wasmtime::Result<()>,
        before_event: impl FnOnce(Outcome),
    ) -> Outcome {
        self.done = true;
        // Flushed first: the guest's last line may be the exception it reports.
        self.capture.finish();
        let reported = match &result {
            Ok(()) => self.capture.reported_exception(),
            Err(_) => None,
        };
        let outcome = match &result {
            Ok(()) if reported.is_some() => Outcome::Exception,
            Ok(()) if self.disconnected.load(Ordering::Relaxed) => {
                Outcome::ResponseStreamDisconnected
            }
            Ok(()) => Outcome::Ok,
            Err(_) if self.meter.wall_exceeded() => Outcome::ExceededWallTime,
            Err(_) if self.meter.cpu_exceeded() => Outcome::ExceededCpu,
            Err(_) if self.meter.memory_exceeded() => Outcome::ExceededMemory,
            Err(_) => Outcome::Exception,
        };
        // A guest that reported its own exception said so in its own line.
        self.exception = reported.flatten();
        match (&result, outcome) {
            (Ok(()), _) => {}
            (Err(_), Outcome::ExceededWallTime) => self.capture.publish_host_entry(
                Level::Error,
                format!(
                    "[mctx] exceeded the wall-clock limit of {} ms; the request was stopped",
                    self.meter.wall_limit().as_millis()
                ),
            ),
            (Err(_), Outcome::ExceededCpu) => self.capture.publish_host_entry(
                Level::Error,
                format!(
                    "[mctx] exceeded the CPU limit of {} ms (used {} ms); the request was stopped",
                    self.meter.cpu_limit().as_millis(),
                    self.meter.cpu_used().as_millis()
                ),
            ),
            (Err(e), _) => {
                if outcome == Outcome::Exception {
                    self.exception = Some(exception(e));
                }
                self.capture.publish_host_entry(
                    Level::Error,
                    format!("[mctx] {}: {e:?}", trap_title(outcome)),
                )
            }
        }
        if let Err(e) = &result {
            tracing::debug!(outcome = outcome.as_str(), "guest failed: {e:#}");
        }
        before_event(outcome);
        self.publish_event(outcome);
        outcome
    }

    fn publish_event(&mut self, outcome: Outcome) {
        let sent = self.status.load(Ordering::Relaxed);
        let status = match (sent, outcome) {
            (0, Outcome::Canceled) => None,
            (0, outcome) => Some(outcome_status(outcome).as_u16()),
            (sent, _) => Some(sent),
        };
        let made = self.subrequests.made.load(Ordering::Relaxed);
        let refused = self.subrequests.refused.load(Ordering::Relaxed);
        let (written, capped) = self.capture.output_bytes();
        let (wall, cpu) = (self.meter.wall(), self.meter.cpu_used());
        self.metrics.request(&RequestDone {
            outcome: outcome.as_str(),
            status,
            wall,
            cpu,
            output_bytes: written as u64,
            capped_bytes: capped as u64,
            outbound_sent: made.saturating_sub(refused),
            outbound_refused: refused,
        });
        // The event is built only for someone to read it.
        if !self.capture.wanted() && !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let event = RequestEvent {
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status,
            outcome,
            wall_ms: wall.as_millis() as u64,
            cpu_ms: cpu.as_millis() as u64,
            subrequests: made,
            exception: self.exception.take(),
            headers: std::mem::take(&mut self.headers),
            mcp: self.mcp.take(),
        };
        tracing::debug!(?event, "request finished");
        self.capture
            .publish_entry(LogEntry::request_event(self.capture.meta().clone(), event));
    }
}

impl Drop for RequestReport {
    fn drop(&mut self) {
        if !self.done {
            self.capture.finish();
            self.capture.publish_host_entry(
                Level::Warn,
                "[mctx] the client went away; the request was canceled".into(),
            );
            self.publish_event(Outcome::Canceled);
        }
    }
}

/// The trap's kind, message and the guest's stack (innermost first), from
/// wasmtime's error and the backtrace it attaches.
fn exception(error: &wasmtime::Error) -> Exception {
    let name = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap:?}"),
        None => "Error".to_string(),
    };
    let message = error
        .downcast_ref::<wasmtime::Trap>()
        .map_or_else(|| error.root_cause().to_string(), ToString::to_string);
    let stack = error
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|backtrace| {
            backtrace
                .frames()
                .iter()
                .map(|frame| match frame.func_name() {
                    Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
                    None => format!("<function {}>", frame.func_index()),
                })
                .collect()
        })
        .unwrap_or_default();
    Exception {
        name,
        message,
        stack,
    }
}

fn trap_title(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::ExceededMemory => "ran out of memory (limit reached)",
        _ => "the guest trapped",
    }
}

/// The status a client gets when the guest sent none.
fn outcome_status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::ExceededCpu | Outcome::ExceededMemory => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::ExceededWallTime => StatusCode::GATEWAY_TIMEOUT,
        Outcome::Ok
        | Outcome::Exception
        | Outcome::Canceled
        | Outcome::ResponseStreamDisconnected => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn outcome_response(outcome: Outcome, meter: &RequestMeter) -> Response<Body> {
    let message = match outcome {
        Outcome::ExceededCpu => format!(
            "the tenant exceeded its CPU time limit ({} ms)",
            meter.cpu_limit().as_millis()
        ),
        Outcome::ExceededMemory => "the tenant exceeded its memory limit".to_string(),
        Outcome::ExceededWallTime => format!(
            "the tenant did not answer within its time limit ({} ms)",
            meter.wall_limit().as_millis()
        ),
        Outcome::Exception => "the tenant's code failed (trap)".to_string(),
        Outcome::Ok => "the tenant returned without sending a response".to_string(),
        Outcome::Canceled | Outcome::ResponseStreamDisconnected => {
            "the request was canceled".to_string()
        }
    };
    error_response(outcome_status(outcome), &message)
}

/// Headers whose values are credentials: never on an event.
const CREDENTIALS: [http::HeaderName; 3] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
];

/// The most bytes of one header's value an event keeps.
const MAX_HEADER_VALUE_BYTES: usize = 1024;

/// The most bytes of header values one event keeps in all.
const MAX_HEADERS_BYTES: usize = 16 * 1024;

/// A request's headers as its event carries them: credentials and the
/// tenant's secrets redacted, long values cut, the rest left off once
/// [`MAX_HEADERS_BYTES`] are kept.
pub(crate) fn event_headers(headers: &http::HeaderMap, secrets: &[String]) -> RequestHeaders {
    let mut out = RequestHeaders::new();
    let mut kept = 0;
    for name in headers.keys() {
        let value = if CREDENTIALS.contains(name) {
            REDACTED.to_string()
        } else {
            let mut value = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ");
            let cut = truncate_message(&mut value, MAX_HEADER_VALUE_BYTES);
            redact(&mut value, secrets, cut);
            value
        };
        kept += name.as_str().len() + value.len();
        if kept > MAX_HEADERS_BYTES {
            break;
        }
        out.insert(name.as_str().to_string(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_headers_hide_credentials_and_secrets() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "Bearer t0ken".parse().unwrap());
        headers.insert("cookie", "session=abc".parse().unwrap());
        headers.insert("x-api-key", "key sk-live-1234".parse().unwrap());
        headers.append("accept", "text/html".parse().unwrap());
        headers.append("accept", "application/json".parse().unwrap());
        let event = event_headers(&headers, &["sk-live-1234".to_string()]);
        assert_eq!(event["authorization"], REDACTED);
        assert_eq!(event["cookie"], REDACTED);
        assert_eq!(event["x-api-key"], "key [REDACTED]");
        assert_eq!(event["accept"], "text/html, application/json");
        let long = "v".repeat(4000);
        let mut many = http::HeaderMap::new();
        for i in 0..40 {
            many.insert(
                http::HeaderName::try_from(format!("x-{i:02}")).unwrap(),
                long.parse().unwrap(),
            );
        }
        let event = event_headers(&many, &[]);
        assert!(event.values().all(|v| v.len() == MAX_HEADER_VALUE_BYTES));
        assert_eq!(
            event.len(),
            MAX_HEADERS_BYTES / (MAX_HEADER_VALUE_BYTES + 4)
        );
    }
}
