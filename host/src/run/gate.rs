//! A tenant's share of the host: at most `max_concurrent` of its requests
//! run at once, at most `max_queued` more wait for a slot, and the rest are
//! turned away at once, so one tenant flooded with slow requests cannot
//! take the instance pool (or a queue position) from the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// One tenant's slots and queue.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    waiting: AtomicUsize,
    max_queued: usize,
}

/// Why a request did not get a slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The tenant's slots and its queue are full.
    Full {
        max_concurrent: usize,
        max_queued: usize,
    },
    /// The request's deadline passed while it waited.
    Waited,
}

impl Gate {
    pub(crate) fn new(max_concurrent: usize, max_queued: usize) -> Self {
        Gate {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            waiting: AtomicUsize::new(0),
            max_queued,
        }
    }

    pub(crate) fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// A slot, now or after waiting in the queue until `deadline`.
    pub(crate) async fn enter(&self, deadline: Instant) -> Result<OwnedSemaphorePermit, Closed> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Closed::Full {
                max_concurrent: self.max_concurrent,
                max_queued: self.max_queued,
            });
        }
        // Leaves the queue however the wait ends (a client gone included).
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _queued = Queued(&self.waiting);
        match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Closed::Waited),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn past_its_slots_and_queue_a_tenant_is_turned_away_at_once() {
        let gate = Gate::new(1, 1);
        let later = Instant::now() + Duration::from_secs(60);
        let running = gate.enter(later).await.unwrap();
        let gate = Arc::new(gate);
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.enter(later).await.map(drop) })
        };
        // The waiter is in the queue once `waiting` says so.
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            gate.enter(later).await.err(),
            Some(Closed::Full {
                max_concurrent: 1,
                max_queued: 1
            })
        );
        drop(running);
        waiter
            .await
            .unwrap()
            .expect("the queued request gets the slot");
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_deadline() {
        let gate = Gate::new(1, 5);
        let _running = gate
            .enter(Instant::now() + Duration::from_secs(60))
            .await
            .unwrap();
        let soon = Instant::now() + Duration::from_millis(10);
        assert_eq!(gate.enter(soon).await.err(), Some(Closed::Waited));
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0, "left the queue");
    }
}
