//! Viewer claims: this host's share of each slug's viewer slots, held in a
//! JetStream key-value bucket by compare-and-set (the rules are in
//! [`super::leases`]), kept equal to this host's viewer counts, and watched
//! to learn which slugs other hosts watch (so that this host sends them
//! their entries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use tokio::sync::Notify;

use super::leases::{self, ClaimOutcome};
use super::link::Link;
use super::{BUCKET, NATS_TIMEOUT, lock};
use crate::logs::entry::now_ms;
use crate::logs::hub::LogHub;

pub(super) struct Claims {
    client: async_nats::Client,
    node: Arc<str>,
    lease: Duration,
    /// Viewer counts come from here.
    hub: LogHub,
    /// The bucket, once found or created (reset after an error, so that a
    /// NATS server that lost its storage gets the bucket back).
    store: tokio::sync::Mutex<Option<kv::Store>>,
    /// Slug → the viewer count this host's claim in the bucket says.
    claimed: Mutex<HashMap<String, usize>>,
    /// Slug → until when (ms) another host has viewers of it.
    interest: Mutex<HashMap<String, u64>>,
    /// Claims need rewriting now (the link came back).
    renew: Notify,
    /// A viewer arrived or left here.
    changed: Notify,
}

impl Claims {
    pub(super) fn new(
        client: async_nats::Client,
        node: Arc<str>,
        lease: Duration,
        hub: LogHub,
    ) -> Self {
        Claims {
            client,
            node,
            lease,
            hub,
            store: Default::default(),
            claimed: Mutex::default(),
            interest: Mutex::default(),
            renew: Notify::new(),
            changed: Notify::new(),
        }
    }

    /// Whether another host has viewers of `slug` (a live claim).
    pub(super) fn watched_elsewhere(&self, slug: &str) -> bool {
        lock(&self.interest)
            .get(slug)
            .is_some_and(|until| *until > now_ms())
    }

    /// Slugs other hosts watch, sorted.
    pub(super) fn watched_slugs(&self) -> Vec<String> {
        let now = now_ms();
        let mut slugs: Vec<String> = lock(&self.interest)
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(slug, _)| slug.clone())
            .collect();
        slugs.sort();
        slugs
    }

    pub(super) fn viewers_changed(&self) {
        self.changed.notify_one();
    }

    pub(super) fn renew_all(&self) {
        self.renew.notify_one();
    }

    /// Claims a slot for a viewer this host just subscribed, if every
    /// host's viewers stay within `max`.
    pub(super) async fn admit(&self, slug: &str, max: usize) -> Result<ClaimOutcome> {
        let outcome = self.write(slug, Some(max)).await?;
        if let ClaimOutcome::Held { viewers } = outcome {
            lock(&self.claimed).insert(slug.to_string(), viewers);
        }
        Ok(outcome)
    }

    /// Gives every slot back (shutdown: the viewers are gone by now), so
    /// that other hosts need not wait for the leases to run out.
    pub(super) async fn release_all(&self) {
        let claimed: Vec<String> = lock(&self.claimed).keys().cloned().collect();
        for slug in claimed {
            let _ = self.write(&slug, None).await;
        }
    }

    /// The bucket: found, or created by the first host that needs it
    /// (hosts racing to create it both end up with the same bucket).
    async fn store(&self) -> Result<kv::Store> {
        let mut store = self.store.lock().await;
        if let Some(store) = &*store {
            return Ok(store.clone());
        }
        let jetstream = async_nats::jetstream::new(self.client.clone());
        let config = kv::Config {
            bucket: BUCKET.to_string(),
            description: "mctx-host: log viewers per slug, per host (leases)".to_string(),
            history: 1,
            // Claims are rewritten while they matter; a key nobody wrote
            // for a while is only clutter.
            max_age: (self.lease * 4).max(Duration::from_secs(60)),
            ..Default::default()
        };
        let found = super::key_value_bucket(&jetstream, config).await?;
        *store = Some(found.clone());
        Ok(found)
    }

    /// Writes this host's claim on `slug` (its local viewer count) by
    /// compare-and-set; with a `limit`, only if every host's viewers fit.
    async fn write(&self, slug: &str, limit: Option<usize>) -> Result<ClaimOutcome> {
        let result = tokio::time::timeout(NATS_TIMEOUT, self.try_write(slug, limit)).await;
        let result =
            result.unwrap_or_else(|_| Err(anyhow!("no answer from NATS within {NATS_TIMEOUT:?}")));
        if result.is_err() {
            // The bucket may be gone (a NATS server that lost its storage):
            // look it up again next time.
            *self.store.lock().await = None;
        }
        result
    }

    async fn try_write(&self, slug: &str, limit: Option<usize>) -> Result<ClaimOutcome> {
        let lease_ms = self.lease.as_millis() as u64;
        loop {
            let store = self.store().await?;
            let current = store.entry(slug).await.context("reading viewer claims")?;
            let (claims, revision) = match &current {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    (leases::Claims::parse(&entry.value), Some(entry.revision))
                }
                Some(entry) => (leases::Claims::default(), Some(entry.revision)),
                None => (leases::Claims::default(), None),
            };
            let viewers = self.hub.viewer_count(slug);
            if viewers == 0 && claims.get(&self.node).is_none() {
                return Ok(ClaimOutcome::Held { viewers });
            }
            let claims =
                match leases::decide(claims, &self.node, viewers, limit, now_ms(), lease_ms) {
                    Ok(claims) => claims,
                    Err(full) => return Ok(full),
                };
            let value = claims.to_bytes().into();
            let conflict = match revision {
                Some(revision) => match store.update(slug, value, revision).await {
                    Ok(_) => false,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => true,
                    Err(e) => return Err(e).context("writing viewer claims"),
                },
                None => match store.create(slug, value).await {
                    Ok(_) => false,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => true,
                    Err(e) => return Err(e).context("writing viewer claims"),
                },
            };
            if !conflict {
                return Ok(ClaimOutcome::Held { viewers });
            }
            // Another host wrote first: read again and decide again.
        }
    }

    /// Keeps this host's claims equal to its viewer counts: rewritten when
    /// a viewer leaves (so the slot frees at once), renewed a few times per
    /// lease, restated when the link comes back.
    pub(super) async fn keep(&self, link: &Link) {
        let mut failing = Failing::default();
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renew_all = tokio::select! {
                () = self.changed.notified() => false,
                _ = renew.tick() => true,
                () = self.renew.notified() => true,
            };
            if !link.is_up() {
                continue;
            }
            let mut counts: HashMap<String, usize> = self.hub.viewer_counts().into_iter().collect();
            let claimed = lock(&self.claimed).clone();
            for slug in claimed.keys() {
                counts.entry(slug.clone()).or_insert(0);
            }
            for (slug, viewers) in counts {
                let changed = claimed.get(&slug).copied().unwrap_or(0) != viewers;
                if !(changed || renew_all && viewers > 0) {
                    continue;
                }
                match self.write(&slug, None).await {
                    Ok(ClaimOutcome::Held { viewers: 0 }) => {
                        lock(&self.claimed).remove(&slug);
                    }
                    Ok(ClaimOutcome::Held { viewers }) => {
                        lock(&self.claimed).insert(slug, viewers);
                    }
                    Ok(ClaimOutcome::Full { .. }) => {
                        unreachable!("claims without a limit are never refused")
                    }
                    Err(e) => {
                        failing.report(
                            &format!("cannot renew this host's viewer claims ({slug})"),
                            &e,
                        );
                        continue;
                    }
                }
                failing.recovered("renewing viewer claims");
            }
        }
    }

    /// Follows the bucket to know which slugs other hosts watch. Restarted
    /// with each connection: a NATS server that restarted may have lost the
    /// watch's consumer.
    pub(super) async fn watch_interest(&self, link: &Link) {
        let mut connections = link.connections();
        let mut failing = Failing::default();
        loop {
            if connections.wait_for(|n| *n > 0).await.is_err() {
                return;
            }
            connections.mark_unchanged();
            tokio::select! {
                result = self.follow_bucket(&mut failing) => {
                    if let Err(e) = result {
                        failing.report("cannot watch viewer claims", &e);
                    }
                    // Retry after a pause, or sooner if the link reconnects.
                    let _ = tokio::time::timeout(Duration::from_secs(1), connections.changed()).await;
                }
                changed = connections.changed() => if changed.is_err() { return },
            }
        }
    }

    async fn follow_bucket(&self, failing: &mut Failing) -> Result<()> {
        let store = self.store().await?;
        let mut updates = store
            .watch_with_history(">")
            .await
            .context("watching viewer claims")?;
        failing.recovered("watching viewer claims");
        while let Some(update) = updates.next().await {
            let update = update.context("watching viewer claims")?;
            let until = match update.operation {
                kv::Operation::Put => {
                    leases::Claims::parse(&update.value).interest_until(&self.node, now_ms())
                }
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            let mut interest = lock(&self.interest);
            match until {
                Some(until) => interest.insert(update.key, until),
                None => interest.remove(&update.key),
            };
        }
        Err(anyhow!("the watch ended"))
    }
}

/// Logs a repeating failure once (and its end), not at every retry.
#[derive(Default)]
struct Failing(bool);

impl Failing {
    fn report(&mut self, what: &str, error: &anyhow::Error) {
        if std::mem::replace(&mut self.0, true) {
            tracing::debug!("{what}: {error:#}");
        } else {
            tracing::warn!("{what}: {error:#} (retrying; further failures at debug level)");
        }
    }

    fn recovered(&mut self, what: &str) {
        if std::mem::take(&mut self.0) {
            tracing::info!("{what} works again");
        }
    }
}
