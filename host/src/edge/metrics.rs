//! `GET /metrics` on its own listener (`[metrics] addr`, `--metrics-addr`):
//! the OpenMetrics text of `base::metrics`. Never on the tenant-facing port,
//! so a tenant's client can neither read nor flood it; off unless set.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::base::metrics::Metrics;
use crate::base::responses::{Body, error_response, full_body};

/// What Prometheus negotiates for the OpenMetrics text.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `listener` until aborted.
pub(crate) fn spawn(listener: TcpListener, metrics: Arc<Metrics>) -> JoinHandle<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics at http://{address}/metrics");
    }
    let task = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(answer(&metrics, &request)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::spawn(task.instrument(tracing::info_span!("metrics")))
}

fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Body> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(full_body(metrics.render()));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        (_, "/metrics") => error_response(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
        (_, path) => error_response(
            StatusCode::NOT_FOUND,
            &format!("no such endpoint: {path} (this listener serves /metrics only)"),
        ),
    }
}
