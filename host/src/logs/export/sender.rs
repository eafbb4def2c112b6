//! One destination's exporter: a bounded queue the publisher pushes to
//! (never waiting), and a task that sends what is queued in batches, POST
//! by POST, retrying with backoff while the destination is down.
//!
//! Bounded: past `max_queued` entries waiting, the oldest go, counted per
//! tenant; the batch being sent (or retried) holds at most as many again. What did not arrive (dropped from the queue, or refused by the
//! destination with a 4xx) is on `/metrics` and, at once and then at most
//! once a minute, told to the tenant's own log (a `warn` entry its owner's
//! viewers see).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{Destination, otlp};
use crate::base::metrics::Metrics;
use crate::base::sync::lock;
use crate::logs::entry::{Level, LogEntry, RequestMeta};
use crate::logs::sink::LogSink;

/// Entries one POST carries at most.
const BATCH: usize = 1000;
/// How long one POST may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often losses are told to a tenant's log, after the first time.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Where an exporter tells a tenant what it lost: the publisher, set once
/// it exists (it holds the exporters).
pub(super) type Reporter = Arc<OnceLock<Weak<dyn LogSink>>>;

/// An exporter; its task stops when it is dropped.
pub(super) struct Exporter {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    destination: Destination,
    label: String,
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
    closing: AtomicBool,
    metrics: Arc<Metrics>,
    reporter: Reporter,
}

#[derive(Default)]
struct Queue {
    entries: VecDeque<LogEntry>,
    /// Not delivered since the last report, per tenant: how many, the
    /// version to report under, and the last reason.
    lost: HashMap<String, Lost>,
}

struct Lost {
    count: u64,
    version: String,
    why: String,
}

impl Exporter {
    /// Starts exporting to `destination` (on the current runtime).
    pub(super) fn start(
        destination: Destination,
        metrics: Arc<Metrics>,
        reporter: Reporter,
    ) -> Exporter {
        let label = destination.label();
        let shared = Arc::new(Shared {
            destination,
            label: label.clone(),
            queue: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            metrics,
            reporter,
        });
        let task = tokio::spawn(tracing::Instrument::instrument(
            run(shared.clone()),
            tracing::info_span!("log export", destination = %label),
        ));
        Exporter { shared, task }
    }

    /// Queues `entries` of one tenant (those its sampling rate picks).
    pub(super) fn push(&self, entries: &[LogEntry]) {
        let shared = &self.shared;
        let sample = shared.destination.sample;
        let mut queue = lock(&shared.queue);
        let mut dropped = 0;
        for entry in entries {
            if sample.is_some_and(|s| !s.picks(&entry.meta.request_id)) {
                continue;
            }
            if queue.entries.len() >= shared.destination.max_queued
                && let Some(oldest) = queue.entries.pop_front()
            {
                queue.lose(&oldest, "the destination is behind or down (max_queued)");
                dropped += 1;
            }
            queue.entries.push_back(entry.clone());
        }
        drop(queue);
        if dropped > 0 {
            shared.metrics.export(&shared.label, "dropped", dropped);
        }
        shared.wake.notify_one();
    }

    /// Asks the task to send what is queued once (no retries) and stop.
    pub(super) fn begin_close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Returns once the task has stopped.
    pub(super) async fn finished(&self) {
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Queue {
    fn lose(&mut self, entry: &LogEntry, why: &str) {
        let lost = self
            .lost
            .entry(entry.meta.slug.clone())
            .or_insert_with(|| Lost {
                count: 0,
                version: entry.meta.version.clone(),
                why: String::new(),
            });
        lost.count += 1;
        lost.why = why.to_string();
    }
}

async fn run(shared: Arc<Shared>) {
    let mut client = Client::new(&shared.destination);
    // The first loss is told at once; later ones once a period.
    let mut next_report = Instant::now();
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let batch: Vec<LogEntry> = {
            let mut queue = lock(&shared.queue);
            // Never more than `max_queued` held in a batch being retried
            // either: memory stays within twice the bound.
            let n = queue
                .entries
                .len()
                .min(BATCH)
                .min(shared.destination.max_queued);
            queue.entries.drain(..n).collect()
        };
        if !batch.is_empty() {
            send(&shared, &mut client, batch, &mut next_report).await;
        }
        report_if_due(&shared, &mut next_report);
        if closing && lock(&shared.queue).entries.is_empty() {
            return;
        }
        if lock(&shared.queue).entries.is_empty() {
            let _ = tokio::time::timeout(REPORT_EVERY, shared.wake.notified()).await;
        }
    }
}

/// POSTs one batch until it is taken, refused, or the host closes.
async fn send(
    shared: &Shared,
    client: &mut Client,
    batch: Vec<LogEntry>,
    next_report: &mut Instant,
) {
    let body = Bytes::from(otlp::body(&batch));
    let mut backoff = Duration::from_secs(1);
    loop {
        let why = match client.post(body.clone()).await {
            Ok(status) if status.is_success() => {
                shared
                    .metrics
                    .export(&shared.label, "sent", batch.len() as u64);
                return;
            }
            // The destination will not take this batch, however often.
            Ok(status) if status.is_client_error() && !matches!(status.as_u16(), 408 | 429) => {
                let why = format!("the destination refused it ({status})");
                tracing::warn!(
                    status = status.as_u16(),
                    entries = batch.len(),
                    "log export refused"
                );
                lose_all(shared, &batch, &why, "rejected");
                return;
            }
            Ok(status) => format!("the destination answered {status}"),
            Err(e) => e,
        };
        if shared.closing.load(Ordering::Acquire) {
            lose_all(
                shared,
                &batch,
                &format!("the host stopped while {why}"),
                "dropped",
            );
            return;
        }
        tracing::debug!(%why, retry_in = ?backoff, "log export failed");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shared.wake.notified(), if shared.closing.load(Ordering::Acquire) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Meanwhile what queues up is bounded by `push`, and what it drops
        // is told.
        report_if_due(shared, next_report);
    }
}

/// [`report`], when the last one is a period old.
fn report_if_due(shared: &Shared, next_report: &mut Instant) {
    if Instant::now() >= *next_report && report(shared) {
        *next_report = Instant::now() + REPORT_EVERY;
    }
}

fn lose_all(shared: &Shared, batch: &[LogEntry], why: &str, result: &'static str) {
    let mut queue = lock(&shared.queue);
    for entry in batch {
        queue.lose(entry, why);
    }
    drop(queue);
    shared
        .metrics
        .export(&shared.label, result, batch.len() as u64);
}

/// Tells each tenant that lost entries since the last report; returns
/// whether there was anything to tell.
fn report(shared: &Shared) -> bool {
    let lost = std::mem::take(&mut lock(&shared.queue).lost);
    if lost.is_empty() {
        return false;
    }
    let Some(sink) = shared.reporter.get().and_then(Weak::upgrade) else {
        return true;
    };
    for (slug, lost) in lost {
        let meta = Arc::new(RequestMeta {
            slug: slug.clone(),
            version: lost.version,
            request_id: String::new(),
        });
        let message = format!(
            "log export to {}: {} entries not delivered ({}); at most one such report a minute",
            shared.label, lost.count, lost.why
        );
        sink.publish(&slug, vec![LogEntry::from_host(meta, Level::Warn, message)]);
    }
    true
}

/// An HTTP/1.1 connection to the destination, kept between batches.
struct Client {
    uri: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    sender: Option<http1::SendRequest<Full<Bytes>>>,
    /// For https: made at the first connection (it reads the system's
    /// roots), then kept for every reconnection.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Client {
    fn new(destination: &Destination) -> Client {
        Client {
            uri: destination.uri.clone(),
            headers: destination.headers.clone(),
            sender: None,
            tls: None,
        }
    }

    async fn post(&mut self, body: Bytes) -> Result<StatusCode, String> {
        match tokio::time::timeout(TIMEOUT, self.try_post(body)).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(format!("no answer within {} s", TIMEOUT.as_secs()))
            }
        }
    }

    async fn try_post(&mut self, body: Bytes) -> Result<StatusCode, String> {
        let ready = match &mut self.sender {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            self.sender = Some(self.connect().await?);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let authority = self.uri.authority().expect("checked in config").as_str();
        let mut request =
            http::Request::post(self.uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(http::header::HOST, authority)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .header(http::header::CONTENT_ENCODING, "gzip")
                .body(Full::new(body))
                .map_err(|e| format!("cannot build the request: {e}"))?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let status = response.status();
        // Read (and discard) the answer, so the connection can be reused.
        let _ = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok(status)
    }

    async fn connect(&mut self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let host = self
            .uri
            .host()
            .expect("checked in config")
            .trim_matches(['[', ']']);
        let https = self.uri.scheme_str() == Some("https");
        let port = self.uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if https {
            let connector = match &self.tls {
                Some(connector) => connector.clone(),
                None => {
                    let config =
                        crate::base::tls::cli_client_config(None).map_err(|e| e.to_string())?;
                    self.tls
                        .insert(tokio_rustls::TlsConnector::from(config))
                        .clone()
                }
            };
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("{host:?} is not a host name: {e}"))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS failed: {e}"))?;
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let _ = connection.await;
        },
        tracing::debug_span!("log export connection"),
    ));
    Ok(sender)
}
