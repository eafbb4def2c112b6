//! A tenant's key-value store: `wasi:keyvalue` (the 0.2.0-draft revision
//! wasmtime 48 links with `-S keyvalue`), granted per tenant with a quota.
//!
//! Why a tenant needs one: a request runs in a fresh instance (or one kept
//! for its version only), so whatever one request learns is gone for the
//! next unless something outside the instance keeps it. An MCP task
//! cancelled by one request and polled by another is the case that asked
//! for it (`guests/mcp-everything/src/tasks.rs`).
//!
//! What it is: one store per tenant (its slug), shared by all its versions
//! and instances. On one host it lives in memory ([`memory`]) for as long as
//! the tenant is loaded; on a cluster it is a JetStream key-value bucket of
//! its own ([`jetstream`]), so every host sees the same entries (and they
//! outlive a restart). `open("")` gives it; any other identifier is
//! `no-such-store`, as under `wasmtime serve`. Nothing is granted by
//! default: without `keyvalue_max_bytes` in its table (or `[host]`, or `-S
//! keyvalue` in single-component mode) `open` answers `access-denied`, and
//! every refusal — that, a full store, a key too long — is also a `warn`
//! entry on the tenant's log stream, so its owner sees what the host
//! refused ([`host`] is the `wasi:keyvalue` side).

mod host;
mod jetstream;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

pub(crate) use host::add_to_linker;

/// What one entry costs beyond its key and value bytes: the map's own
/// bookkeeping, so that a million empty values cannot fit in a few bytes
/// of quota.
const ENTRY_OVERHEAD: u64 = 64;
/// The longest key, in bytes (Workers KV's limit).
pub(crate) const MAX_KEY_BYTES: usize = 512;
/// Keys per `list-keys` page.
const PAGE: usize = 1000;

/// One page of keys, and where the next one starts.
pub(crate) struct Page {
    pub(crate) keys: Vec<String>,
    pub(crate) cursor: Option<u64>,
}

/// Why an operation did not happen.
#[derive(Debug)]
pub(crate) enum Problem {
    /// The tenant asked for what it may not have: a full store, a key too
    /// long, an increment of what is not a number.
    Refused(String),
    /// The store could not be reached (the cluster's JetStream).
    Failed(String),
}

/// What an entry counts against the quota: its key, its value and
/// [`ENTRY_OVERHEAD`].
fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

fn full(needed: u64, used: u64, quota: u64) -> String {
    format!(
        "the store is full: this change needs {needed} bytes more and {used} of its {quota} \
         bytes are in use (raise keyvalue_max_bytes, or delete keys)"
    )
}

/// `current` (decimal text, none: 0) plus `delta`.
fn incremented(key: &str, current: Option<&[u8]>, delta: u64) -> Result<u64, String> {
    let current = match current {
        None => 0,
        Some(value) => std::str::from_utf8(value)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| format!("key {key:?} does not hold a whole number"))?,
    };
    current
        .checked_add(delta)
        .ok_or_else(|| format!("key {key:?}: {current} + {delta} overflows"))
}

fn check_key(key: &str) -> Result<(), Problem> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Problem::Refused(format!(
            "a key has at most {MAX_KEY_BYTES} bytes, this one {}",
            key.len()
        )));
    }
    Ok(())
}

/// One tenant's store.
pub(crate) struct TenantStore {
    slug: String,
    quota: AtomicU64,
    /// What a new store holds (`-S keyvalue-in-memory-data`).
    seed: BTreeMap<String, String>,
    /// Without a cluster.
    entries: Mutex<memory::Entries>,
    /// With one: set once the link is up (`KeyValueStores::share`).
    cluster: Arc<OnceLock<async_nats::jetstream::Context>>,
    shared: tokio::sync::OnceCell<jetstream::Shared>,
    /// The quota the shared bucket was last sized for.
    sized_for: AtomicU64,
    /// Bytes the shared bucket held when this host last looked.
    seen: AtomicU64,
}

impl TenantStore {
    fn entries(&self) -> MutexGuard<'_, memory::Entries> {
        // No code under the lock can panic halfway through a change.
        crate::base::sync::lock(&self.entries)
    }

    fn quota(&self) -> u64 {
        self.quota.load(Ordering::Relaxed)
    }

    /// Bytes in use (on a cluster: as this host last saw them).
    pub(crate) fn used(&self) -> u64 {
        match self.cluster.get() {
            Some(_) => self.seen.load(Ordering::Relaxed),
            None => self.entries().used(),
        }
    }

    /// The shared bucket on a cluster (opened, and sized for the quota, on
    /// first use); `None` on one host.
    async fn shared(&self) -> Result<Option<&jetstream::Shared>, Problem> {
        let Some(js) = self.cluster.get() else {
            return Ok(None);
        };
        let shared = self
            .shared
            .get_or_try_init(|| jetstream::Shared::open(js, &self.slug, &self.seed))
            .await
            .map_err(Problem::Failed)?;
        let quota = self.quota();
        if self.sized_for.swap(quota, Ordering::Relaxed) != quota
            && let Err(why) = shared.size(js, quota).await
        {
            self.sized_for.store(0, Ordering::Relaxed);
            return Err(Problem::Failed(why));
        }
        Ok(Some(shared))
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Problem> {
        match self.shared().await? {
            Some(shared) => shared.get(key).await,
            None => Ok(self.entries().get(key)),
        }
    }

    /// Sets (`Some`) or removes (`None`) each key, within the quota.
    pub(crate) async fn set_many(
        &self,
        pairs: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), Problem> {
        for (key, _) in &pairs {
            check_key(key)?;
        }
        let quota = self.quota();
        match self.shared().await? {
            Some(shared) => {
                if let Some(used) = shared.set_many(pairs, quota).await? {
                    self.seen.store(used, Ordering::Relaxed);
                }
                Ok(())
            }
            None => self.entries().apply(pairs, quota).map_err(Problem::Refused),
        }
    }

    pub(crate) async fn increment(&self, key: String, delta: u64) -> Result<u64, Problem> {
        check_key(&key)?;
        let quota = self.quota();
        match self.shared().await? {
            Some(shared) => shared.increment(&key, delta, quota).await,
            None => self
                .entries()
                .increment(key, delta, quota)
                .map_err(Problem::Refused),
        }
    }

    pub(crate) async fn keys(&self, from: usize) -> Result<Page, Problem> {
        match self.shared().await? {
            Some(shared) => shared.keys(from).await,
            None => Ok(self.entries().keys(from)),
        }
    }
}

/// Every tenant's store, by slug. A store lives as long as a loaded tenant
/// holds it (its [`Capabilities`]), so a new version, a reload or a
/// redeploy finds the same entries; a removed tenant's are freed here (on
/// a cluster, [`forget`](Self::forget) deletes its bucket).
///
/// [`Capabilities`]: crate::run::capabilities::Capabilities
#[derive(Default)]
pub(crate) struct KeyValueStores {
    stores: Mutex<HashMap<String, Weak<TenantStore>>>,
    cluster: Arc<OnceLock<async_nats::jetstream::Context>>,
}

impl KeyValueStores {
    /// The store of `slug`, with `quota` bytes from now on (created with
    /// `seed` if the tenant has none).
    pub(crate) fn grant(
        &self,
        slug: &str,
        quota: u64,
        seed: &BTreeMap<String, String>,
    ) -> Arc<TenantStore> {
        let mut stores = crate::base::sync::lock(&self.stores);
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(slug).and_then(Weak::upgrade) {
            store.quota.store(quota, Ordering::Relaxed);
            return store;
        }
        let mut entries = memory::Entries::default();
        let pairs = seed
            .iter()
            .map(|(key, value)| (key.clone(), Some(value.clone().into_bytes())))
            .collect();
        if let Err(why) = entries.apply(pairs, quota) {
            tracing::warn!(slug, "keyvalue seed not stored: {why}");
        }
        let store = Arc::new(TenantStore {
            slug: slug.to_string(),
            quota: AtomicU64::new(quota),
            seed: seed.clone(),
            entries: Mutex::new(entries),
            cluster: self.cluster.clone(),
            shared: tokio::sync::OnceCell::new(),
            sized_for: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        });
        stores.insert(slug.to_string(), Arc::downgrade(&store));
        store
    }

    /// From now on every store lives in the cluster's JetStream (called
    /// once the link is up, before the host serves).
    pub(crate) fn share(&self, context: async_nats::jetstream::Context) {
        let _ = self.cluster.set(context);
    }

    /// A deleted server's entries are deleted with it: on a cluster its
    /// bucket outlives every host, and its slug may later be another
    /// owner's.
    pub(crate) async fn forget(&self, slug: &str) {
        // A request still running for the deleted server keeps its handle;
        // the next grant of the slug makes a new one.
        crate::base::sync::lock(&self.stores).remove(slug);
        if let Some(js) = self.cluster.get()
            && let Err(why) = jetstream::delete(js, slug).await
        {
            tracing::warn!(slug, "cannot delete the server's key-value bucket: {why}");
        }
    }

    /// Each loaded tenant's store: slug, bytes used, bytes granted.
    pub(crate) fn usage(&self) -> Vec<(String, u64, u64)> {
        let stores = crate::base::sync::lock(&self.stores);
        let mut usage: Vec<_> = stores
            .iter()
            .filter_map(|(slug, store)| {
                let store = store.upgrade()?;
                Some((slug.clone(), store.used(), store.quota()))
            })
            .collect();
        usage.sort();
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_keeps_its_store_while_loaded_and_never_sees_anothers() {
        let stores = KeyValueStores::default();
        let seed = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
        let set = |key: &str| vec![(key.to_string(), Some(b"1".to_vec()))];
        let a = stores.grant("a", 1 << 20, &seed);
        a.set_many(set("x")).await.unwrap();
        // A reload or a new version settles the tenant again: same store,
        // the new quota, the seed not applied twice.
        let again = stores.grant("a", 1 << 10, &BTreeMap::new());
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.quota(), 1 << 10);
        assert_eq!(
            again.get("greeting").await.unwrap().as_deref(),
            Some(&b"hi"[..])
        );
        let b = stores.grant("b", 1 << 20, &BTreeMap::new());
        assert_eq!(b.get("x").await.unwrap(), None);
        // Once the tenant is gone, so are its entries.
        drop((a, again));
        let fresh = stores.grant("a", 1 << 20, &BTreeMap::new());
        assert_eq!(fresh.get("x").await.unwrap(), None);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            fresh.set_many(set(&long)).await,
            Err(Problem::Refused(why)) if why.contains("at most 512 bytes")
        ));
    }
}
