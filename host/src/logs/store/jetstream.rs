//! The store on a cluster: retained entries live in JetStream, one stream
//! per tenant (`MCTX_LOGS_{slug}`, subject `mctx.logs.kept.{slug}`) with the
//! tenant's age and bytes as the stream's own limits, so every host holds
//! them and none is lost when the host that served them goes away.
//!
//! ```text
//!  Publisher ─► LogStore::append ─► outbox ─► task: publish (one message per slug per drain)
//!  stream ─► a follower per retained tenant (ordered consumer) ─► Backlog ─► writer ─► this host's SQLite
//! ```
//!
//! Every host follows every retained tenant's stream into its own SQLite
//! file (the same writer, the same queries), remembering the last message
//! written (`followed`), so a restart resumes where it stopped. A query
//! first waits until this host's copy has every message the stream held
//! when the query came (or says it could not within its patience).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use super::Policy;
use super::backlog::{Backlog, entry_bytes};
use crate::base::config::Retention;
use crate::base::metrics::Metrics;
use crate::base::sync::lock;
use crate::logs::entry::LogEntry;

/// Batches waiting to be published before more are refused.
const OUTBOX: usize = 4096;
/// One message's entries at most (NATS takes 1 MB a message by default).
const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// How long a query waits for this host's copy to catch up.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(10);

fn stream_name(slug: &str) -> String {
    format!("MCTX_LOGS_{slug}")
}

fn subject(slug: &str) -> String {
    format!("mctx.logs.kept.{slug}")
}

/// Publishing this host's entries, and following every retained tenant.
pub(super) struct Replication {
    jetstream: jetstream::Context,
    outbox: mpsc::Sender<(String, Vec<LogEntry>)>,
    backlog: Arc<Backlog>,
    metrics: Arc<Metrics>,
    /// Per slug: its follower, what it follows with, and the last stream
    /// message it has handed to the writer.
    followers: Mutex<HashMap<String, Follower>>,
    /// Per slug, the last stream message written here when the store
    /// opened.
    resumed: HashMap<String, u64>,
}

struct Follower {
    retention: Retention,
    applied: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Replication {
    /// Starts publishing (needs a Tokio runtime).
    pub(super) fn start(
        jetstream: jetstream::Context,
        backlog: Arc<Backlog>,
        metrics: Arc<Metrics>,
        resumed: HashMap<String, u64>,
    ) -> Arc<Replication> {
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        let replication = Arc::new(Replication {
            jetstream: jetstream.clone(),
            outbox,
            backlog,
            metrics: metrics.clone(),
            followers: Mutex::default(),
            resumed,
        });
        tokio::spawn(
            publish(jetstream, inbox, metrics)
                .instrument(tracing::info_span!("log store publisher")),
        );
        replication
    }

    /// Queues this host's entries of `slug` for its stream; refused (and
    /// counted) when the outbox is full.
    pub(super) fn append(&self, slug: &str, entries: Vec<LogEntry>) {
        let count = entries.len() as u64;
        if self.outbox.try_send((slug.to_string(), entries)).is_err() {
            self.metrics.entries_unstored(slug, "backlog", count);
        }
    }

    /// Follows the retained tenants' streams (and stops following the
    /// others).
    pub(super) fn follow(self: &Arc<Self>, policies: &HashMap<String, Policy>) {
        let mut followers = lock(&self.followers);
        followers.retain(|slug, _| policies.contains_key(slug));
        for (slug, Policy { retention, .. }) in policies {
            if followers
                .get(slug)
                .is_some_and(|f| f.retention == *retention)
            {
                continue;
            }
            let start = followers
                .get(slug)
                .map(|f| *f.applied.borrow())
                .or_else(|| self.resumed.get(slug).copied())
                .unwrap_or(0);
            let (applied, seen) = watch::channel(start);
            let task = tokio::spawn(
                follow(self.clone(), slug.clone(), *retention, start, applied)
                    .instrument(tracing::info_span!("log store follower", slug = %slug)),
            );
            followers.insert(
                slug.clone(),
                Follower {
                    retention: *retention,
                    applied: seen,
                    task,
                },
            );
        }
    }

    /// Waits until this host has every message `slug`'s stream holds now.
    pub(super) async fn caught_up(&self, slug: &str) -> Result<()> {
        let Some(mut applied) = lock(&self.followers).get(slug).map(|f| f.applied.clone()) else {
            return Ok(());
        };
        let last = match self.jetstream.get_stream(stream_name(slug)).await {
            Ok(mut stream) => {
                stream
                    .info()
                    .await
                    .context("reading the stream")?
                    .state
                    .last_sequence
            }
            Err(_) => return Ok(()), // no stream yet: nothing kept yet
        };
        let caught_up =
            tokio::time::timeout(CATCH_UP_PATIENCE, applied.wait_for(|seq| *seq >= last))
                .await
                .map(|waited| waited.is_ok());
        match caught_up {
            Ok(true) => Ok(()),
            Ok(false) => anyhow::bail!("the log store stopped following"),
            Err(_) => anyhow::bail!(
                "this host's copy of the log is behind the cluster's (message {} of {last})",
                *applied.borrow()
            ),
        }
    }
}

/// The stream for `slug`, made (or brought to `retention`'s limits).
async fn ensure_stream(
    jetstream: &jetstream::Context,
    slug: &str,
    retention: Retention,
) -> Result<stream::Stream> {
    let config = stream::Config {
        name: stream_name(slug),
        subjects: vec![subject(slug)],
        max_age: retention.age,
        max_bytes: i64::try_from(retention.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        ..stream::Config::default()
    };
    match jetstream.get_stream(&config.name).await {
        Ok(mut found) => {
            let info = found.info().await?;
            if info.config.max_age != config.max_age || info.config.max_bytes != config.max_bytes {
                jetstream.update_stream(&config).await?;
            }
            Ok(found)
        }
        Err(_) => match jetstream.create_stream(config.clone()).await {
            Ok(made) => Ok(made),
            // Another host made it meanwhile.
            Err(_) => Ok(jetstream.get_stream(&config.name).await?),
        },
    }
}

/// Follows `slug`'s stream from after message `start`, handing what comes
/// to the writer; retries (every second, then less often) while JetStream
/// is away.
async fn follow(
    replication: Arc<Replication>,
    slug: String,
    retention: Retention,
    mut start: u64,
    applied: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match follow_once(&replication, &slug, retention, &mut start, &applied).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "following the log stream failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(16));
            }
        }
    }
}

async fn follow_once(
    replication: &Replication,
    slug: &str,
    retention: Retention,
    start: &mut u64,
    applied: &watch::Sender<u64>,
) -> Result<()> {
    let stream = ensure_stream(&replication.jetstream, slug, retention).await?;
    let deliver_policy = match *start {
        0 => consumer::DeliverPolicy::All,
        last => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        },
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("cannot follow the stream")?;
    let mut messages = consumer
        .messages()
        .await
        .context("cannot read the stream")?;
    while let Some(message) = messages.next().await {
        let message = message.context("reading the stream")?;
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .stream_sequence;
        match serde_json::from_slice::<Vec<LogEntry>>(&message.payload) {
            Ok(entries) => replication.backlog.append(slug, entries, Some(seq)),
            Err(e) => {
                tracing::warn!(seq, error = %e, "a stream message that is not entries, skipped")
            }
        }
        *start = seq;
        applied.send_replace(seq);
    }
    Ok(())
}

/// Publishes what the outbox holds: per drain, one message per slug (or
/// more, past [`MAX_MESSAGE_BYTES`]), each acknowledged by JetStream before
/// the next drain.
async fn publish(
    jetstream: jetstream::Context,
    mut inbox: mpsc::Receiver<(String, Vec<LogEntry>)>,
    metrics: Arc<Metrics>,
) {
    while let Some(first) = inbox.recv().await {
        let mut by_slug: Vec<(String, Vec<LogEntry>)> = vec![first];
        while let Ok((slug, entries)) = inbox.try_recv() {
            match by_slug.iter_mut().find(|(s, _)| *s == slug) {
                Some((_, held)) => held.extend(entries),
                None => by_slug.push((slug, entries)),
            }
        }
        let mut acks = Vec::new();
        for (slug, entries) in by_slug {
            // Cut where the entries' size (as the backlog counts it) passes
            // a message's; each message counts its own entries.
            let mut messages: Vec<&[LogEntry]> = Vec::new();
            let (mut start, mut bytes) = (0, 0);
            for (i, entry) in entries.iter().enumerate() {
                bytes += entry_bytes(entry);
                if bytes >= MAX_MESSAGE_BYTES {
                    messages.push(&entries[start..=i]);
                    (start, bytes) = (i + 1, 0);
                }
            }
            if start < entries.len() {
                messages.push(&entries[start..]);
            }
            for message in messages {
                let count = message.len() as u64;
                let payload = serde_json::to_vec(message).expect("entries serialize");
                match jetstream.publish(subject(&slug), payload.into()).await {
                    Ok(ack) => acks.push((slug.clone(), count, ack)),
                    Err(e) => {
                        tracing::warn!(slug, error = %e, "log store: entries not published");
                        metrics.entries_unstored(&slug, "failed", count);
                    }
                }
            }
        }
        for (slug, count, ack) in acks {
            if let Err(e) = ack.await {
                tracing::warn!(slug, error = %e, "log store: JetStream did not keep entries");
                metrics.entries_unstored(&slug, "failed", count);
            }
        }
    }
}
