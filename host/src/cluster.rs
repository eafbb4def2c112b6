//! Log hubs across hosts, on NATS.
//!
//! When a slug's requests land on several hosts while its viewers are
//! connected to any of them, each host keeps its in-process [`LogHub`] for
//! its own viewers and NATS carries entries between hosts:
//!
//! ```text
//!  host A: capture ─► Cluster::publish ─► numbered (node "a", seq) ─┬─► A's hub ─► A's viewers
//!                                                                    └─► outbound ─► NATS mctx.logs.{slug}
//!  host B: NATS mctx.logs.{slug} ─► follower (gaps in A's seq counted) ─► B's hub ─► B's viewers
//! ```
//!
//! - **Who sends.** A host publishes a slug's entries only while another
//!   host has viewers of it: it learns that from the viewer-claims bucket
//!   ([`leases`]), which it watches. No viewer anywhere, no cost anywhere.
//! - **Who receives.** A host subscribes to `mctx.logs.{slug}` while it has
//!   viewers of the slug (the subscription is attached to the slug's hub and
//!   goes with its last viewer).
//! - **Order and loss.** Entries carry their producer's `node` and a `seq`
//!   that counts per producer and slug. The receiver checks each producer's
//!   `seq` for gaps (entries dropped while the link was down, a slow
//!   consumer) and reports them to its viewers as `dropped` frames.
//! - **The viewer limit** is counted over all hosts by compare-and-set on a
//!   JetStream key-value entry per slug, with leases ([`leases`]).
//! - **When NATS is unreachable** the host keeps serving and its viewers
//!   keep getting its own entries; they get a `notice` saying the link is
//!   down (and again when it is back), viewers arriving meanwhile are
//!   admitted against this host's count only and told so. The client
//!   reconnects with backoff (0.1 s doubling to 5 s) forever.

pub mod leases;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

use crate::capture::LogSink;
use crate::config::ClusterSettings;
use crate::entry::{LogEntry, now_ms};
use crate::hub::{LogHub, MAX_BATCH, Subscription};
use leases::{ClaimOutcome, Claims};

/// Entries of slug `s` travel on `mctx.logs.s`.
pub const SUBJECT_PREFIX: &str = "mctx.logs";
/// The key-value bucket of viewer claims (one key per slug).
pub const BUCKET: &str = "mctx-log-viewers";
/// How long one key-value operation (a claim) may take before the host
/// gives up on it and treats the cluster as unreachable.
const KV_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries waiting to go to NATS; past this the newest are dropped (their
/// `seq` numbers are skipped, so the receivers report them).
const MAX_OUTBOUND_ENTRIES: usize = 100_000;
/// A message stays well under NATS's default 1 MiB payload limit.
const MAX_MESSAGE_BYTES: usize = 512 * 1024;

/// What travels on `mctx.logs.{slug}`: a producer's entries in `seq`
/// order, and the `seq` its next entry will have. An empty batch is a
/// marker: it lets receivers see a gap at the end of a stream.
#[derive(Serialize, Deserialize)]
struct Batch<E> {
    node: String,
    next: u64,
    entries: E,
}

/// This host's link to the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<str>,
    nats_url: String,
    lease: Duration,
    client: async_nats::Client,
    hub: LogHub,
    /// The claims bucket, once found or created (reset after an error, so
    /// that a NATS server that lost its storage gets the bucket back).
    store: tokio::sync::Mutex<Option<kv::Store>>,
    link: Mutex<Link>,
    /// Counts connections: the interest watch restarts on each.
    connections: watch::Sender<u64>,
    /// Slug → until when (ms) another host has viewers of it.
    interest: Mutex<HashMap<String, u64>>,
    outbound: Mutex<Outbound>,
    outbound_ready: Notify,
    /// Claims need rewriting now (the link came back).
    renew_claims: Notify,
    /// Slug → the viewer count this host's claim in the bucket says.
    claimed: Mutex<HashMap<String, usize>>,
    stats: Stats,
}

/// The state of the NATS connection, as viewers are told about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not connected yet since the host started.
    Connecting,
    Up,
    Down {
        since: Instant,
    },
}

#[derive(Default)]
struct Outbound {
    /// Per slug, the next `seq` this host gives.
    next_seq: HashMap<String, u64>,
    pending: HashMap<String, Vec<LogEntry>>,
    pending_entries: usize,
    /// Send a marker per slug (the link came back).
    markers: bool,
}

#[derive(Default)]
struct Stats {
    sent_entries: AtomicU64,
    /// Entries meant for other hosts that never left this one.
    unsent_entries: AtomicU64,
    received_entries: AtomicU64,
    /// Entries of other hosts found missing (gaps in their `seq`).
    missed_entries: AtomicU64,
}

/// What the cluster decided about a new viewer.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The slug has `max` viewers over all hosts.
    Full {
        max: usize,
    },
    /// The cluster could not be asked; admitted on this host's count, and
    /// told so.
    LocalOnly,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// This host's default node name: `{hostname}-{pid}`, unique per process.
pub fn default_node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname
    // NUL-terminates within it (or truncates, which we handle below).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(48)
            .collect()
    } else {
        "host".to_string()
    };
    format!("{host}-{}", std::process::id())
}

/// Reconnect delays: 0.1 s doubling to 5 s, with up to 20 % jitter so that
/// hosts do not all knock at once after a NATS restart.
fn reconnect_delay(attempts: usize) -> Duration {
    let base = 100u64.saturating_mul(1 << attempts.saturating_sub(1).min(6));
    let ms = base.min(5_000);
    Duration::from_millis(ms + fastrand::u64(0..=ms / 5))
}

impl Cluster {
    /// Connects to NATS (in the background: an unreachable server does not
    /// stop the host, it is retried) and starts the tasks that move
    /// entries and claims. Fails only on settings that can never work.
    pub async fn start(settings: &ClusterSettings, hub: LogHub) -> Result<Cluster> {
        let node = settings.node.clone().unwrap_or_else(default_node_name);
        ClusterSettings::check_node(&node).map_err(|e| anyhow!("--node: {e}"))?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name(format!("mctx-host {node}"))
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let events = events_tx.clone();
                async move {
                    let _ = events.send(event);
                }
            })
            .connect(settings.nats_url.as_str())
            .await
            .with_context(|| format!("[cluster] nats_url {:?}", settings.nats_url))?;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node: node.into(),
                nats_url: settings.nats_url.clone(),
                lease: Duration::from_secs(settings.viewer_lease_secs),
                client,
                hub,
                store: Default::default(),
                link: Mutex::new(Link::Connecting),
                connections: watch::Sender::new(0),
                interest: Mutex::default(),
                outbound: Mutex::default(),
                outbound_ready: Notify::new(),
                renew_claims: Notify::new(),
                claimed: Mutex::default(),
                stats: Stats::default(),
            }),
        };
        let inner = &cluster.inner;
        tokio::spawn(follow_link(inner.clone(), events_rx));
        tokio::spawn(send_outbound(inner.clone()));
        tokio::spawn(keep_claims(inner.clone()));
        tokio::spawn(watch_interest(inner.clone()));
        Ok(cluster)
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Decides whether a viewer that this host just subscribed may stay,
    /// counting every host's viewers; then makes sure the viewer's hub
    /// receives other hosts' entries.
    pub async fn admit(&self, subscription: &Subscription, max: usize) -> Admission {
        let inner = &self.inner;
        let slug = subscription.slug();
        if *lock(&inner.link) == Link::Connecting {
            // The host has just started: give the first connection a moment
            // rather than admit a viewer that could have been counted.
            let mut connections = inner.connections.subscribe();
            let _ = tokio::time::timeout(KV_TIMEOUT, connections.wait_for(|n| *n > 0)).await;
        }
        let admission = if !inner.link_is_up() {
            subscription.notice(&format!(
                "the cluster link (NATS at {}) is down: you see this host's entries only, and this viewer was \
                 counted against this host's viewers only",
                inner.nats_url
            ));
            Admission::LocalOnly
        } else {
            match inner.write_claim(slug, Some(max)).await {
                Ok(ClaimOutcome::Held { viewers }) => {
                    lock(&inner.claimed).insert(slug.to_string(), viewers);
                    Admission::Admitted
                }
                Ok(ClaimOutcome::Full { max, .. }) => return Admission::Full { max },
                Err(e) => {
                    tracing::warn!(slug, "cannot count this viewer cluster-wide: {e:#}");
                    subscription.notice(&format!(
                        "this viewer could not be counted across the cluster ({e:#}); it was counted against \
                         this host's viewers only"
                    ));
                    Admission::LocalOnly
                }
            }
        };
        let follower = inner.clone();
        let slug_owned = slug.to_string();
        subscription.attach_once(move || {
            Box::new(AbortOnDrop(tokio::spawn(follow_slug(follower, slug_owned))))
        });
        admission
    }

    /// Gives this host's viewer slots back (shutdown), so that other hosts
    /// need not wait for the leases to run out.
    pub async fn leave(&self) {
        let inner = &self.inner;
        if !inner.link_is_up() {
            return;
        }
        let claimed: Vec<String> = lock(&inner.claimed).keys().cloned().collect();
        for slug in claimed {
            // The viewers are gone by now, so this removes the claim.
            let _ = inner.write_claim(&slug, None).await;
        }
        let _ = tokio::time::timeout(KV_TIMEOUT, inner.client.flush()).await;
    }

    /// The link's state for `/healthz`.
    pub fn status(&self) -> serde_json::Value {
        let inner = &self.inner;
        let link = match *lock(&inner.link) {
            Link::Connecting => "connecting".to_string(),
            Link::Up => "up".to_string(),
            Link::Down { since } => format!("down for {} s", since.elapsed().as_secs()),
        };
        let now = now_ms();
        let mut watched_elsewhere: Vec<String> = lock(&inner.interest)
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(slug, _)| slug.clone())
            .collect();
        watched_elsewhere.sort();
        let stats = &inner.stats;
        serde_json::json!({
            "node": &*inner.node,
            "nats": inner.nats_url,
            "link": link,
            "watchedElsewhere": watched_elsewhere,
            "sentEntries": stats.sent_entries.load(Ordering::Relaxed),
            "unsentEntries": stats.unsent_entries.load(Ordering::Relaxed),
            "receivedEntries": stats.received_entries.load(Ordering::Relaxed),
            "missedEntries": stats.missed_entries.load(Ordering::Relaxed),
        })
    }
}

impl LogSink for Cluster {
    fn wants(&self, slug: &str) -> bool {
        self.inner.hub.wants(slug) || self.inner.watched_elsewhere(slug)
    }

    fn publish(&self, slug: &str, mut entries: Vec<LogEntry>) {
        let inner = &self.inner;
        let local = inner.hub.wants(slug);
        let remote = inner.watched_elsewhere(slug);
        // Numbering, queueing for NATS and handing to the local hub happen
        // under one lock, so that both see this host's entries in `seq`
        // order even when several requests of the slug write at once.
        let mut outbound = lock(&inner.outbound);
        let next = outbound.next_seq.entry(slug.to_string()).or_insert(1);
        for entry in &mut entries {
            entry.node = Some(inner.node.clone());
            entry.seq = *next;
            *next += 1;
        }
        if remote {
            let room = MAX_OUTBOUND_ENTRIES.saturating_sub(outbound.pending_entries);
            let sent: Vec<LogEntry> = entries.iter().take(room).cloned().collect();
            let unsent = entries.len() - sent.len();
            if unsent > 0 {
                inner
                    .stats
                    .unsent_entries
                    .fetch_add(unsent as u64, Ordering::Relaxed);
            }
            outbound.pending_entries += sent.len();
            outbound
                .pending
                .entry(slug.to_string())
                .or_default()
                .extend(sent);
        }
        if local {
            inner.hub.publish_numbered(slug, entries);
        }
        drop(outbound);
        if remote {
            inner.outbound_ready.notify_one();
        }
    }
}

impl Inner {
    fn link_is_up(&self) -> bool {
        *lock(&self.link) == Link::Up
    }

    fn watched_elsewhere(&self, slug: &str) -> bool {
        let interest = lock(&self.interest);
        !interest.is_empty() && interest.get(slug).is_some_and(|until| *until > now_ms())
    }

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
    async fn write_claim(&self, slug: &str, limit: Option<usize>) -> Result<ClaimOutcome> {
        let result = tokio::time::timeout(KV_TIMEOUT, self.try_write_claim(slug, limit)).await;
        let result =
            result.unwrap_or_else(|_| Err(anyhow!("no answer from NATS within {KV_TIMEOUT:?}")));
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

    fn link_up(&self) {
        let before = std::mem::replace(&mut *lock(&self.link), Link::Up);
        match before {
            Link::Up => return,
            Link::Connecting => {
                tracing::info!(node = %self.node, nats = %self.nats_url, "joined the cluster")
            }
            Link::Down { since } => {
                let secs = since.elapsed().as_secs_f64();
                tracing::info!(nats = %self.nats_url, "cluster link back after {secs:.1} s");
                self.hub.notice_all(&format!(
                    "the cluster link is back after {secs:.1} s: entries from other hosts flow again; \
                     those they produced meanwhile are reported as dropped"
                ));
            }
        }
        self.connections.send_modify(|n| *n += 1);
        lock(&self.outbound).markers = true;
        self.outbound_ready.notify_one();
        self.renew_claims.notify_one();
    }

    /// A connection attempt failed before the first one succeeded: the
    /// link is down (viewers need not wait for it), not merely starting.
    fn first_connect_failed(&self, error: &async_nats::ClientError) {
        let mut link = lock(&self.link);
        if *link == Link::Connecting {
            *link = Link::Down {
                since: Instant::now(),
            };
            drop(link);
            tracing::warn!(
                nats = %self.nats_url,
                "cannot reach NATS ({error}); serving without the cluster and retrying"
            );
        }
    }

    fn link_down(&self) {
        let mut link = lock(&self.link);
        if *link != Link::Up {
            return;
        }
        *link = Link::Down {
            since: Instant::now(),
        };
        drop(link);
        tracing::warn!(nats = %self.nats_url, "lost the cluster link; reconnecting");
        self.hub.notice_all(&format!(
            "lost the cluster link (NATS at {}): you see this host's entries only until it is back; reconnecting",
            self.nats_url
        ));
    }

    async fn send(&self, slug: &str, next: u64, entries: &[LogEntry]) -> bool {
        let batch = Batch {
            node: self.node.to_string(),
            next,
            entries,
        };
        let payload = serde_json::to_vec(&batch).expect("entries serialize");
        let subject = format!("{SUBJECT_PREFIX}.{slug}");
        matches!(
            tokio::time::timeout(KV_TIMEOUT, self.client.publish(subject, payload.into())).await,
            Ok(Ok(()))
        )
    }
}

/// Turns the client's connection events into the link state (and notices).
async fn follow_link(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<async_nats::Event>) {
    use async_nats::Event;
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => inner.link_up(),
            Event::Disconnected => inner.link_down(),
            Event::ClientError(error) => inner.first_connect_failed(&error),
            Event::SlowConsumer(_) => tracing::warn!(
                "this host reads other hosts' entries too slowly; the ones it misses are reported to viewers"
            ),
            other => tracing::debug!("NATS: {other}"),
        }
    }
}

/// Sends queued entries to NATS in batches of at most [`MAX_BATCH`].
async fn send_outbound(inner: Arc<Inner>) {
    loop {
        inner.outbound_ready.notified().await;
        let (pending, markers) = {
            let mut outbound = lock(&inner.outbound);
            outbound.pending_entries = 0;
            let markers = std::mem::take(&mut outbound.markers).then(|| {
                outbound
                    .next_seq
                    .iter()
                    .map(|(slug, next)| (slug.clone(), *next))
                    .collect::<Vec<_>>()
            });
            (std::mem::take(&mut outbound.pending), markers)
        };
        for (slug, entries) in pending {
            for chunk in chunks(&entries) {
                let next = chunk.last().map_or(0, |e| e.seq + 1);
                let count = chunk.len() as u64;
                let counter = if inner.link_is_up() && inner.send(&slug, next, chunk).await {
                    &inner.stats.sent_entries
                } else {
                    &inner.stats.unsent_entries
                };
                counter.fetch_add(count, Ordering::Relaxed);
            }
        }
        for (slug, next) in markers.into_iter().flatten() {
            if inner.watched_elsewhere(&slug) {
                inner.send(&slug, next, &[]).await;
            }
        }
    }
}

/// Splits entries into messages of at most [`MAX_BATCH`] entries and about
/// [`MAX_MESSAGE_BYTES`].
fn chunks(entries: &[LogEntry]) -> impl Iterator<Item = &[LogEntry]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        for entry in rest.iter().take(MAX_BATCH) {
            bytes += entry.message.len() + 256;
            if len > 0 && bytes > MAX_MESSAGE_BYTES {
                break;
            }
            len += 1;
        }
        let (chunk, tail) = rest.split_at(len);
        rest = tail;
        Some(chunk)
    })
}

/// Receives other hosts' entries of `slug` for this host's viewers, while
/// it has any (the task is attached to the slug's hub).
async fn follow_slug(inner: Arc<Inner>, slug: String) {
    let subject = format!("{SUBJECT_PREFIX}.{slug}");
    let mut subscriber = match inner.client.subscribe(subject).await {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!(slug, "cannot follow other hosts' entries: {e}");
            return;
        }
    };
    // Per producer, the `seq` its next entry should have.
    let mut expected: HashMap<String, u64> = HashMap::new();
    while let Some(message) = subscriber.next().await {
        let batch: Batch<Vec<LogEntry>> = match serde_json::from_slice(&message.payload) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(slug, "unreadable entries from the cluster: {e}");
                continue;
            }
        };
        if *batch.node == *inner.node {
            continue;
        }
        let first = batch.entries.first().map_or(batch.next, |e| e.seq);
        let missed = match expected.insert(batch.node, batch.next) {
            Some(expected) if first > expected => first - expected,
            // First news of this producer, or it restarted (seq from 1).
            _ => 0,
        };
        let stats = &inner.stats;
        stats
            .received_entries
            .fetch_add(batch.entries.len() as u64, Ordering::Relaxed);
        stats.missed_entries.fetch_add(missed, Ordering::Relaxed);
        inner.hub.deliver_remote(&slug, batch.entries, missed);
    }
}

/// Keeps this host's claims in the bucket equal to its viewer counts:
/// rewritten when a viewer leaves (so the slot frees at once), renewed a
/// few times per lease, restated when the link comes back.
async fn keep_claims(inner: Arc<Inner>) {
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
async fn watch_interest(inner: Arc<Inner>) {
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

/// A task that stops when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{RequestMeta, Stream};

    #[test]
    fn messages_hold_at_most_100_entries_and_about_half_a_megabyte() {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let small: Vec<LogEntry> = (0..250)
            .map(|_| LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".into()))
            .collect();
        let sizes: Vec<usize> = chunks(&small).map(<[_]>::len).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let big: Vec<LogEntry> = (0..100)
            .map(|_| LogEntry::from_line(meta.clone(), Stream::Stdout, 1, "x".repeat(10_240)))
            .collect();
        let sizes: Vec<usize> = chunks(&big).map(<[_]>::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.len() >= 2 && sizes.iter().all(|&n| n * 10_496 <= MAX_MESSAGE_BYTES));
    }

    #[test]
    fn reconnects_back_off_to_five_seconds() {
        assert!(reconnect_delay(1) < Duration::from_millis(130));
        assert!(reconnect_delay(3) >= Duration::from_millis(400));
        for attempts in [7, 50, usize::MAX] {
            let delay = reconnect_delay(attempts);
            assert!(delay >= Duration::from_secs(5) && delay <= Duration::from_secs(6));
        }
    }

    #[test]
    fn default_node_names_are_valid() {
        let node = default_node_name();
        assert!(ClusterSettings::check_node(&node).is_ok(), "{node}");
        assert!(node.ends_with(&format!("-{}", std::process::id())));
    }
}
