//! A tenant's entries on a cluster: a JetStream key-value bucket of its own,
//! `mctx-kv-{slug}`, which every host reads and writes, so a request on any
//! host sees what a request on another stored.
//!
//! Keys are stored base64url-encoded behind a `k` (JetStream keys allow only
//! `[-/_=.a-zA-Z0-9]`, a tenant's may be any string). The quota is checked
//! against the bucket's size as JetStream counts it before each write that
//! adds data (requests on several hosts at once may overshoot it a little);
//! JetStream itself refuses writes past twice the quota, a hard bound.
//! Deletes are never refused. Each key is atomic; a batch is not (its keys
//! are written one after another).

use std::collections::BTreeMap;

use async_nats::jetstream::{Context, kv};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures_util::TryStreamExt as _;

use super::{PAGE, Page, Problem};

fn bucket_name(slug: &str) -> String {
    format!("mctx-kv-{slug}")
}

fn encode(key: &str) -> String {
    format!("k{}", URL_SAFE_NO_PAD.encode(key))
}

fn decode(name: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(name.strip_prefix('k')?).ok()?;
    String::from_utf8(bytes).ok()
}

/// JetStream's own limit for a quota: past it, writes fail there too.
fn backstop(quota: u64) -> i64 {
    i64::try_from(quota.saturating_mul(2)).unwrap_or(i64::MAX)
}

fn failed(what: &str, error: impl std::fmt::Display) -> Problem {
    Problem::Failed(format!("the cluster's store: {what}: {error}"))
}

pub(super) struct Shared {
    bucket: kv::Store,
}

impl Shared {
    /// Opens (or creates) the tenant's bucket; a new bucket gets `seed`.
    pub(super) async fn open(
        js: &Context,
        slug: &str,
        seed: &BTreeMap<String, String>,
    ) -> Result<Shared, String> {
        let config = kv::Config {
            bucket: bucket_name(slug),
            description: format!("wasi:keyvalue store of tenant {slug} (mctx-host)"),
            history: 1,
            ..Default::default()
        };
        let bucket = crate::logs::cluster::key_value_bucket(js, config)
            .await
            .map_err(|e| format!("the cluster's store: {e:#}"))?;
        for (key, value) in seed {
            // Only where the key has no value yet: another host may have
            // seeded it, or a request changed it since.
            let _ = bucket
                .create(encode(key), Bytes::from(value.clone().into_bytes()))
                .await;
        }
        Ok(Shared { bucket })
    }

    /// Makes JetStream's own limit follow `quota`.
    pub(super) async fn size(&self, js: &Context, quota: u64) -> Result<(), String> {
        let mut status = self
            .bucket
            .status()
            .await
            .map_err(|e| format!("the cluster's store: {e}"))?;
        let limit = backstop(quota);
        if status.info.config.max_bytes != limit {
            status.info.config.max_bytes = limit;
            js.update_stream(&status.info.config)
                .await
                .map_err(|e| format!("the cluster's store: resizing: {e}"))?;
        }
        Ok(())
    }

    /// Refused when `adds` more bytes would take the bucket past `quota`;
    /// else the size it will have.
    async fn room_for(&self, adds: u64, quota: u64) -> Result<u64, Problem> {
        let status = self.bucket.status().await.map_err(|e| failed("size", e))?;
        let used = status.info.state.bytes;
        if used + adds > quota {
            return Err(Problem::Refused(super::full(adds, used, quota)));
        }
        Ok(used + adds)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Problem> {
        let value = self
            .bucket
            .get(encode(key))
            .await
            .map_err(|e| failed("get", e))?;
        Ok(value.map(|bytes| bytes.to_vec()))
    }

    /// Writes the pairs one after another, after checking the quota;
    /// returns the bucket's size as it will be, when it was looked at (a
    /// change that only deletes does not look).
    pub(super) async fn set_many(
        &self,
        pairs: Vec<(String, Option<Vec<u8>>)>,
        quota: u64,
    ) -> Result<Option<u64>, Problem> {
        let adds: u64 = pairs
            .iter()
            .filter_map(|(key, value)| {
                let value = value.as_ref()?;
                Some(super::cost(key, value))
            })
            .sum();
        let mut seen = None;
        if adds > 0 {
            seen = Some(self.room_for(adds, quota).await?);
        }
        for (key, value) in pairs {
            match value {
                Some(value) => self
                    .bucket
                    .put(encode(&key), Bytes::from(value))
                    .await
                    .map(drop)
                    .map_err(|e| refused_or_failed("set", e))?,
                None => self
                    .bucket
                    .delete(encode(&key))
                    .await
                    .map_err(|e| failed("delete", e))?,
            }
        }
        Ok(seen)
    }

    /// Adds `delta` with compare-and-set, so that concurrent increments on
    /// any hosts lose nothing.
    pub(super) async fn increment(
        &self,
        key: &str,
        delta: u64,
        quota: u64,
    ) -> Result<u64, Problem> {
        let name = encode(key);
        for _ in 0..100 {
            let entry = self
                .bucket
                .entry(name.clone())
                .await
                .map_err(|e| failed("get", e))?
                .filter(|entry| entry.operation == kv::Operation::Put);
            let current = entry.as_ref().map(|entry| entry.value.as_ref());
            let next = super::incremented(key, current, delta).map_err(Problem::Refused)?;
            let value = Bytes::from(next.to_string().into_bytes());
            if current.is_none() {
                self.room_for(super::cost(key, &value), quota).await?;
            }
            let written = match &entry {
                Some(entry) => self
                    .bucket
                    .update(&name, value, entry.revision)
                    .await
                    .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
                None => self
                    .bucket
                    .create(&name, value)
                    .await
                    .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
            };
            match written {
                Ok(_) => return Ok(next),
                // Another request changed it first: read it again.
                Err(true) => continue,
                Err(false) => {
                    return Err(Problem::Failed(format!(
                        "the cluster's store: increment of {key:?} failed"
                    )));
                }
            }
        }
        Err(Problem::Failed(format!(
            "the cluster's store: key {key:?} changed under 100 increments in a row"
        )))
    }

    pub(super) async fn keys(&self, from: usize) -> Result<Page, Problem> {
        let names: Vec<String> = self
            .bucket
            .keys()
            .await
            .map_err(|e| failed("keys", e))?
            .try_collect()
            .await
            .map_err(|e| failed("keys", e))?;
        let mut keys: Vec<String> = names.iter().filter_map(|name| decode(name)).collect();
        keys.sort();
        let total = keys.len();
        let page: Vec<String> = keys.into_iter().skip(from).take(PAGE).collect();
        let next = from.saturating_add(page.len());
        Ok(Page {
            cursor: (next < total).then_some(next as u64),
            keys: page,
        })
    }
}

/// A write JetStream refused for its size limit is the tenant's quota.
fn refused_or_failed(what: &str, error: kv::PutError) -> Problem {
    let text = error.to_string();
    if text.contains("maximum bytes") {
        Problem::Refused(format!("the store is full ({text})"))
    } else {
        failed(what, text)
    }
}

/// Deletes a tenant's bucket (gone already: nothing to do).
pub(super) async fn delete(js: &Context, slug: &str) -> Result<(), String> {
    let name = bucket_name(slug);
    if js.get_key_value(&name).await.is_err() {
        return Ok(());
    }
    js.delete_key_value(&name)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_round_trips_through_jetstreams_key_alphabet() {
        for key in [
            "",
            "visits",
            "task/abc.def/answer/confirm",
            "a b",
            "ünï 🦀",
            ".dot.",
        ] {
            let name = encode(key);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')),
                "{name}"
            );
            assert_eq!(decode(&name).as_deref(), Some(key));
        }
    }
}
