//! One node name, one host.
//!
//! Node names are given by hand (`--node`, `[cluster] node`), so a copied
//! config easily gives two hosts the same one. Everything keyed by the name
//! then goes wrong without an error: receivers mix two producers' `seq`
//! counters and report gaps that are not there, and each host overwrites
//! the other's viewer claim. So every host answers on `mctx.nodes.{node}`
//! and asks there each time it connects: an answer, or a question from
//! another process, means the name is shared.
//!
//! Both hosts then say so, in their log, in `/healthz` and to their
//! viewers, and keep serving: stopping either would turn a mislabelled log
//! stream into an outage of its tenants.

use std::sync::Mutex;

use async_nats::{RequestErrorKind, Subscriber};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{NATS_TIMEOUT, hostname, lock};
use crate::logs::hub::LogHub;

/// Host `n` answers on `mctx.nodes.n`.
const SUBJECT_PREFIX: &str = "mctx.nodes";

/// This host's name and whether another process was found using it.
pub(super) struct NodeName {
    node: std::sync::Arc<str>,
    /// Random per process: tells this host from another with its node name.
    instance: u64,
    /// `{hostname} pid {pid}`, for messages about this host.
    process: String,
    /// Another process found using this host's node name; kept after that
    /// process leaves, since entries may be mislabelled by then.
    shared_with: Mutex<Option<String>>,
}

/// What a host says of itself, asking or answering.
#[derive(Serialize, Deserialize)]
struct Hello {
    /// Random per process: tells another process from this one.
    instance: u64,
    /// Where it runs, for the error message (`{hostname} pid {pid}`).
    process: String,
}

impl NodeName {
    pub(super) fn new(node: std::sync::Arc<str>) -> Self {
        NodeName {
            node,
            instance: fastrand::u64(..),
            process: format!("{} pid {}", hostname(), std::process::id()),
            shared_with: Mutex::default(),
        }
    }

    /// The other process found using this host's name, if any.
    pub(super) fn shared_with(&self) -> Option<String> {
        lock(&self.shared_with).clone()
    }

    fn subject(&self) -> String {
        format!("{SUBJECT_PREFIX}.{}", self.node)
    }

    fn hello(&self) -> Vec<u8> {
        serde_json::to_vec(&Hello {
            instance: self.instance,
            process: self.process.clone(),
        })
        .expect("a hello serializes")
    }

    /// Records that another process uses this host's node name (once: the
    /// first one found is the one reported), and tells the viewers.
    fn found(&self, other: &str, hub: &LogHub) {
        let mut shared = lock(&self.shared_with);
        if shared.is_some() {
            return;
        }
        *shared = Some(other.to_string());
        drop(shared);
        tracing::error!(
            node = %self.node,
            "another host ({other}) uses this host's node name: give each host its own --node, \
             or leave it unset for a unique default"
        );
        hub.notice_all(&format!(
            "two hosts use the node name {:?} (this one, {}, and {other}): entries from them may be \
             reported as dropped when none were, and the viewer limit may be miscounted",
            &*self.node, self.process
        ));
    }

    /// Subscribes to this host's node subject. Done before the first
    /// connection, so that the subscription is in place before this host
    /// asks (two hosts starting at once each see the other's question or
    /// answer).
    pub(super) async fn listen(&self, client: &async_nats::Client) -> anyhow::Result<Subscriber> {
        Ok(client.subscribe(self.subject()).await?)
    }

    /// Answers other hosts' questions on this host's node subject (each
    /// question comes from a host with this node name).
    pub(super) async fn answer(
        &self,
        client: &async_nats::Client,
        hub: &LogHub,
        mut questions: Subscriber,
    ) {
        while let Some(question) = questions.next().await {
            let Ok(asker) = serde_json::from_slice::<Hello>(&question.payload) else {
                continue;
            };
            if asker.instance == self.instance {
                continue;
            }
            self.found(&asker.process, hub);
            if let Some(reply) = question.reply {
                let _ = client.publish(reply, self.hello().into()).await;
            }
        }
    }

    /// Asks whether another host already uses this host's node name (run at
    /// each connection: the other host may have joined while the link was
    /// down).
    pub(super) async fn ask(&self, client: &async_nats::Client, hub: &LogHub) {
        let question = client.request(self.subject(), self.hello().into());
        match tokio::time::timeout(NATS_TIMEOUT, question).await {
            Ok(Ok(answer)) => match serde_json::from_slice::<Hello>(&answer.payload) {
                Ok(other) if other.instance != self.instance => self.found(&other.process, hub),
                _ => {}
            },
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {}
            Ok(Err(e)) => tracing::debug!("could not check that the node name is unique: {e}"),
            Err(_) => tracing::debug!("could not check that the node name is unique: timed out"),
        }
    }
}
