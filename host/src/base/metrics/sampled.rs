//! The metrics sampled at scrape time: values the composition root reads
//! from the parts that keep them (viewers, refusals, the cluster link)
//! rather than counting them twice.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{ReasonLabel, SlugLabel};

/// Values read at scrape time from the parts that keep them.
pub(crate) struct Sampled {
    /// Each slug watched here, with its number of viewers.
    pub(crate) viewers: Box<dyn Fn() -> Vec<(String, usize)> + Send + Sync>,
    /// The front door's refusals since start, by reason.
    pub(crate) refusals: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>,
    /// The log stream's refusals since start, by HTTP status.
    pub(crate) stream_refusals: Box<dyn Fn() -> Vec<(u16, u64)> + Send + Sync>,
    /// On a cluster: link up, entries sent, unsent, received, missed.
    pub(crate) cluster: Box<dyn Fn() -> Option<ClusterSample> + Send + Sync>,
    /// Instances kept for reuse host-wide, and the most that may be.
    pub(crate) kept_instances: Box<dyn Fn() -> (usize, usize) + Send + Sync>,
    /// Each tenant's key-value store: slug, bytes used, bytes granted.
    pub(crate) keyvalue: Box<dyn Fn() -> Vec<(String, u64, u64)> + Send + Sync>,
    /// Bytes the instance pool's unused slots keep resident.
    pub(crate) pool_idle_resident: Box<dyn Fn() -> usize + Send + Sync>,
}

/// The cluster link, sampled.
pub(crate) struct ClusterSample {
    pub(crate) up: bool,
    pub(crate) sent: u64,
    pub(crate) unsent: u64,
    pub(crate) received: u64,
    pub(crate) missed: u64,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sampled")
    }
}

#[derive(Debug)]
pub(super) struct SharedCollector(pub(super) Arc<dyn Collector>);

impl Collector for SharedCollector {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.encode(encoder)
    }
}

/// `{status}` of a refused log stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// `{direction}` of cluster entries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let viewers = (self.viewers)();
        let mut family = encoder.encode_descriptor(
            "viewers",
            "Log viewers connected to this host, by slug",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (slug, count) in viewers {
            let gauge = ConstGauge::new(count as i64);
            gauge.encode(family.encode_family(&SlugLabel { slug })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "connections_refused",
            "Connections and requests the front door refused, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, count) in (self.refusals)() {
            ConstCounter::new(count).encode(family.encode_family(&ReasonLabel { reason })?)?;
        }
        let mut family = encoder.encode_descriptor(
            "log_stream_refusals",
            "Log-stream connections refused, by HTTP status",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (status, count) in (self.stream_refusals)() {
            ConstCounter::new(count).encode(family.encode_family(&StatusLabel { status })?)?;
        }
        let (kept, max) = (self.kept_instances)();
        let pool_idle_resident = (self.pool_idle_resident)();
        for (name, help, value) in [
            (
                "pool_idle_resident_bytes",
                "Bytes the instance pool's unused slots keep resident (tables; memories too when reset in place, -O pooling-pagemap-scan)",
                pool_idle_resident,
            ),
            (
                "instances_kept",
                "Instances kept between requests for reuse (instance_reuse), host-wide",
                kept,
            ),
            (
                "instances_kept_max",
                "The most instances the host keeps for reuse at once",
                max,
            ),
        ] {
            let gauge = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(value as i64).encode(gauge)?;
        }
        let stores = (self.keyvalue)();
        for (name, help, pick) in [
            (
                "keyvalue_bytes",
                "Bytes a tenant's key-value store holds (keys, values, 64 a key), by slug",
                (|(_, used, _)| *used) as fn(&(String, u64, u64)) -> u64,
            ),
            (
                "keyvalue_max_bytes",
                "Bytes a tenant's key-value store may hold (keyvalue_max_bytes), by slug",
                |(_, _, max)| *max,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for store in &stores {
                let gauge = ConstGauge::new(i64::try_from(pick(store)).unwrap_or(i64::MAX));
                gauge.encode(family.encode_family(&SlugLabel {
                    slug: store.0.clone(),
                })?)?;
            }
        }
        if let Some(cluster) = (self.cluster)() {
            let up = encoder.encode_descriptor(
                "cluster_link_up",
                "1 while this host's NATS link is up",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(cluster.up)).encode(up)?;
            let mut family = encoder.encode_descriptor(
                "cluster_entries",
                "Entries between hosts: sent, unsent (could not be sent), received, missed (gaps seen)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (direction, count) in [
                ("sent", cluster.sent),
                ("unsent", cluster.unsent),
                ("received", cluster.received),
                ("missed", cluster.missed),
            ] {
                ConstCounter::new(count)
                    .encode(family.encode_family(&DirectionLabel { direction })?)?;
            }
        }
        Ok(())
    }
}
