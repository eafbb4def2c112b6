//! The NATS connection's state as the rest of the host sees it: starting,
//! up, or down since when. Viewers are told when it changes (by the
//! facade), `/healthz` shows it, and the other parts ask it before they
//! talk to NATS.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::lock;

pub(super) struct Link {
    nats_url: String,
    state: Mutex<State>,
    /// Counts connections: watchers restart on each.
    connections: watch::Sender<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not connected yet since the host started.
    Connecting,
    Up,
    Down {
        since: Instant,
    },
}

/// What a successful connection changed.
pub(super) enum Change {
    /// The first connection since the host started.
    Joined,
    /// The link is back after being down this long.
    Back { after: Duration },
    /// It was up already.
    Unchanged,
}

impl Link {
    pub(super) fn new(nats_url: &str) -> Self {
        Link {
            nats_url: nats_url.to_string(),
            state: Mutex::new(State::Connecting),
            connections: watch::Sender::new(0),
        }
    }

    pub(super) fn nats_url(&self) -> &str {
        &self.nats_url
    }

    pub(super) fn is_up(&self) -> bool {
        *lock(&self.state) == State::Up
    }

    /// Waits, at most `patience`, for the first connection if the host has
    /// just started and not tried yet: a viewer arriving then should be
    /// counted cluster-wide rather than locally.
    pub(super) async fn settle(&self, patience: Duration) {
        if *lock(&self.state) == State::Connecting {
            let mut connections = self.connections.subscribe();
            let _ = tokio::time::timeout(patience, connections.wait_for(|n| *n > 0)).await;
        }
    }

    /// A connection succeeded.
    pub(super) fn up(&self) -> Change {
        let before = std::mem::replace(&mut *lock(&self.state), State::Up);
        let change = match before {
            State::Up => return Change::Unchanged,
            State::Connecting => {
                tracing::info!(nats = %self.nats_url, "joined the cluster");
                Change::Joined
            }
            State::Down { since } => {
                let after = since.elapsed();
                tracing::info!(nats = %self.nats_url, "cluster link back after {:.1} s", after.as_secs_f64());
                Change::Back { after }
            }
        };
        self.connections.send_modify(|n| *n += 1);
        change
    }

    /// The connection dropped; true if it was up (viewers should hear).
    pub(super) fn down(&self) -> bool {
        let mut state = lock(&self.state);
        if *state != State::Up {
            return false;
        }
        *state = State::Down {
            since: Instant::now(),
        };
        drop(state);
        tracing::warn!(nats = %self.nats_url, "lost the cluster link; reconnecting");
        true
    }

    /// A connection attempt failed before the first one succeeded: the
    /// link is down (viewers need not wait for it), not merely starting.
    pub(super) fn first_connect_failed(&self, error: &async_nats::ClientError) {
        let mut state = lock(&self.state);
        if *state == State::Connecting {
            *state = State::Down {
                since: Instant::now(),
            };
            drop(state);
            tracing::warn!(
                nats = %self.nats_url,
                "cannot reach NATS ({error}); serving without the cluster and retrying"
            );
        }
    }

    /// Changes with every connection (for tasks that restart on each).
    pub(super) fn connections(&self) -> watch::Receiver<u64> {
        self.connections.subscribe()
    }

    /// `connecting`, `up` or `down for N s`.
    pub(super) fn describe(&self) -> String {
        match *lock(&self.state) {
            State::Connecting => "connecting".to_string(),
            State::Up => "up".to_string(),
            State::Down { since } => format!("down for {} s", since.elapsed().as_secs()),
        }
    }
}
