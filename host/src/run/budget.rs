//! The host-wide budget of kept instances: how many instances wait for
//! reuse at once, across tenants (`run::instances` keeps them,
//! `run::shared` holds WASIp3 instances in it, `run::runtime` sizes the
//! instance pool on top of it).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The host-wide count of kept instances and its ceiling.
#[derive(Debug)]
pub(crate) struct Budget {
    kept: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            kept: AtomicUsize::new(0),
            max,
        })
    }

    /// The most instances kept at once, host-wide.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Instances kept right now.
    pub(crate) fn kept(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// A place in the budget, while one is left.
    pub(crate) fn hold(self: &Arc<Self>) -> Option<Held> {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |kept| {
                (kept < self.max).then_some(kept + 1)
            })
            .ok()
            .map(|_| Held(self.clone()))
    }
}

/// One place in the [`Budget`], given back when dropped.
pub(crate) struct Held(Arc<Budget>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.kept.fetch_sub(1, Ordering::AcqRel);
    }
}
