//! The operator's numbers: Prometheus metrics, kept by the parts that see
//! the events and served in the OpenMetrics text format on their own
//! listener (`edge::metrics`, `[metrics] addr`).
//!
//! Built on `prometheus-client` (the Prometheus project's Rust client),
//! never hand-written text. Two kinds:
//!
//! - **counted as they happen** ([`Metrics`]): requests, their durations
//!   and CPU, log entries published, bytes of guest output and what was
//!   cut or capped, outbound calls, deploys, compiled components;
//! - **sampled at scrape time** ([`Sampled`], a collector the composition
//!   root fills in): viewers per slug, the front door's refusals, the log
//!   stream's refusals, the cluster link and its counters — values those
//!   parts already keep, read rather than duplicated.
//!
//! **Cardinality.** The `slug` and `version` labels only ever take values of
//! tenants the host serves: a request reaches these counters after routing
//! found its tenant, so a client cannot mint label values with made-up
//! hosts or paths. A deleted server's series stay until restart (Prometheus
//! sees them go stale); everything else is a fixed, small set.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

mod sampled;

use sampled::SharedCollector;
pub(crate) use sampled::{ClusterSample, Sampled};

/// `{slug}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SlugLabel {
    pub(crate) slug: String,
}

/// `{slug, version, outcome, status}`: `status` is the class (`2xx`…), or
/// `none` when the client went away before a status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) slug: String,
    pub(crate) version: String,
    pub(crate) outcome: &'static str,
    pub(crate) status: &'static str,
}

/// `{slug, level}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EntryLabels {
    pub(crate) slug: String,
    pub(crate) level: &'static str,
}

/// `{slug, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SlugReasonLabels {
    pub(crate) slug: String,
    pub(crate) reason: &'static str,
}

/// `{destination, result}` of exported entries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExportLabels {
    pub(crate) destination: String,
    pub(crate) result: &'static str,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

/// `{slug, result}`: an outbound call `sent` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutboundLabels {
    pub(crate) slug: String,
    pub(crate) result: &'static str,
}

/// `{action}` of a deploy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ActionLabel {
    pub(crate) action: &'static str,
}

/// `{cache}`: `hit`, `miss` or `disabled`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheLabel {
    pub(crate) cache: &'static str,
}

/// The metrics counted as things happen. Cheap to share (`Arc`); every
/// method takes `&self`.
#[derive(Debug)]
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<SlugLabel, Histogram>,
    cpu: Family<SlugLabel, Histogram>,
    output_bytes: Family<SlugLabel, Counter>,
    output_capped_bytes: Family<SlugLabel, Counter>,
    entries: Family<EntryLabels, Counter>,
    entries_truncated: Family<SlugLabel, Counter>,
    entries_dropped: Family<ReasonLabel, Counter>,
    entries_stored: Counter,
    entries_unstored: Family<SlugReasonLabels, Counter>,
    exported: Family<ExportLabels, Counter>,
    outbound: Family<OutboundLabels, Counter>,
    deploys: Family<ActionLabel, Counter>,
    components: Family<CacheLabel, Counter>,
    /// The scrape-time values, once the composition root has wired them.
    sampled: Arc<SampledSlot>,
    registry: Registry,
}

/// Where [`Sampled`] goes once the parts it reads exist.
#[derive(Debug, Default)]
struct SampledSlot(std::sync::OnceLock<Sampled>);

impl Collector for SampledSlot {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        match self.0.get() {
            Some(sampled) => sampled.encode(encoder),
            None => Ok(()),
        }
    }
}

/// Request durations: 1 ms to ~65 s.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// The metrics, registered; [`Metrics::sample`] adds the scrape-time
    /// ones.
    pub(crate) fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("mctx");
        let metrics = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(seconds_buckets),
            cpu: Family::new_with_constructor(seconds_buckets),
            output_bytes: Family::default(),
            output_capped_bytes: Family::default(),
            entries: Family::default(),
            entries_truncated: Family::default(),
            entries_dropped: Family::default(),
            entries_stored: Counter::default(),
            entries_unstored: Family::default(),
            exported: Family::default(),
            outbound: Family::default(),
            deploys: Family::default(),
            components: Family::default(),
            sampled: Arc::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests a tenant handled, by how they ended",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Wall-clock time of a tenant's requests, arrival to end",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register_with_unit(
            "request_cpu",
            "Guest CPU time of a tenant's requests",
            Unit::Seconds,
            metrics.cpu.clone(),
        );
        registry.register_with_unit(
            "guest_output",
            "Bytes guests wrote to stdout, stderr and wasi:logging",
            Unit::Bytes,
            metrics.output_bytes.clone(),
        );
        registry.register_with_unit(
            "guest_output_capped",
            "Bytes of guest output dropped past a request's 256 KiB budget",
            Unit::Bytes,
            metrics.output_capped_bytes.clone(),
        );
        registry.register(
            "log_entries",
            "Log entries published (made only while someone watches the slug, or the host keeps its logs)",
            metrics.entries.clone(),
        );
        registry.register(
            "log_entries_truncated",
            "Published entries whose message was cut at 10 KB",
            metrics.entries_truncated.clone(),
        );
        registry.register(
            "log_entries_dropped",
            "Entries a viewer never got: the hub fell behind (hub), a viewer fell behind (viewer), another host's never arrived (cluster)",
            metrics.entries_dropped.clone(),
        );
        registry.register(
            "log_entries_stored",
            "Entries written to the log store (tenants with retention)",
            metrics.entries_stored.clone(),
        );
        registry.register(
            "log_entries_unstored",
            "Entries of retained tenants not kept: dropped oldest for newer (quota), refused while the writer was behind (backlog), not written (failed)",
            metrics.entries_unstored.clone(),
        );
        registry.register(
            "log_export_entries",
            "Entries for an export destination: sent, dropped (the queue was full, or the host stopped while it was down) or rejected (it answered 4xx)",
            metrics.exported.clone(),
        );
        registry.register(
            "outbound_requests",
            "Outbound HTTP calls of tenants, sent or refused",
            metrics.outbound.clone(),
        );
        registry.register(
            "deploys",
            "Changes to deployed servers (deploy API and reloads), by action",
            metrics.deploys.clone(),
        );
        registry.register(
            "components_loaded",
            "Components made ready, by whether the compiled-code cache had them",
            metrics.components.clone(),
        );
        registry.register_collector(Box::new(SharedCollector(metrics.sampled.clone())));
        Arc::new(Metrics {
            registry,
            ..metrics
        })
    }

    /// Where the scrape-time values come from (set once, by the
    /// composition root).
    pub(crate) fn sample(&self, sampled: Sampled) {
        let _ = self.sampled.0.set(sampled);
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// One tenant version's request metrics: its label values allocated
    /// and hashed once, when the version serves its first request, rather
    /// than for every request.
    pub(crate) fn version(&self, slug: &str, version: &str) -> VersionMetrics {
        let by_slug = SlugLabel {
            slug: slug.to_string(),
        };
        VersionMetrics {
            requests: self.requests.clone(),
            outbound: self.outbound.clone(),
            slug: slug.to_string(),
            version: version.to_string(),
            counted: Default::default(),
            duration: self.duration.get_or_create(&by_slug).clone(),
            cpu: self.cpu.get_or_create(&by_slug).clone(),
            output_bytes: self.output_bytes.get_or_create(&by_slug).clone(),
            output_capped_bytes: self.output_capped_bytes.get_or_create(&by_slug).clone(),
            outbound_sent: OnceLock::new(),
            outbound_refused: OnceLock::new(),
        }
    }

    /// An entry published for `slug`.
    pub(crate) fn entry(&self, slug: &str, level: &'static str, truncated: bool) {
        self.entries
            .get_or_create(&EntryLabels {
                slug: slug.to_string(),
                level,
            })
            .inc();
        if truncated {
            self.entries_truncated
                .get_or_create(&SlugLabel {
                    slug: slug.to_string(),
                })
                .inc();
        }
    }

    /// Entries some viewer never got, and why (`hub`, `viewer`, `cluster`).
    pub(crate) fn entries_dropped(&self, reason: &'static str, count: u64) {
        self.entries_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(count);
    }

    /// Entries written to the log store.
    pub(crate) fn entries_stored(&self, count: u64) {
        self.entries_stored.inc_by(count);
    }

    /// Entries of a retained tenant not kept, and why (`quota`, `backlog`,
    /// `failed`).
    pub(crate) fn entries_unstored(&self, slug: &str, reason: &'static str, count: u64) {
        self.entries_unstored
            .get_or_create(&SlugReasonLabels {
                slug: slug.to_string(),
                reason,
            })
            .inc_by(count);
    }

    /// Entries for an export destination, and what became of them.
    pub(crate) fn export(&self, destination: &str, result: &'static str, count: u64) {
        self.exported
            .get_or_create(&ExportLabels {
                destination: destination.to_string(),
                result,
            })
            .inc_by(count);
    }

    pub(crate) fn deploy(&self, action: &'static str) {
        self.deploys.get_or_create(&ActionLabel { action }).inc();
    }

    pub(crate) fn component_loaded(&self, cache: &'static str) {
        self.components.get_or_create(&CacheLabel { cache }).inc();
    }
}

/// The outcomes a request ends with, as `mctx_requests_total` labels them.
const OUTCOMES: [&str; 7] = [
    "ok",
    "exception",
    "exceededCpu",
    "exceededMemory",
    "exceededWallTime",
    "canceled",
    "responseStreamDisconnected",
];

/// Status classes, as `mctx_requests_total` labels them.
const STATUS_CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

/// One tenant version's handles on the request metrics (see
/// [`Metrics::version`]). A `(outcome, status)` series is created the
/// first time it happens, so that `/metrics` lists only what occurred.
#[derive(Debug)]
pub(crate) struct VersionMetrics {
    requests: Family<RequestLabels, Counter>,
    outbound: Family<OutboundLabels, Counter>,
    slug: String,
    version: String,
    counted: [[OnceLock<Counter>; STATUS_CLASSES.len()]; OUTCOMES.len()],
    duration: Histogram,
    cpu: Histogram,
    output_bytes: Counter,
    output_capped_bytes: Counter,
    outbound_sent: OnceLock<Counter>,
    outbound_refused: OnceLock<Counter>,
}

impl VersionMetrics {
    /// A request of this version that ended.
    pub(crate) fn request(&self, done: &RequestDone) {
        let class = match done.status {
            None => 0,
            Some(100..=199) => 1,
            Some(200..=299) => 2,
            Some(300..=399) => 3,
            Some(400..=499) => 4,
            Some(_) => 5,
        };
        let outcome = OUTCOMES
            .iter()
            .position(|name| *name == done.outcome)
            .unwrap_or(0);
        self.counted[outcome][class]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        slug: self.slug.clone(),
                        version: self.version.clone(),
                        outcome: OUTCOMES[outcome],
                        status: STATUS_CLASSES[class],
                    })
                    .clone()
            })
            .inc();
        self.duration.observe(done.wall.as_secs_f64());
        self.cpu.observe(done.cpu.as_secs_f64());
        if done.output_bytes > 0 {
            self.output_bytes.inc_by(done.output_bytes);
        }
        if done.capped_bytes > 0 {
            self.output_capped_bytes.inc_by(done.capped_bytes);
        }
        for (result, count, counter) in [
            ("sent", done.outbound_sent, &self.outbound_sent),
            ("refused", done.outbound_refused, &self.outbound_refused),
        ] {
            if count > 0 {
                counter
                    .get_or_init(|| {
                        self.outbound
                            .get_or_create(&OutboundLabels {
                                slug: self.slug.clone(),
                                result,
                            })
                            .clone()
                    })
                    .inc_by(u64::from(count));
            }
        }
    }
}

/// The facts of one finished request, for [`VersionMetrics::request`].
pub(crate) struct RequestDone {
    pub(crate) outcome: &'static str,
    pub(crate) status: Option<u16>,
    pub(crate) wall: Duration,
    pub(crate) cpu: Duration,
    pub(crate) output_bytes: u64,
    pub(crate) capped_bytes: u64,
    pub(crate) outbound_sent: u32,
    pub(crate) outbound_refused: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(outcome: &'static str, status: Option<u16>, sent: u32) -> RequestDone {
        RequestDone {
            outcome,
            status,
            wall: Duration::from_millis(3),
            cpu: Duration::from_millis(1),
            output_bytes: 10,
            capped_bytes: 0,
            outbound_sent: sent,
            outbound_refused: 0,
        }
    }

    #[test]
    fn a_versions_handles_count_into_the_shared_families() {
        let metrics = Metrics::new();
        let v1 = metrics.version("s", "1.0.0");
        let again = metrics.version("s", "1.0.0");
        v1.request(&done("ok", Some(200), 0));
        again.request(&done("ok", Some(204), 2));
        v1.request(&done("exceededCpu", Some(503), 0));
        let text = metrics.render();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(r#"mctx_requests_total{slug="s",version="1.0.0",outcome="ok",status="2xx"} 2"#),
            "{text}"
        );
        assert!(has(
            r#"mctx_requests_total{slug="s",version="1.0.0",outcome="exceededCpu",status="5xx"} 1"#
        ));
        assert!(
            has(r#"mctx_outbound_requests_total{slug="s",result="sent"} 2"#),
            "{text}"
        );
        assert!(
            has(r#"mctx_request_duration_seconds_count{slug="s"} 3"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"outcome="canceled""#),
            "only what happened is listed"
        );
    }
}
