//! On a cluster: following the bucket, so that a change any host made is
//! applied here too.

use super::Deployments;
use super::durable::Durable;
use super::shared::{Key, Shared};
use super::store::{Reservation, ServerRecord};
use std::sync::Arc;
use tracing::Instrument as _;

impl Deployments {
    /// On a cluster: opens the shared buckets (retrying while NATS is
    /// unreachable), applies every server they hold, then every change any
    /// host makes, for as long as the host runs. Resolves once this host
    /// has caught up with the servers already deployed, or after `patience`
    /// (the host then serves its file's tenants and catches up later).
    pub(crate) async fn follow_cluster(
        self: &Arc<Self>,
        client: async_nats::Client,
        patience: std::time::Duration,
    ) {
        let (caught_up, on_caught_up) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(
            async move { me.watch_cluster(client, caught_up).await }
                .instrument(tracing::info_span!("deployments")),
        );
        if tokio::time::timeout(patience, on_caught_up).await.is_err() {
            tracing::warn!(
                "not caught up with the cluster's deployments after {patience:?}: serving without them for now"
            );
        }
    }

    pub(super) async fn watch_cluster(
        &self,
        client: async_nats::Client,
        caught_up: tokio::sync::oneshot::Sender<()>,
    ) {
        use futures_util::StreamExt as _;
        let Some(Durable::Cluster(cell)) = &self.durable else {
            return;
        };
        let mut caught_up = Some(caught_up);
        let mut attempt = 0u32;
        loop {
            let opened = match cell.get() {
                Some(shared) => Ok(shared.clone()),
                None => Shared::open(client.clone()).await.inspect(|shared| {
                    let _ = cell.set(shared.clone());
                }),
            };
            let watched = match opened {
                Ok(shared) => shared.watch().await,
                Err(e) => Err(e),
            };
            let (mut changes, values) = match watched {
                Ok(watched) => watched,
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 || attempt.is_multiple_of(30) {
                        tracing::warn!("cannot follow the cluster's deployments yet: {e:#}");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            attempt = 0;
            if values == 0
                && let Some(done) = caught_up.take()
            {
                let _ = done.send(());
            }
            while let Some(change) = changes.next().await {
                let Ok(change) = change else { break };
                let last_of_history = change.delta == 0;
                self.mirror(change).await;
                if last_of_history && let Some(done) = caught_up.take() {
                    let _ = done.send(());
                }
            }
            tracing::warn!("the cluster's deployment watch ended; watching again");
        }
    }

    /// Applies one change seen in the shared bucket.
    pub(super) async fn mirror(&self, change: async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Some(key) = Key::parse(&change.key) else {
            return;
        };
        let mut document = self.document.lock().await;
        if document.revisions.get(&change.key) >= Some(&change.revision) {
            return; // this host wrote it, or saw it already
        }
        document
            .revisions
            .insert(change.key.clone(), change.revision);
        let present = change.operation == Operation::Put;
        match key {
            Key::Reserved(slug) => match serde_json::from_slice::<Reservation>(&change.value) {
                Ok(reservation) if present => {
                    document.reservations.insert(slug, reservation);
                }
                _ => {
                    document.reservations.remove(&slug);
                }
            },
            Key::Server(slug) => {
                let record = present
                    .then(|| serde_json::from_slice::<ServerRecord>(&change.value))
                    .transpose();
                match record {
                    Ok(Some(record)) => {
                        document.servers.insert(slug.clone(), record);
                    }
                    Ok(None) => {
                        document.servers.remove(&slug);
                    }
                    Err(e) => {
                        tracing::error!(slug, "unreadable server record in the cluster: {e}");
                        return;
                    }
                }
                if let Err(e) = self.apply(&document, &slug, None, None).await {
                    tracing::error!(slug, "cannot apply the cluster's change: {}", e.message);
                }
            }
        }
    }
}
