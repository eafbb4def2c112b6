//! Log hubs across hosts, on NATS.
//!
//! When a slug's requests land on several hosts while its viewers are
//! connected to any of them, each host keeps its in-process hubs for its
//! own viewers and NATS carries entries between hosts:
//!
//! ```text
//!  host A: Publisher (node "a", seq) ─┬─► A's hub ─► A's viewers
//!                                     └─► Outbound ─► NATS mctx.logs.{slug}
//!  host B: NATS mctx.logs.{slug} ─► inbound::follow (gaps in A's seq counted) ─► B's hub ─► B's viewers
//! ```
//!
//! - **Who sends.** A host sends a slug's entries only while another host
//!   has viewers of it: it learns that from the viewer-claims bucket,
//!   which it watches (`claims.rs`). No viewer anywhere, no cost anywhere.
//! - **Who receives.** A host follows `mctx.logs.{slug}` while it has
//!   viewers of the slug: the hub asks for it (the [`Remote`] trait) with
//!   the slug's first viewer and stops it with the last (`inbound.rs`).
//! - **Order and loss.** Entries carry their producer's `node` and a `seq`
//!   that counts per producer and slug. The receiver checks each producer's
//!   `seq` for gaps (entries dropped while the link was down, a slow
//!   consumer) and reports them to its viewers as `dropped` frames.
//! - **The viewer limit** is counted over all hosts by compare-and-set on a
//!   JetStream key-value entry per slug (`claims.rs`), with leases
//!   ([`leases`]).
//! - **When NATS is unreachable** the host keeps serving and its viewers
//!   keep getting its own entries; they get a `notice` saying the link is
//!   down (and again when it is back), viewers arriving meanwhile are
//!   admitted against this host's count only and told so. The client
//!   reconnects with backoff (0.1 s doubling to 5 s) forever (`link.rs`).
//! - **Node names** must differ between hosts; two hosts sharing one find
//!   each other and say so (`node_name.rs`).
//!
//! [`Cluster`] is the facade: each part above owns its own state and lock,
//! and only this module wires them to each other and to NATS's events.

mod claims;
mod inbound;
pub(crate) mod leases;
mod link;
mod node_name;
mod outbound;

use crate::base::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::base::config::ClusterSettings;
use crate::logs::entry::LogEntry;
use crate::logs::hub::{Following, LogHub, Remote, Subscription};
use claims::Claims;
use inbound::Inbound;
use leases::ClaimOutcome;
use link::{Change, Link};
use node_name::NodeName;
use outbound::Outbound;

/// Entries of slug `s` travel on `mctx.logs.s`.
pub(crate) const SUBJECT_PREFIX: &str = "mctx.logs";
/// The key-value bucket of viewer claims (one key per slug).
pub(crate) const BUCKET: &str = "mctx-log-viewers";
/// How long one NATS operation (a claim, a publish) may take before the
/// host gives up on it (the claim fails, the entries count as unsent).
const NATS_TIMEOUT: Duration = Duration::from_secs(2);

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

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
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: Arc<str>,
    client: async_nats::Client,
    hub: LogHub,
    link: Link,
    outbound: Outbound,
    inbound: Arc<Inbound>,
    claims: Claims,
    name: NodeName,
}

/// What the cluster decided about a new viewer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    Admitted,
    /// The slug has `max` viewers over all hosts.
    Full {
        max: usize,
    },
    /// The cluster could not be asked; admitted on this host's count, and
    /// told so.
    LocalOnly,
}

/// The key-value bucket `config` names: found, or created by the first
/// host that needs it (hosts racing to create it end up with the same
/// bucket). Used for the viewer claims and, in `crate::deploy`, the
/// server list.
pub(crate) async fn key_value_bucket(
    jetstream: &async_nats::jetstream::Context,
    config: async_nats::jetstream::kv::Config,
) -> Result<async_nats::jetstream::kv::Store> {
    if let Ok(found) = jetstream.get_key_value(&config.bucket).await {
        return Ok(found);
    }
    let bucket = config.bucket.clone();
    match jetstream.create_key_value(config).await {
        Ok(created) => Ok(created),
        // Another host may have created it meanwhile.
        Err(create) => jetstream.get_key_value(&bucket).await.map_err(|_| {
            anyhow::anyhow!(
                "cannot create the key-value bucket {bucket:?} (is JetStream enabled: nats-server -js?): {create}"
            )
        }),
    }
}

/// This host's default node name: `{hostname}-{pid}`, unique per process.
pub(crate) fn default_node_name() -> String {
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

/// How this host proves itself to NATS and checks the server: a
/// credentials file or a token (each readable by this user only), and TLS
/// roots and a client certificate. The files are read now, so a wrong path
/// stops the host at start rather than at the first reconnect.
async fn credentials(settings: &ClusterSettings) -> Result<async_nats::ConnectOptions> {
    use crate::base::private::check_secret_file;
    let secret = |path: &std::path::Path, what: &str| {
        check_secret_file(path).map_err(|e| anyhow::anyhow!("[cluster] {what}: {e}"))
    };
    let mut options = async_nats::ConnectOptions::new();
    // The NATS client reads a URL's userinfo but never sends it.
    match settings.nats_url.userinfo() {
        Some(crate::base::config::Userinfo::UserPassword(user, password)) => {
            options = options.user_and_password(user, password);
        }
        Some(crate::base::config::Userinfo::Token(token)) => options = options.token(token),
        None => {}
    }
    if let Some(path) = &settings.nats_creds {
        secret(path, "nats_creds")?;
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("[cluster] nats_creds {}", path.display()))?;
    }
    if let Some(path) = &settings.nats_token_file {
        secret(path, "nats_token_file")?;
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("[cluster] nats_token_file {}", path.display()))?;
        options = options.token(token.trim().to_string());
    }
    if let Some(path) = &settings.nats_tls_ca {
        anyhow::ensure!(
            path.is_file(),
            "[cluster] nats_tls_ca {}: no such file",
            path.display()
        );
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&settings.nats_tls_cert, &settings.nats_tls_key) {
        secret(key, "nats_tls_key")?;
        anyhow::ensure!(
            cert.is_file(),
            "[cluster] nats_tls_cert {}: no such file",
            cert.display()
        );
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

impl Cluster {
    /// Connects to NATS (in the background: an unreachable server does not
    /// stop the host, it is retried), attaches to `hub` and starts the
    /// tasks that move entries and claims. Fails only on settings that can
    /// never work.
    pub(crate) async fn start(settings: &ClusterSettings, hub: LogHub) -> Result<Cluster> {
        let node = settings.node.clone().unwrap_or_else(default_node_name);
        ClusterSettings::check_node(&node).map_err(|e| anyhow::anyhow!("--node: {e}"))?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = credentials(settings)
            .await?
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
            .connect(settings.nats_url.expose())
            .await
            .with_context(|| format!("[cluster] nats_url {}", settings.nats_url))?;
        let node: Arc<str> = node.into();
        let inner = Arc::new(Inner {
            node: node.clone(),
            link: Link::new(&settings.nats_url.shown()),
            outbound: Outbound::default(),
            inbound: Arc::default(),
            claims: Claims::new(
                client.clone(),
                node.clone(),
                settings.viewer_lease(),
                hub.clone(),
            ),
            name: NodeName::new(node.clone()),
            client,
            hub,
        });
        let questions = inner
            .name
            .listen(&inner.client)
            .await
            .context("subscribing to this host's node name")?;
        let as_remote: Arc<dyn Remote> = inner.clone();
        inner.hub.connect_remote(Arc::downgrade(&as_remote));
        // Each part's loop, every one in the cluster's span.
        let span = tracing::info_span!("cluster", node = %node);
        let [a, b, c, d, e] = std::array::from_fn(|_| inner.clone());
        let tasks: [BoxFuture; 5] = [
            Box::pin(async move { a.name.answer(&a.client, &a.hub, questions).await }),
            Box::pin(follow_link(b, events)),
            Box::pin(async move { c.outbound.run(&c.client, &c.node, &c.link, &c.claims).await }),
            Box::pin(async move { d.claims.keep(&d.link).await }),
            Box::pin(async move { e.claims.watch_interest(&e.link).await }),
        ];
        for task in tasks {
            tokio::spawn(task.instrument(span.clone()));
        }
        Ok(Cluster { inner })
    }

    pub(crate) fn node(&self) -> &str {
        &self.inner.node
    }

    /// The NATS connection, for the cluster's other shared state (the
    /// deployments, `crate::deploy`).
    pub(crate) fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// The node name as entries carry it.
    pub(crate) fn node_name(&self) -> Arc<str> {
        self.inner.node.clone()
    }

    /// Whether another host has viewers of `slug` right now.
    pub(crate) fn watched_elsewhere(&self, slug: &str) -> bool {
        self.inner.claims.watched_elsewhere(slug)
    }

    /// Sends numbered entries of `slug` to the hosts that watch it.
    pub(crate) fn send(&self, slug: &str, entries: Vec<LogEntry>) {
        self.inner.outbound.push(slug, entries);
    }

    /// Decides whether a viewer that this host just subscribed may stay,
    /// counting every host's viewers.
    pub(crate) async fn admit(&self, subscription: &Subscription, max: usize) -> Admission {
        let inner = &self.inner;
        let slug = subscription.slug();
        inner.link.settle(NATS_TIMEOUT).await;
        if !inner.link.is_up() {
            subscription.notice(&format!(
                "the cluster link (NATS at {}) is down: you see this host's entries only, and this viewer was \
                 counted against this host's viewers only",
                inner.link.nats_url()
            ));
            return Admission::LocalOnly;
        }
        match inner.claims.admit(slug, max).await {
            Ok(ClaimOutcome::Held { .. }) => Admission::Admitted,
            Ok(ClaimOutcome::Full { max, .. }) => Admission::Full { max },
            Err(e) => {
                tracing::warn!(slug, "cannot count this viewer cluster-wide: {e:#}");
                subscription.notice(&format!(
                    "this viewer could not be counted across the cluster ({e:#}); it was counted against \
                     this host's viewers only"
                ));
                Admission::LocalOnly
            }
        }
    }

    /// Gives this host's viewer slots back (shutdown), so that other hosts
    /// need not wait for the leases to run out.
    pub(crate) async fn leave(&self) {
        let inner = &self.inner;
        if !inner.link.is_up() {
            return;
        }
        inner.claims.release_all().await;
        let _ = tokio::time::timeout(NATS_TIMEOUT, inner.client.flush()).await;
    }

    /// The link and its counters, for the metrics.
    pub(crate) fn sample(&self) -> crate::base::metrics::ClusterSample {
        let inner = &self.inner;
        crate::base::metrics::ClusterSample {
            up: inner.link.is_up(),
            sent: inner.outbound.sent(),
            unsent: inner.outbound.unsent(),
            received: inner.inbound.received(),
            missed: inner.inbound.missed(),
        }
    }

    /// The link's state for `/healthz`.
    pub(crate) fn status(&self) -> serde_json::Value {
        let inner = &self.inner;
        serde_json::json!({
            "node": &*inner.node,
            "nats": inner.link.nats_url(),
            "link": inner.link.describe(),
            "watchedElsewhere": inner.claims.watched_slugs(),
            "sentEntries": inner.outbound.sent(),
            "unsentEntries": inner.outbound.unsent(),
            "receivedEntries": inner.inbound.received(),
            "missedEntries": inner.inbound.missed(),
            "nodeNameSharedWith": inner.name.shared_with(),
        })
    }
}

impl Remote for Inner {
    fn follow(&self, slug: &str) -> Following {
        let task = inbound::follow(
            self.inbound.clone(),
            self.client.clone(),
            self.node.clone(),
            self.hub.clone(),
            slug.to_string(),
        );
        let span = tracing::info_span!("follow", node = %self.node, slug);
        Following::task(tokio::spawn(task.instrument(span)))
    }

    fn viewers_changed(&self) {
        self.claims.viewers_changed();
    }
}

/// Turns the client's connection events into the link state, and tells
/// the other parts and the viewers what changed.
async fn follow_link(inner: Arc<Inner>, mut events: mpsc::UnboundedReceiver<async_nats::Event>) {
    use async_nats::Event;
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => {
                match inner.link.up() {
                    Change::Unchanged => continue,
                    Change::Joined => {}
                    Change::Back { after } => inner.hub.notice_all(&format!(
                        "the cluster link is back after {:.1} s: entries from other hosts flow again; \
                         those they produced meanwhile are reported as dropped",
                        after.as_secs_f64()
                    )),
                }
                inner.outbound.send_markers();
                inner.claims.renew_all();
                let asking = inner.clone();
                tokio::spawn(
                    async move { asking.name.ask(&asking.client, &asking.hub).await }
                        .in_current_span(),
                );
            }
            Event::Disconnected => {
                if inner.link.down() {
                    inner.hub.notice_all(&format!(
                        "lost the cluster link (NATS at {}): you see this host's entries only until it is back; reconnecting",
                        inner.link.nats_url()
                    ));
                }
            }
            Event::ClientError(error) => inner.link.first_connect_failed(&error),
            Event::SlowConsumer(_) => tracing::warn!(
                "this host reads other hosts' entries too slowly; the ones it misses are reported to viewers"
            ),
            other => tracing::debug!("NATS: {other}"),
        }
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
