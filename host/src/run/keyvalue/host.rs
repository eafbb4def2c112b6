//! The `wasi:keyvalue` side: the guest's calls on the request's
//! [`RequestState`], each answered from its tenant's store, each refusal
//! also told to the tenant's owner.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource};

use super::{Page, Problem, TenantStore};
use crate::logs::entry::Level;
use crate::run::state::RequestState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:keyvalue/imports",
        // On a cluster a call goes over the network to JetStream.
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use store::{Error, KeyResponse};

/// The guest's handle to its store: the store itself is the request
/// state's (its tenant's), so the handle carries nothing. (`pub`: the
/// bindings re-export it.)
#[allow(unreachable_pub)]
pub struct Bucket;

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

    /// The problem for the guest, and a `warn` entry for the tenant's owner.
    fn said(&self, problem: Problem) -> Error {
        let (verb, why) = match problem {
            Problem::Refused(why) => ("refused", why),
            Problem::Failed(why) => ("failed", why),
        };
        self.capture()
            .publish_host_entry(Level::Warn, format!("[mctx] keyvalue {verb}: {why}"));
        Error::Other(why)
    }
}

impl store::Host for RequestState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, Error> {
        if self.keyvalue().is_none() {
            // Told to the owner as a refusal; the guest gets its own code.
            self.said(Problem::Refused(
                "this tenant has no store (its table grants one with keyvalue_max_bytes)".into(),
            ));
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
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        let store = self.bucket(&bucket)?;
        store.get(&key).await.map_err(|p| self.said(p))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        store
            .set_many(vec![(key, Some(value))])
            .await
            .map_err(|p| self.said(p))
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        store
            .set_many(vec![(key, None)])
            .await
            .map_err(|p| self.said(p))
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, Error> {
        let store = self.bucket(&bucket)?;
        let value = store.get(&key).await.map_err(|p| self.said(p))?;
        Ok(value.is_some())
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        let store = self.bucket(&bucket)?;
        let from = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let Page { keys, cursor } = store.keys(from).await.map_err(|p| self.said(p))?;
        Ok(KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table_mut().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for RequestState {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        let store = self.bucket(&bucket)?;
        store.increment(key, delta).await.map_err(|p| self.said(p))
    }
}

impl batch::Host for RequestState {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let store = self.bucket(&bucket)?;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = store.get(&key).await.map_err(|p| self.said(p))?;
            values.push(value.map(|value| (key, value)));
        }
        Ok(values)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        let pairs = key_values
            .into_iter()
            .map(|(key, value)| (key, Some(value)))
            .collect();
        store.set_many(pairs).await.map_err(|p| self.said(p))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), Error> {
        let store = self.bucket(&bucket)?;
        let pairs = keys.into_iter().map(|key| (key, None)).collect();
        store.set_many(pairs).await.map_err(|p| self.said(p))
    }
}
