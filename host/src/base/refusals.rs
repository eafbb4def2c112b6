//! What the host turned away, counted by kind and logged as one line per
//! period rather than once per connection: a flood of refused connections
//! must not become a flood of log lines (it once wrote 800 identical
//! warnings in seconds). The totals stay for `/healthz` (and metrics).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the summary is logged (when anything was refused).
pub(crate) const PERIOD: Duration = Duration::from_secs(10);

/// Every kind of refusal the host counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A connection from an address that already holds its share.
    ConnectionsFromAddress,
    /// A connection while every connection was busy.
    ConnectionsFull,
    /// A connection the OS would not give us (out of file descriptors …).
    AcceptFailed,
    /// A connection closed for not sending a request head in time.
    HeaderTimeout,
    /// An idle connection closed to make room for a new one.
    Evicted,
    /// A request to a tenant at its concurrency limit with a full queue.
    TenantBusy,
    /// A request body over the tenant's limit.
    BodyTooLarge,
    /// A request past the tenant's wall-clock limit.
    WallTimeout,
    /// A TLS handshake that failed or did not finish in time (plain HTTP
    /// to the TLS port, a client that does not trust the certificate).
    TlsHandshake,
    /// A tenant response header that would have reached past the tenant's
    /// own origin (`crate::edge::boundary`).
    TenantHeaderDropped,
    /// A request body that stopped arriving for `body_read_timeout_secs`.
    BodyStalled,
    /// A request whose `Host` is not a `host[:port]` (a path, a query or
    /// userinfo in it would reach tenants as part of their authority).
    BadHost,
}

impl Refusal {
    const ALL: [Refusal; KINDS] = [
        Refusal::ConnectionsFromAddress,
        Refusal::ConnectionsFull,
        Refusal::AcceptFailed,
        Refusal::HeaderTimeout,
        Refusal::Evicted,
        Refusal::TenantBusy,
        Refusal::BodyTooLarge,
        Refusal::WallTimeout,
        Refusal::TlsHandshake,
        Refusal::TenantHeaderDropped,
        Refusal::BodyStalled,
        Refusal::BadHost,
    ];

    /// Its name in `/healthz` and log lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refusal::ConnectionsFromAddress => "connectionsFromOneAddress",
            Refusal::ConnectionsFull => "connectionsWhileFull",
            Refusal::AcceptFailed => "acceptFailed",
            Refusal::HeaderTimeout => "headerTimeout",
            Refusal::Evicted => "idleConnectionsEvicted",
            Refusal::TenantBusy => "tenantAtConcurrencyLimit",
            Refusal::BodyTooLarge => "bodyTooLarge",
            Refusal::WallTimeout => "wallTimeLimit",
            Refusal::TlsHandshake => "tlsHandshakeFailed",
            Refusal::TenantHeaderDropped => "tenantHeadersDropped",
            Refusal::BodyStalled => "bodyStalled",
            Refusal::BadHost => "badHostHeader",
        }
    }
}

/// How many kinds of refusal there are.
const KINDS: usize = 12;

/// Counts per kind: since start, and since the last summary.
#[derive(Default)]
pub(crate) struct Refusals {
    total: [AtomicU64; KINDS],
    recent: [AtomicU64; KINDS],
}

impl Refusals {
    pub(crate) fn count(&self, refusal: Refusal) {
        let i = refusal as usize;
        self.total[i].fetch_add(1, Ordering::Relaxed);
        self.recent[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Totals since start, by name.
    pub(crate) fn totals(&self) -> serde_json::Value {
        let map = self
            .counts()
            .into_iter()
            .map(|(name, count)| (name.to_string(), count.into()))
            .collect::<serde_json::Map<_, _>>();
        serde_json::Value::Object(map)
    }

    /// Totals since start, by name, every kind included.
    pub(crate) fn counts(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.name(), self.total[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }

    /// What was refused since the last call, as one line; `None` if nothing.
    pub(crate) fn take_summary(&self) -> Option<String> {
        let mut line = String::new();
        for refusal in Refusal::ALL {
            let n = self.recent[refusal as usize].swap(0, Ordering::Relaxed);
            if n > 0 {
                let _ = write!(
                    line,
                    "{}{}={n}",
                    if line.is_empty() { "" } else { ", " },
                    refusal.name()
                );
            }
        }
        (!line.is_empty()).then_some(line)
    }

    /// Logs the summary every [`PERIOD`], for as long as the host runs.
    pub(crate) async fn log_periodically(&self) {
        let mut every = tokio::time::interval(PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Some(summary) = self.take_summary() {
                tracing::warn!("refused in the last {} s: {summary}", PERIOD.as_secs());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_what_was_refused_since_the_last_one() {
        let refusals = Refusals::default();
        assert_eq!(refusals.take_summary(), None);
        for _ in 0..800 {
            refusals.count(Refusal::ConnectionsFromAddress);
        }
        refusals.count(Refusal::TenantBusy);
        assert_eq!(
            refusals.take_summary().as_deref(),
            Some("connectionsFromOneAddress=800, tenantAtConcurrencyLimit=1")
        );
        assert_eq!(refusals.take_summary(), None, "counted once");
        assert_eq!(refusals.totals()["connectionsFromOneAddress"], 800);
    }
}
