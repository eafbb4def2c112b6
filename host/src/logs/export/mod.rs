//! Export: entries sent, as they are published, to the services people
//! use (Honeycomb, Grafana, Axiom, Datadog…) over OTLP/HTTP, which all of
//! them accept. Opt-in per tenant (`[[tenants.logs.export]]`) or for every
//! tenant (`[[logs.export]]`); nothing leaves the host otherwise.
//!
//! ```text
//!  Publisher (seq) ─► Exports::send ─► one Exporter per destination:
//!                                       bounded queue ─► task: batch ─► otlp (protobuf, gzip) ─► POST, retried
//! ```
//!
//! The publisher only queues: a destination that is slow or down never
//! slows a request or a viewer. What it loses is counted and told
//! (`sender`).

mod otlp;
mod sender;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::base::config::{DEFAULT_MAX_QUEUED, ExportTable, HeaderValueSource, SecretSource};
use crate::base::metrics::Metrics;
use crate::base::sync::lock;
use crate::logs::entry::LogEntry;
use crate::logs::filter::Sample;
use crate::logs::sink::LogSink;
use sender::{Exporter, Reporter};

/// A destination, settled: its headers' values read.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Destination {
    uri: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    sample: Option<Sample>,
    max_queued: usize,
}

impl Destination {
    /// `table` with its header values read (`secret` reads a `{ env }` or
    /// `{ file }` source); the error names what could not be read.
    pub(crate) fn settle(
        table: &ExportTable,
        secret: impl Fn(&SecretSource) -> Result<String, String>,
    ) -> Result<Destination, String> {
        let uri: http::Uri = table
            .otlp
            .parse()
            .map_err(|e| format!("otlp: not a URL: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in &table.headers {
            let value = match value {
                HeaderValueSource::Text(text) => text.clone(),
                HeaderValueSource::Secret(source) => {
                    secret(source).map_err(|why| format!("header {name:?}: {why}"))?
                }
            };
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            let mut value = http::HeaderValue::from_str(&value)
                .map_err(|_| format!("header {name}: its value cannot be a header's"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Destination {
            uri,
            headers,
            sample: table.sampling_rate.map(|rate| Sample {
                per_million: (rate * 1e6).round() as u32,
            }),
            max_queued: table.max_queued.unwrap_or(DEFAULT_MAX_QUEUED),
        })
    }

    /// Each of `tables` settled; one that cannot be is told in `problems`,
    /// named by `name(position)` (from 1).
    pub(crate) fn settle_all(
        tables: &[ExportTable],
        secret: impl Fn(&SecretSource) -> Result<String, String>,
        name: impl Fn(usize) -> String,
        problems: &mut Vec<String>,
    ) -> Vec<Destination> {
        let mut settled = Vec::new();
        for (index, table) in tables.iter().enumerate() {
            match Destination::settle(table, &secret) {
                Ok(destination) => settled.push(destination),
                Err(why) => problems.push(format!("{}: {why}", name(index + 1))),
            }
        }
        settled
    }

    /// How the destination is named on `/metrics` and in reports: scheme,
    /// host, port and path; never a credential or a query.
    pub(crate) fn label(&self) -> String {
        let host = self.uri.host().unwrap_or("");
        let port = self.uri.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{}://{host}{port}{}",
            self.uri.scheme_str().unwrap_or("http"),
            self.uri.path()
        )
    }
}

/// Header names only: values may be API keys.
impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Destination")
            .field("url", &self.label())
            .field("headers", &names)
            .field("sample", &self.sample)
            .field("max_queued", &self.max_queued)
            .finish()
    }
}

/// Every exporter of the host, and which tenant's entries go where.
pub(crate) struct Exports {
    /// `[[logs.export]]`: every tenant's.
    everyone: Vec<Arc<Exporter>>,
    /// Per tenant, its own destinations.
    routes: ArcSwap<HashMap<String, Vec<Arc<Exporter>>>>,
    /// The running exporters, by destination: a tenant's snapshot that
    /// keeps a destination keeps its exporter (and its queue).
    running: Mutex<HashMap<Destination, Weak<Exporter>>>,
    metrics: Arc<Metrics>,
    reporter: Reporter,
}

impl Exports {
    /// The host-wide destinations, started (needs a Tokio runtime).
    pub(crate) fn new(everyone: Vec<Destination>, metrics: Arc<Metrics>) -> Exports {
        let exports = Exports {
            everyone: Vec::new(),
            routes: ArcSwap::default(),
            running: Mutex::default(),
            metrics,
            reporter: Reporter::default(),
        };
        let everyone = everyone.into_iter().map(|d| exports.exporter(d)).collect();
        Exports {
            everyone,
            ..exports
        }
    }

    /// The exporter for `destination`: the running one, or a new one.
    fn exporter(&self, destination: Destination) -> Arc<Exporter> {
        let mut running = lock(&self.running);
        if let Some(exporter) = running.get(&destination).and_then(Weak::upgrade) {
            return exporter;
        }
        running.retain(|_, exporter| exporter.strong_count() > 0);
        let exporter = Arc::new(Exporter::start(
            destination.clone(),
            self.metrics.clone(),
            self.reporter.clone(),
        ));
        running.insert(destination, Arc::downgrade(&exporter));
        exporter
    }

    /// Each tenant's own destinations from now on (the registry's, each
    /// time it changes); an exporter no tenant names any more stops.
    pub(crate) fn route(&self, routes: HashMap<String, Vec<Destination>>) {
        let routes = routes
            .into_iter()
            .filter(|(_, destinations)| !destinations.is_empty())
            .map(|(slug, destinations)| {
                let exporters = destinations.into_iter().map(|d| self.exporter(d)).collect();
                (slug, exporters)
            })
            .collect();
        self.routes.store(Arc::new(routes));
    }

    /// Where exporters tell a tenant what they lost (the publisher).
    pub(crate) fn report_to(&self, sink: Weak<dyn LogSink>) {
        let _ = self.reporter.set(sink);
    }

    /// Whether `slug`'s entries go anywhere.
    pub(crate) fn wants(&self, slug: &str) -> bool {
        !self.everyone.is_empty() || self.routes.load().contains_key(slug)
    }

    /// Queues published entries of `slug` for each of its destinations.
    pub(crate) fn send(&self, slug: &str, entries: &[LogEntry]) {
        for exporter in &self.everyone {
            exporter.push(entries);
        }
        if let Some(exporters) = self.routes.load().get(slug) {
            for exporter in exporters {
                exporter.push(entries);
            }
        }
    }

    /// Sends what is queued, once, within `patience` (at shutdown).
    pub(crate) async fn close(&self, patience: Duration) {
        let mut all: Vec<Arc<Exporter>> = self.everyone.clone();
        all.extend(self.routes.load().values().flatten().cloned());
        for exporter in &all {
            exporter.begin_close();
        }
        let finished = async {
            for exporter in &all {
                exporter.finished().await;
            }
        };
        let _ = tokio::time::timeout(patience, finished).await;
    }
}
