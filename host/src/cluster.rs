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
//!   (`bucket.rs`), which it watches. No viewer anywhere, no cost anywhere.
//! - **Who receives.** A host subscribes to `mctx.logs.{slug}` while it has
//!   viewers of the slug (the subscription is attached to the slug's hub and
//!   goes with its last viewer).
//! - **Order and loss.** Entries carry their producer's `node` and a `seq`
//!   that counts per producer and slug. The receiver checks each producer's
//!   `seq` for gaps (entries dropped while the link was down, a slow
//!   consumer) and reports them to its viewers as `dropped` frames.
//! - **The viewer limit** is counted over all hosts by compare-and-set on a
//!   JetStream key-value entry per slug (`bucket.rs`), with leases
//!   ([`leases`]).
//!
//! - **When NATS is unreachable** the host keeps serving and its viewers
//!   keep getting its own entries; they get a `notice` saying the link is
//!   down (and again when it is back), viewers arriving meanwhile are
//!   admitted against this host's count only and told so. The client
//!   reconnects with backoff (0.1 s doubling to 5 s) forever.
//! - **Node names** must differ between hosts; two hosts sharing one find
//!   each other and say so (`node_name.rs`).
//!
//! This module owns the link (connection state, notices) and the public
//! face ([`Cluster`]); `transport.rs` moves entries, `bucket.rs` moves
//! claims, `node_name.rs` checks that this host's name is its own.

mod bucket;
pub mod leases;
mod node_name;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use async_nats::jetstream::kv;
use tokio::sync::{Notify, mpsc, watch};

use crate::capture::LogSink;
use crate::config::ClusterSettings;
use crate::entry::{LogEntry, now_ms};
use crate::hub::{LogHub, Subscription};
use bucket::{keep_claims, watch_interest};
use leases::ClaimOutcome;
use transport::{follow_slug, send_outbound};

/// Entries of slug `s` travel on `mctx.logs.s`.
pub const SUBJECT_PREFIX: &str = "mctx.logs";
/// The key-value bucket of viewer claims (one key per slug).
pub const BUCKET: &str = "mctx-log-viewers";
/// How long one NATS operation (a claim, a publish) may take before the
/// host gives up on it (the claim fails, the entries count as unsent).
const NATS_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries waiting to go to NATS; past this the newest are dropped (their
/// `seq` numbers are skipped, so the receivers report them).
const MAX_OUTBOUND_ENTRIES: usize = 100_000;

/// This host's link to the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<str>,
    /// Random per process: tells this host from another with its node name.
    instance: u64,
    /// `{hostname} pid {pid}`, for messages about this host.
    process: String,
    /// Another process found using this host's node name (`node_name.rs`);
    /// kept after that process leaves, since entries may be mislabelled by then.
    node_name_shared_with: Mutex<Option<String>>,
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
    format!("{}-{}", hostname(), std::process::id())
}

/// The machine's name, cut to 48 of the characters a node name may hold.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname
    // NUL-terminates within it (or truncates, which we handle below).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "host".to_string();
    }
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
                instance: fastrand::u64(..),
                process: format!("{} pid {}", hostname(), std::process::id()),
                node_name_shared_with: Mutex::default(),
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
        let questions = node_name::listen(inner)
            .await
            .context("subscribing to this host's node name")?;
        tokio::spawn(node_name::answer(inner.clone(), questions));
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
            let _ = tokio::time::timeout(NATS_TIMEOUT, connections.wait_for(|n| *n > 0)).await;
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
        let _ = tokio::time::timeout(NATS_TIMEOUT, inner.client.flush()).await;
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
            "nodeNameSharedWith": lock(&inner.node_name_shared_with).clone(),
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
            let total = entries.len();
            // Copied only when this host's viewers need them too.
            let sent: Vec<LogEntry> = if local {
                entries.iter().take(room).cloned().collect()
            } else {
                let mut sent = std::mem::take(&mut entries);
                sent.truncate(room);
                sent
            };
            let unsent = total - sent.len();
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
        lock(&self.interest)
            .get(slug)
            .is_some_and(|until| *until > now_ms())
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
}

/// Turns the client's connection events into the link state (and notices).
async fn follow_link(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<async_nats::Event>) {
    use async_nats::Event;
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                inner.link_up();
                tokio::spawn(node_name::ask(inner.clone()));
            }
            Event::Disconnected => inner.link_down(),
            Event::ClientError(error) => inner.first_connect_failed(&error),
            Event::SlowConsumer(_) => tracing::warn!(
                "this host reads other hosts' entries too slowly; the ones it misses are reported to viewers"
            ),
            other => tracing::debug!("NATS: {other}"),
        }
    }
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
