//! What this tenant remembers between requests: the host's key-value store
//! (`wasi:keyvalue`), when the tenant is granted one (`keyvalue_max_bytes`
//! in its table; `-S keyvalue` under either host in single-component mode).
//!
//! Only what a later request *says* is kept here (a task cancelled, an
//! answer given); everything a request can carry itself still travels
//! signed (`mrtr::sign`). Each fact is a key of its own and is written
//! once, so two requests answering different questions of one task at the
//! same time cannot overwrite each other.

use serde_json::Value;

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:keyvalue/imports",
    generate_all,
});

pub use wasi::keyvalue::store::Bucket;
use wasi::keyvalue::store::{self, Error};

/// The tenant's store, or why there is none.
pub fn open() -> Result<Bucket, String> {
    store::open("").map_err(|e| match e {
        Error::AccessDenied => "this tenant is granted no key-value store".to_string(),
        Error::NoSuchStore => "the host has no key-value store".to_string(),
        Error::Other(why) => format!("its key-value store failed: {why}"),
    })
}

/// The JSON value under `key`, if there is one (an unreadable value counts
/// as none).
pub fn get(bucket: &Bucket, key: &str) -> Option<Value> {
    let bytes = bucket.get(key).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// Keeps `value` under `key`.
pub fn put(bucket: &Bucket, key: &str, value: &Value) -> Result<(), String> {
    bucket
        .set(key, value.to_string().as_bytes())
        .map_err(|e| match e {
            Error::Other(why) => why,
            other => format!("{other:?}"),
        })
}
