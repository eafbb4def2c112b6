//! The deploy API's state on a cluster: JetStream holds it, so that every
//! host applies every change and a host that joins or restarts catches up.
//!
//! ```text
//! key-value bucket  mctx-servers      server.{slug}   → ServerRecord (JSON)
//!                                     reserved.{slug} → Reservation  (JSON)
//! object store      mctx-components   {sha256}        → the component's bytes
//! ```
//!
//! A change is written by compare-and-set on the key's revision, so two
//! hosts changing one server at once cannot lose each other's change (the
//! second gets a 409 and tries again). A component is stored before the
//! record that names it, as on disk. Every host watches the bucket (last
//! value per key, then live changes) and applies what it sees
//! (`Deployments::follow_cluster`).

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use tokio::io::AsyncReadExt as _;

/// The server list and reserved slugs.
pub(crate) const SERVERS_BUCKET: &str = "mctx-servers";
/// Deployed components, by SHA-256.
pub(crate) const COMPONENTS_BUCKET: &str = "mctx-components";
/// How long a key-value operation may take.
const KV_TIMEOUT: Duration = Duration::from_secs(5);
/// How long moving one component may take (up to 64 MiB through NATS).
const OBJECT_TIMEOUT: Duration = Duration::from_secs(120);

/// A key of the servers bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Server(String),
    Reserved(String),
}

impl Key {
    pub(crate) fn parse(key: &str) -> Option<Key> {
        if let Some(slug) = key.strip_prefix("server.") {
            Some(Key::Server(slug.to_string()))
        } else {
            key.strip_prefix("reserved.")
                .map(|slug| Key::Reserved(slug.to_string()))
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Key::Server(slug) => format!("server.{slug}"),
            Key::Reserved(slug) => format!("reserved.{slug}"),
        }
    }
}

/// The two buckets, found or created.
#[derive(Clone)]
pub(crate) struct Shared {
    servers: kv::Store,
    components: object_store::ObjectStore,
}

impl Shared {
    /// Finds the buckets, or creates them (hosts racing to create them end
    /// up with the same ones).
    pub(crate) async fn open(client: async_nats::Client) -> Result<Shared> {
        let jetstream = jetstream::new(client);
        let config = kv::Config {
            bucket: SERVERS_BUCKET.to_string(),
            description: "mctx-host: servers deployed through the API, reserved slugs".to_string(),
            history: 1,
            ..Default::default()
        };
        let servers = crate::logs::cluster::key_value_bucket(&jetstream, config).await?;
        let components = match jetstream.get_object_store(COMPONENTS_BUCKET).await {
            Ok(found) => found,
            Err(_) => {
                let config = object_store::Config {
                    bucket: COMPONENTS_BUCKET.to_string(),
                    description: Some("mctx-host: deployed components by sha256".to_string()),
                    ..Default::default()
                };
                match jetstream.create_object_store(config).await {
                    Ok(created) => created,
                    Err(create) => jetstream
                        .get_object_store(COMPONENTS_BUCKET)
                        .await
                        .map_err(|_| {
                            anyhow!(
                                "cannot create the object store {COMPONENTS_BUCKET:?}: {create}"
                            )
                        })?,
                }
            }
        };
        Ok(Shared {
            servers,
            components,
        })
    }

    /// Stores a component under its digest, once.
    pub(crate) async fn put_component(&self, sha256: &str, wasm: &Bytes) -> Result<()> {
        let put = async {
            if self.components.info(sha256).await.is_ok() {
                return Ok(());
            }
            let mut reader: &[u8] = wasm;
            self.components
                .put(sha256, &mut reader)
                .await
                .map(|_| ())
                .map_err(|e| anyhow!("{e}"))
        };
        tokio::time::timeout(OBJECT_TIMEOUT, put)
            .await
            .map_err(|_| anyhow!("storing the component took over {OBJECT_TIMEOUT:?}"))?
            .context("storing the component in the cluster's object store")
    }

    /// A component's bytes.
    pub(crate) async fn fetch_component(&self, sha256: &str) -> Result<Vec<u8>> {
        let fetch = async {
            let mut object = self
                .components
                .get(sha256)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            let mut wasm = Vec::new();
            object.read_to_end(&mut wasm).await?;
            anyhow::Ok(wasm)
        };
        tokio::time::timeout(OBJECT_TIMEOUT, fetch)
            .await
            .map_err(|_| anyhow!("fetching component {sha256} took over {OBJECT_TIMEOUT:?}"))?
            .with_context(|| format!("fetching component {sha256} from the cluster"))
    }

    /// Writes (or, with `None`, deletes) `key`, only if its revision is
    /// still `revision` (`None`: the key must not exist). Returns the new
    /// revision. A lost race is [`Written::Conflict`].
    pub(crate) async fn write(
        &self,
        key: &Key,
        value: Option<Vec<u8>>,
        revision: Option<u64>,
    ) -> Result<Written> {
        let key = key.text();
        let write = async {
            match (value, revision) {
                (Some(value), Some(revision)) => self
                    .servers
                    .update(&key, value.into(), revision)
                    .await
                    .map(Written::At)
                    .or_else(|e| {
                        conflict_or(e.kind() == kv::UpdateErrorKind::WrongLastRevision, e)
                    }),
                (Some(value), None) => self
                    .servers
                    .create(&key, value.into())
                    .await
                    .map(Written::At)
                    .or_else(|e| conflict_or(e.kind() == kv::CreateErrorKind::AlreadyExists, e)),
                (None, revision) => self
                    .servers
                    .delete_expect_revision(&key, revision)
                    .await
                    .map(|()| Written::Deleted)
                    .or_else(|e| {
                        conflict_or(e.kind() == kv::DeleteErrorKind::WrongLastRevision, e)
                    }),
            }
        };
        tokio::time::timeout(KV_TIMEOUT, write)
            .await
            .map_err(|_| anyhow!("no answer from NATS within {KV_TIMEOUT:?}"))?
    }

    /// Every key's last value, then every change as it happens.
    pub(crate) async fn watch(&self) -> Result<(kv::Watch, u64)> {
        let values = self
            .servers
            .status()
            .await
            .map_err(|e| anyhow!("{e}"))?
            .values();
        let watch = self
            .servers
            .watch_with_history(">")
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok((watch, values))
    }
}

/// What a compare-and-set write did.
#[derive(Debug)]
pub(crate) enum Written {
    At(u64),
    Deleted,
    /// Another host changed the key first.
    Conflict,
}

fn conflict_or(conflict: bool, error: impl std::fmt::Display) -> Result<Written> {
    if conflict {
        Ok(Written::Conflict)
    } else {
        Err(anyhow!("{error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for key in [Key::Server("app".into()), Key::Reserved("app".into())] {
            assert_eq!(Key::parse(&key.text()), Some(key));
        }
        assert_eq!(Key::parse("other.app"), None);
    }
}
