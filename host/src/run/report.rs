//! How a request ended: the report (a trap's or limit's entry, then the
//! `type:"request"` event) made exactly once, and the response a client
//! gets when the guest sent none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use http::{Response, StatusCode};

use crate::base::metrics::{Metrics, RequestDone};
use crate::base::responses::{Body, error_response};
use crate::logs::capture::RequestCapture;
use crate::logs::entry::{Exception, Level, LogEntry, Outcome, RequestEvent};
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
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) method: String,
    /// The path the guest saw.
    pub(crate) path: String,
    /// The status the guest sent, 0 until it sends one.
    pub(crate) status: Arc<AtomicU16>,
    pub(crate) done: bool,
    /// Set when the guest trapped: what and where.
    pub(crate) exception: Option<Exception>,
    /// Set by the edge when the response body was dropped before its end.
    pub(crate) disconnected: Arc<std::sync::atomic::AtomicBool>,
}

impl RequestReport {
    pub(crate) fn finish(mut self, result: wasmtime::Result<()>) -> Outcome {
        self.done = true;
        let outcome = match &result {
            Ok(()) if self.disconnected.load(Ordering::Relaxed) => {
                Outcome::ResponseStreamDisconnected
            }
            Ok(()) => Outcome::Ok,
            Err(_) if self.meter.wall_exceeded() => Outcome::ExceededWallTime,
            Err(_) if self.meter.cpu_exceeded() => Outcome::ExceededCpu,
            Err(_) if self.meter.memory_exceeded() => Outcome::ExceededMemory,
            Err(_) => Outcome::Exception,
        };
        self.capture.finish();
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
        self.publish_event(outcome);
        outcome
    }

    fn publish_event(&self, outcome: Outcome) {
        let sent = self.status.load(Ordering::Relaxed);
        let status = match (sent, outcome) {
            (0, Outcome::Canceled) => None,
            (0, outcome) => Some(outcome_status(outcome).as_u16()),
            (sent, _) => Some(sent),
        };
        let event = RequestEvent {
            method: self.method.clone(),
            path: self.path.clone(),
            status,
            outcome,
            wall_ms: self.meter.wall().as_millis() as u64,
            cpu_ms: self.meter.cpu_used().as_millis() as u64,
            subrequests: self.subrequests.made.load(Ordering::Relaxed),
            exception: self.exception.clone(),
        };
        tracing::debug!(?event, "request finished");
        let meta = self.capture.meta();
        let made = self.subrequests.made.load(Ordering::Relaxed);
        let refused = self.subrequests.refused.load(Ordering::Relaxed);
        let (written, capped) = self.capture.output_bytes();
        self.metrics.request(&RequestDone {
            slug: &meta.slug,
            version: &meta.version,
            outcome: outcome.as_str(),
            status,
            wall: self.meter.wall(),
            cpu: self.meter.cpu_used(),
            output_bytes: written as u64,
            capped_bytes: capped as u64,
            outbound_sent: made.saturating_sub(refused),
            outbound_refused: refused,
        });
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
