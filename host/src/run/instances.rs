//! Instances kept for reuse (`instance_reuse = N`, `wasmtime serve
//! --max-instance-reuse-count N`): a tenant version's instance that served
//! a request well serves the next one instead of a fresh one, up to N
//! requests, one at a time, and is dropped after waiting
//! `idle_instance_timeout_ms` for one.
//!
//! What keeps it safe:
//! - a pool belongs to one [`Deployment`](crate::run::tenants::Deployment)
//!   (one tenant, one version): an instance never serves another tenant or
//!   version, and a deploy or reload starts the tenant's new snapshot with
//!   empty pools;
//! - only an instance whose request ended `ok` comes back: a trap, a limit,
//!   a cancelled or disconnected request drops it (the dispatcher decides);
//! - one request at a time: an instance is either in the pool or owned by
//!   the one request it serves, so every byte it writes is that request's;
//! - kept instances are few: at most [`Budget::max`](crate::run::budget::Budget::max) host-wide (the
//!   instance pool is sized for them on top of the requests in flight),
//!   and at most a tenant's own concurrency in its pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use crate::run::budget::{Budget, Held};
use crate::run::runtime::Guest;
use crate::run::state::RequestState;

/// An instance between requests.
pub(crate) struct Warm {
    pub(crate) store: Store<RequestState>,
    pub(crate) guest: Guest,
    /// Requests it has served.
    pub(crate) served: u32,
    idle_since: Instant,
    /// Counted in the host's budget while it exists.
    _held: Held,
}

/// One tenant version's kept instances, most recently used last.
#[derive(Default)]
pub(crate) struct InstancePool {
    idle: Mutex<Vec<Warm>>,
}

impl InstancePool {
    /// A kept instance that has not waited longer than `idle` (the most
    /// recently used: its memory is the warmest); expired ones are dropped.
    pub(crate) fn take(&self, idle: Duration) -> Option<Warm> {
        let (expired, warm) = {
            let mut kept = self.lock();
            (expire(&mut kept, idle), kept.pop())
        };
        drop(expired); // outside the lock: freeing an instance resets memory
        warm
    }

    /// Keeps an instance that served `served` requests, unless it has
    /// served `reuse` already, the pool holds `max_idle`, or the host's
    /// budget is spent: then it is dropped.
    pub(crate) fn put(
        &self,
        budget: &Arc<Budget>,
        store: Store<RequestState>,
        guest: Guest,
        served: u32,
        reuse: u32,
        max_idle: usize,
    ) {
        if served >= reuse {
            return;
        }
        let Some(held) = budget.hold() else {
            return;
        };
        let mut kept = self.lock();
        if kept.len() >= max_idle {
            return;
        }
        kept.push(Warm {
            store,
            guest,
            served,
            idle_since: Instant::now(),
            _held: held,
        });
    }

    /// Drops every instance that has waited longer than `idle`.
    pub(crate) fn sweep(&self, idle: Duration) {
        let expired = expire(&mut self.lock(), idle);
        drop(expired);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        crate::base::sync::lock(&self.idle)
    }
}

/// Takes out the instances (oldest first) that have waited longer than
/// `idle`, for the caller to drop once the pool's lock is released.
fn expire(kept: &mut Vec<Warm>, idle: Duration) -> Vec<Warm> {
    let now = Instant::now();
    let fresh_from = kept.partition_point(|w| now.duration_since(w.idle_since) > idle);
    kept.drain(..fresh_from).collect()
}
