//! Other hosts, as the hubs see them: on a cluster, something that follows
//! a slug's entries elsewhere for exactly as long as the slug has a hub
//! here, and hears when viewer counts change (for the cluster-wide limit).
//! The hubs know nothing else of NATS.

/// Other hosts, as the hubs see them (the cluster).
pub(crate) trait Remote: Send + Sync {
    /// Starts bringing other hosts' entries of `slug` into this hub (through
    /// [`LogHub::deliver`]); called when the slug gets its first viewer
    /// here, and stopped by dropping the result with its last.
    fn follow(&self, slug: &str) -> Following;
    /// A viewer arrived or left, of any slug.
    fn viewers_changed(&self);
}

/// A task that follows a slug's entries on other hosts; dropping it stops it.
pub(crate) struct Following(tokio::task::AbortHandle);

impl Following {
    pub(crate) fn task(task: tokio::task::JoinHandle<()>) -> Self {
        Following(task.abort_handle())
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::logs::filter::Filter;
    use crate::logs::hub::lock;
    use crate::logs::hub::tests::hub;

    /// A remote that records what the hub tells it. Each follower holds a
    /// sender whose receiver learns when the follower is gone.
    #[derive(Default)]
    struct Recording {
        followed: Mutex<Vec<(String, tokio::sync::oneshot::Receiver<()>)>>,
        changes: AtomicUsize,
    }

    impl Remote for Recording {
        fn follow(&self, slug: &str) -> Following {
            let (alive, gone) = tokio::sync::oneshot::channel::<()>();
            lock(&self.followed).push((slug.to_string(), gone));
            Following::task(tokio::spawn(async move {
                let _alive = alive;
                std::future::pending::<()>().await
            }))
        }

        fn viewers_changed(&self) {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_remote_follows_a_slug_exactly_as_long_as_its_hub() {
        let hub = hub();
        let remote = Arc::new(Recording::default());
        let as_remote: Arc<dyn Remote> = remote.clone();
        hub.connect_remote(Arc::downgrade(&as_remote));
        let first = hub.subscribe("s", Filter::default()).unwrap();
        let second = hub.subscribe("s", Filter::default()).unwrap();
        let (slug, mut gone) = lock(&remote.followed).pop().unwrap();
        assert_eq!(slug, "s");
        assert!(lock(&remote.followed).is_empty(), "followed once");
        drop(first);
        assert_eq!(
            gone.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty),
            "the hub still has a viewer"
        );
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the follower stops with the last viewer")
            .unwrap_err();
        assert_eq!(remote.changes.load(Ordering::Relaxed), 4);
    }
}
