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
//! and instances on this host, kept in memory for as long as the tenant is
//! loaded. `open("")` gives it; any other identifier is `no-such-store`, as
//! under `wasmtime serve`. Nothing is granted by default: without
//! `keyvalue_max_bytes` in its table (or `[host]`, or `-S keyvalue` in
//! single-component mode) `open` answers `access-denied`, and every refusal
//! — that, a full store, a key too long — is also a `warn` entry on the
//! tenant's log stream, so its owner sees what the host refused.
//!
//! What it is not: durable (a restart empties it) or shared between hosts
//! of a cluster; README says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use wasmtime::component::{HasSelf, Linker, Resource};

use crate::logs::entry::Level;
use crate::run::state::RequestState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:keyvalue/imports",
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error, KeyResponse};

/// What one entry costs beyond its key and value bytes: the map's own
/// bookkeeping, so that a million empty values cannot fit in a few bytes
/// of quota.
const ENTRY_OVERHEAD: u64 = 64;
/// The longest key, in bytes (Workers KV's limit).
pub(crate) const MAX_KEY_BYTES: usize = 512;
/// Keys per `list-keys` page.
const PAGE: usize = 1000;

/// The guest's handle to its store: the store itself is the request
/// state's (its tenant's), so the handle carries nothing. (`pub`: the
/// bindings re-export it.)
#[allow(unreachable_pub)]
pub struct Bucket;

/// One tenant's entries and what they use of its quota.
pub(crate) struct TenantStore {
    quota: AtomicU64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    map: BTreeMap<String, Vec<u8>>,
    used: u64,
}

fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

impl Entries {
    /// Applies `changes` (a value, or `None` to remove) whole, or none of
    /// them when the store would go past `quota`.
    fn apply(&mut self, changes: Vec<(String, Option<Vec<u8>>)>, quota: u64) -> Result<(), String> {
        let mut used = self.used;
        let mut seen: HashMap<&str, u64> = HashMap::new();
        for (key, value) in &changes {
            // A key named twice in one batch: the last value wins, so only
            // the difference to what it replaces counts.
            let before = match seen.get(key.as_str()) {
                Some(cost) => *cost,
                None => self.map.get(key).map_or(0, |old| cost(key, old)),
            };
            let after = value.as_deref().map_or(0, |value| cost(key, value));
            used = used - before + after;
            seen.insert(key, after);
        }
        if used > quota {
            return Err(format!(
                "the store is full: this change needs {} bytes more and {} of its {quota} bytes \
                 are in use (raise keyvalue_max_bytes, or delete keys)",
                used - self.used,
                self.used
            ));
        }
        for (key, value) in changes {
            match value {
                Some(value) => self.map.insert(key, value),
                None => self.map.remove(&key),
            };
        }
        self.used = used;
        Ok(())
    }
}

impl TenantStore {
    fn new(quota: u64) -> Self {
        TenantStore {
            quota: AtomicU64::new(quota),
            entries: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        // No code under the lock can panic halfway through a change.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quota(&self) -> u64 {
        self.quota.load(Ordering::Relaxed)
    }

    /// Bytes in use (keys, values and each entry's overhead).
    pub(crate) fn used(&self) -> u64 {
        self.entries().used
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries().map.get(key).cloned()
    }

    fn set_many(&self, pairs: Vec<(String, Option<Vec<u8>>)>) -> Result<(), String> {
        if let Some((key, _)) = pairs.iter().find(|(key, _)| key.len() > MAX_KEY_BYTES) {
            return Err(format!(
                "a key has at most {MAX_KEY_BYTES} bytes, this one {}",
                key.len()
            ));
        }
        let quota = self.quota();
        self.entries().apply(pairs, quota)
    }

    fn increment(&self, key: String, delta: u64) -> Result<u64, String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "a key has at most {MAX_KEY_BYTES} bytes, this one {}",
                key.len()
            ));
        }
        let quota = self.quota();
        let mut entries = self.entries();
        let current = match entries.map.get(&key) {
            None => 0,
            Some(value) => std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| format!("key {key:?} does not hold a whole number"))?,
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| format!("key {key:?}: {current} + {delta} overflows"))?;
        entries.apply(vec![(key, Some(next.to_string().into_bytes()))], quota)?;
        Ok(next)
    }

    fn keys(&self, from: usize) -> KeyResponse {
        let entries = self.entries();
        let keys: Vec<String> = entries.map.keys().skip(from).take(PAGE).cloned().collect();
        let next = from + keys.len();
        KeyResponse {
            cursor: (next < entries.map.len()).then_some(next as u64),
            keys,
        }
    }
}

/// Every tenant's store on this host, by slug. A store lives as long as a
/// loaded tenant holds it (its [`Capabilities`]), so a new version, a
/// reload or a redeploy finds the same entries, and a removed tenant's are
/// freed.
///
/// [`Capabilities`]: crate::run::capabilities::Capabilities
#[derive(Default)]
pub(crate) struct KeyValueStores {
    stores: Mutex<HashMap<String, Weak<TenantStore>>>,
}

impl KeyValueStores {
    /// The store of `slug`, with `quota` bytes from now on (created empty,
    /// then `seed`ed, if the tenant has none).
    pub(crate) fn grant(
        &self,
        slug: &str,
        quota: u64,
        seed: &BTreeMap<String, String>,
    ) -> Arc<TenantStore> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores.retain(|_, store| store.strong_count() > 0);
        if let Some(store) = stores.get(slug).and_then(Weak::upgrade) {
            store.quota.store(quota, Ordering::Relaxed);
            return store;
        }
        let store = Arc::new(TenantStore::new(quota));
        let pairs = seed
            .iter()
            .map(|(key, value)| (key.clone(), Some(value.clone().into_bytes())))
            .collect();
        if let Err(why) = store.set_many(pairs) {
            tracing::warn!(slug, "keyvalue seed not stored: {why}");
        }
        stores.insert(slug.to_string(), Arc::downgrade(&store));
        store
    }
}

impl KeyValueStores {
    /// Each loaded tenant's store: slug, bytes used, bytes granted.
    pub(crate) fn usage(&self) -> Vec<(String, u64, u64)> {
        let stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
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

/// Adds `wasi:keyvalue/{store,atomics,batch}` to a linker.
pub(crate) fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    store::add_to_linker::<RequestState, HasSelf<RequestState>>(linker, |state| state)?;
    atomics::add_to_linker::<RequestState, HasSelf<RequestState>>(linker, |state| state)?;
    batch::add_to_linker::<RequestState, HasSelf<RequestState>>(linker, |state| state)
}

impl RequestState {
    /// The tenant's store behind a bucket handle the guest holds; an error
    /// when the handle is not one of this request's.
    fn bucket(&mut self, bucket: &Resource<Bucket>) -> Result<Arc<TenantStore>, Error> {
        self.table_mut()
            .get(bucket)
            .map_err(|e| Error::Other(format!("not a bucket: {e}")))?;
        self.keyvalue().cloned().ok_or(Error::AccessDenied)
    }

    /// `why` for the guest, and a `warn` entry for the tenant's owner.
    fn refuse_keyvalue(&self, why: String) -> Error {
        self.capture()
            .publish_host_entry(Level::Warn, format!("[mctx] keyvalue refused: {why}"));
        Error::Other(why)
    }
}

impl store::Host for RequestState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, Error> {
        if self.keyvalue().is_none() {
            self.capture().publish_host_entry(
                Level::Warn,
                "[mctx] keyvalue refused: this tenant has no store (its table grants one with \
                 keyvalue_max_bytes)"
                    .to_string(),
            );
            return Err(Error::AccessDenied);
        }
        if !identifier.is_empty() {
            return Err(Error::NoSuchStore);
        }
        self.table_mut()
            .push(Bucket)
            .map_err(|e| Error::Other(e.to_string()))
    }
}

impl store::HostBucket for RequestState {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket(&bucket)?.get(&key))
    }

    fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        store
            .set_many(vec![(key, Some(value))])
            .map_err(|why| self.refuse_keyvalue(why))
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        store
            .set_many(vec![(key, None)])
            .map_err(|why| self.refuse_keyvalue(why))
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, Error> {
        Ok(self.bucket(&bucket)?.entries().map.contains_key(&key))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        let from = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        Ok(self.bucket(&bucket)?.keys(from))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table_mut().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for RequestState {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        let store = self.bucket(&bucket)?;
        store
            .increment(key, delta)
            .map_err(|why| self.refuse_keyvalue(why))
    }
}

impl batch::Host for RequestState {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let store = self.bucket(&bucket)?;
        let entries = store.entries();
        Ok(keys
            .into_iter()
            .map(|key| {
                let value = entries.map.get(&key).cloned();
                value.map(|value| (key, value))
            })
            .collect())
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        let pairs = key_values
            .into_iter()
            .map(|(key, value)| (key, Some(value)))
            .collect();
        store
            .set_many(pairs)
            .map_err(|why| self.refuse_keyvalue(why))
    }

    fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        let pairs = keys.into_iter().map(|key| (key, None)).collect();
        store
            .set_many(pairs)
            .map_err(|why| self.refuse_keyvalue(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(store: &TenantStore, key: &str, value: &str) -> Result<(), String> {
        store.set_many(vec![(key.to_string(), Some(value.as_bytes().to_vec()))])
    }

    #[test]
    fn the_quota_counts_keys_values_and_entries_and_a_refused_change_changes_nothing() {
        let store = TenantStore::new(2 * ENTRY_OVERHEAD + 10);
        set(&store, "a", "1234").unwrap();
        assert_eq!(store.used(), ENTRY_OVERHEAD + 5);
        // Replacing a value counts only the difference.
        set(&store, "a", "12345678").unwrap();
        assert_eq!(store.used(), ENTRY_OVERHEAD + 9);
        let why = set(&store, "b", "12").unwrap_err();
        assert!(why.contains("the store is full"), "{why}");
        assert_eq!(store.get("b"), None);
        // A batch that would not fit stores none of its pairs.
        let batch = vec![
            ("a".to_string(), None),
            ("c".to_string(), Some(vec![0; 200])),
        ];
        assert!(store.set_many(batch).is_err());
        assert_eq!(store.get("a").as_deref(), Some(&b"12345678"[..]));
        store.set_many(vec![("a".to_string(), None)]).unwrap();
        assert_eq!(store.used(), 0);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(
            set(&store, &long, "")
                .unwrap_err()
                .contains("at most 512 bytes")
        );
    }

    #[test]
    fn increments_count_from_zero_and_refuse_what_is_not_a_number() {
        let store = TenantStore::new(1 << 20);
        assert_eq!(store.increment("n".into(), 2).unwrap(), 2);
        assert_eq!(store.increment("n".into(), 40).unwrap(), 42);
        set(&store, "text", "hello").unwrap();
        assert!(store.increment("text".into(), 1).is_err());
        set(&store, "max", &u64::MAX.to_string()).unwrap();
        assert!(
            store
                .increment("max".into(), 1)
                .unwrap_err()
                .contains("overflows")
        );
    }

    #[test]
    fn keys_come_in_pages_with_a_cursor() {
        let store = TenantStore::new(1 << 30);
        let pairs = (0..PAGE + 5)
            .map(|i| (format!("k{i:05}"), Some(vec![])))
            .collect();
        store.set_many(pairs).unwrap();
        let first = store.keys(0);
        assert_eq!(first.keys.len(), PAGE);
        assert_eq!(first.keys[0], "k00000");
        let second = store.keys(first.cursor.unwrap() as usize);
        assert_eq!(second.keys.len(), 5);
        assert_eq!(second.cursor, None);
        assert!(store.keys(usize::MAX).keys.is_empty());
    }

    #[test]
    fn a_tenant_keeps_its_store_while_loaded_and_never_sees_anothers() {
        let stores = KeyValueStores::default();
        let seed = BTreeMap::from([("greeting".to_string(), "hi".to_string())]);
        let a = stores.grant("a", 1 << 20, &seed);
        set(&a, "x", "1").unwrap();
        // A reload or a new version settles the tenant again: same store,
        // the new quota, the seed not applied twice.
        let again = stores.grant("a", 1 << 10, &BTreeMap::new());
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(again.quota(), 1 << 10);
        assert_eq!(again.get("greeting").as_deref(), Some(&b"hi"[..]));
        let b = stores.grant("b", 1 << 20, &BTreeMap::new());
        assert_eq!(b.get("x"), None);
        // Once the tenant is gone, so are its entries.
        drop((a, again));
        let fresh = stores.grant("a", 1 << 20, &BTreeMap::new());
        assert_eq!(fresh.get("x"), None);
    }
}
