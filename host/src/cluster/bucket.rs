//! The viewer-claims bucket on JetStream: claims written by compare-and-set
//! (the rules are in [`super::leases`]), kept equal to this host's viewer
//! counts, and watched to learn which slugs other hosts watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::kv;
use futures_util::StreamExt as _;

use super::leases::{self, ClaimOutcome, Claims};
use super::{BUCKET, Inner, NATS_TIMEOUT, lock};
use crate::entry::now_ms;

impl Inner {
    /// The claims bucket: found, or created by the first host that needs
    /// it (hosts racing to create it both end up with the same bucket).
    async fn store(&self) -> Result<kv::Store> {
        let mut store = self.store.lock().await;
        if let Some(store) = &*store {
            return Ok(store.clone());
        }
        let jetstream = async_nats::jetstream::new(self.client.clone());
        let found = match jetstream.get_key_value(BUCKET).await {
            Ok(found) => found,
            Err(_) => {
                let config = kv::Config {
                    bucket: BUCKET.to_string(),
                    description: "mctx-host: log viewers per slug, per host (leases)".to_string(),
                    history: 1,
                    // Claims are rewritten while they matter; a key nobody
                    // wrote for a while is only clutter.
                    max_age: (self.lease * 4).max(Duration::from_secs(60)),
                    ..Default::default()
                };
                match jetstream.create_key_value(config).await {
                    Ok(created) => created,
                    // Another host may have created it meanwhile.
                    Err(create) => jetstream.get_key_value(BUCKET).await.map_err(|_| {
                        anyhow!(
                            "cannot create the key-value bucket {BUCKET:?} (is JetStream enabled: nats-server -js?): {create}"
                        )
                    })?,
                }
            }
        };
        *store = Some(found.clone());
        Ok(found)
    }

    /// Writes this host's claim on `slug` (its local viewer count) by
    /// compare-and-set; with a `limit`, only if every host's viewers fit.
    pub(super) async fn write_claim(
        &self,
        slug: &str,
        limit: Option<usize>,
    ) -> Result<ClaimOutcome> {
        let result = tokio::time::timeout(NATS_TIMEOUT, self.try_write_claim(slug, limit)).await;
        let result =
            result.unwrap_or_else(|_| Err(anyhow!("no answer from NATS within {NATS_TIMEOUT:?}")));
        if result.is_err() {
            // The bucket may be gone (a NATS server that lost its storage):
            // look it up again next time.
            *self.store.lock().await = None;
        }
        result
    }

    async fn try_write_claim(&self, slug: &str, limit: Option<usize>) -> Result<ClaimOutcome> {
        let lease_ms = self.lease.as_millis() as u64;
        loop {
            let store = self.store().await?;
            let current = store.entry(slug).await.context("reading viewer claims")?;
            let (claims, revision) = match &current {
                Some(entry) if entry.operation == kv::Operation::Put => {
                    (Claims::parse(&entry.value), Some(entry.revision))
                }
                Some(entry) => (Claims::default(), Some(entry.revision)),
                None => (Claims::default(), None),
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
}

/// Keeps this host's claims in the bucket equal to its viewer counts:
/// rewritten when a viewer leaves (so the slot frees at once), renewed a
/// few times per lease, restated when the link comes back.
pub(super) async fn keep_claims(inner: Arc<Inner>) {
    let mut failing = Failing::default();
    let mut renew = tokio::time::interval(inner.lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renew_all = tokio::select! {
            () = inner.hub.viewers_changed() => false,
            _ = renew.tick() => true,
            () = inner.renew_claims.notified() => true,
        };
        if !inner.link_is_up() {
            continue;
        }
        let mut counts: HashMap<String, usize> = inner.hub.viewer_counts().into_iter().collect();
        let claimed = lock(&inner.claimed).clone();
        for slug in claimed.keys() {
            counts.entry(slug.clone()).or_insert(0);
        }
        for (slug, viewers) in counts {
            let changed = claimed.get(&slug).copied().unwrap_or(0) != viewers;
            if !(changed || renew_all && viewers > 0) {
                continue;
            }
            match inner.write_claim(&slug, None).await {
                Ok(ClaimOutcome::Held { viewers: 0 }) => {
                    lock(&inner.claimed).remove(&slug);
                }
                Ok(ClaimOutcome::Held { viewers }) => {
                    lock(&inner.claimed).insert(slug, viewers);
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

/// Follows the claims bucket to know which slugs other hosts watch (so
/// this host sends their entries). Restarted with each connection: a NATS
/// server that restarted may have lost the watch's consumer.
pub(super) async fn watch_interest(inner: Arc<Inner>) {
    let mut connections = inner.connections.subscribe();
    let mut failing = Failing::default();
    loop {
        if connections.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        connections.mark_unchanged();
        tokio::select! {
            result = watch_claims(&inner, &mut failing) => {
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

async fn watch_claims(inner: &Inner, failing: &mut Failing) -> Result<()> {
    let store = inner.store().await?;
    let mut updates = store
        .watch_with_history(">")
        .await
        .context("watching viewer claims")?;
    failing.recovered("watching viewer claims");
    while let Some(update) = updates.next().await {
        let update = update.context("watching viewer claims")?;
        let until = match update.operation {
            kv::Operation::Put => {
                Claims::parse(&update.value).interest_until(&inner.node, now_ms())
            }
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        let mut interest = lock(&inner.interest);
        match until {
            Some(until) => interest.insert(update.key, until),
            None => interest.remove(&update.key),
        };
    }
    Err(anyhow!("the watch ended"))
}
