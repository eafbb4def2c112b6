//! Where the list is kept: the state directory on one host, a JetStream
//! bucket on a cluster; a change is durable there before the registry
//! swaps.

use super::error::{DeployError, Why};
use super::shared::{Key, Shared, Written};
use super::store::{Document, Store};
use bytes::Bytes;
use tokio::sync::OnceCell;

/// Where changes are made durable.
pub(super) enum Durable {
    Dir(Store),
    /// Set once the cluster's buckets are open (boxed: the handles are
    /// large, and this is read once per change).
    Cluster(Box<OnceCell<Shared>>),
}

impl Durable {
    pub(super) async fn put_component(&self, sha256: &str, wasm: &Bytes) -> anyhow::Result<()> {
        match self {
            Durable::Dir(store) => store.put_component(sha256, wasm).map(|_| ()),
            Durable::Cluster(_) => self.shared()?.put_component(sha256, wasm).await,
        }
    }

    pub(super) async fn fetch_component(&self, sha256: &str) -> anyhow::Result<Vec<u8>> {
        match self {
            Durable::Dir(store) => Ok(std::fs::read(store.component_path(sha256))?),
            Durable::Cluster(_) => self.shared()?.fetch_component(sha256).await,
        }
    }

    /// Makes `next` durable, where it differs from what is stored for
    /// `slug`: on disk the whole list; on a cluster the server's key (and,
    /// with `reservation`, its reservation's) by compare-and-set, noting
    /// the new revisions in `next`.
    pub(super) async fn commit(
        &self,
        next: &mut Document,
        slug: &str,
        reservation: bool,
    ) -> Result<(), DeployError> {
        match self {
            Durable::Dir(store) => store.save(next).map_err(DeployError::storage),
            Durable::Cluster(_) => {
                let shared = self.shared().map_err(DeployError::storage)?;
                let server = next.servers.get(slug).map(to_json);
                let reserved = reservation.then(|| next.reservations.get(slug).map(to_json));
                // Hosts apply the bucket in order: a deletion's reservation
                // goes first, so no host sees the slug free before it sees
                // it reserved; a creation's server goes first, so a lost
                // race leaves the reservation in place.
                let deleting = server.is_none();
                if deleting && let Some(reserved) = reserved.clone() {
                    commit_key(shared, next, Key::Reserved(slug.to_string()), reserved).await?;
                }
                commit_key(shared, next, Key::Server(slug.to_string()), server).await?;
                if !deleting && let Some(reserved) = reserved {
                    commit_key(shared, next, Key::Reserved(slug.to_string()), reserved).await?;
                }
                Ok(())
            }
        }
    }

    /// Removes what the list no longer names (on disk; a cluster's object
    /// store keeps components, other hosts may still be fetching them).
    pub(super) fn sweep(&self, document: &Document) {
        if let Durable::Dir(store) = self {
            store.sweep(document);
        }
    }

    pub(super) fn shared(&self) -> anyhow::Result<&Shared> {
        match self {
            Durable::Cluster(cell) => cell.get().ok_or_else(|| {
                anyhow::anyhow!("the cluster's deployment buckets are not reachable yet (NATS)")
            }),
            Durable::Dir(_) => unreachable!("only on a cluster"),
        }
    }
}

pub(super) async fn commit_key(
    shared: &Shared,
    next: &mut Document,
    key: Key,
    value: Option<Vec<u8>>,
) -> Result<(), DeployError> {
    let text = key.text();
    let revision = next.revisions.get(&text).copied();
    if value.is_none() && revision.is_none() {
        return Ok(()); // nothing stored, nothing to delete
    }
    match shared
        .write(&key, value, revision)
        .await
        .map_err(DeployError::storage)?
    {
        Written::At(revision) => {
            next.revisions.insert(text, revision);
            Ok(())
        }
        Written::Deleted => {
            // Creating it again is a create, not an update of the marker.
            next.revisions.remove(&text);
            Ok(())
        }
        Written::Conflict => Err(DeployError::new(
            Why::Conflict,
            "another host changed this server at the same time: nothing changed here, try again",
        )),
    }
}

pub(super) fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}
