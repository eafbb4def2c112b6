//! One shared instance, as the requests see it: how many it has in flight
//! and has taken, packed in one atomic so that admitting a request and
//! closing the instance cannot race; why it closed, for those waiting.

use super::*;

/// The handle on one shared instance's task.
pub(super) struct Instance {
    pub(super) jobs: mpsc::UnboundedSender<Queued>,
    /// Requests in flight (low 32 bits) and taken in all (high 32), or
    /// [`CLOSED`] once it takes no more.
    pub(super) load: AtomicU64,
    /// Set (with `why`) to stop the instance from outside.
    pub(super) stop: Notify,
    /// Requests it takes in all.
    pub(super) reuse: u32,
    /// Told when it has taken all it takes and served them: its task ends.
    pub(super) spent: Notify,
    /// Why it stopped.
    pub(super) why: OnceLock<String>,
    /// Told once `why` is set.
    pub(super) ended: Notify,
}

pub(super) const CLOSED: u64 = u64::MAX;
pub(super) const ONE_IN_FLIGHT: u64 = 1;
pub(super) const ONE_TAKEN: u64 = 1 << 32;
pub(super) const IN_FLIGHT: u64 = (1 << 32) - 1;

impl Instance {
    /// Takes one more request if it has room: fewer than `concurrent` in
    /// flight and fewer than its `reuse` in all.
    pub(super) fn admit(&self, concurrent: u32) -> bool {
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                let (in_flight, taken) = (load & IN_FLIGHT, load >> 32);
                (load != CLOSED
                    && in_flight < u64::from(concurrent)
                    && taken < u64::from(self.reuse))
                .then(|| load + ONE_IN_FLIGHT + ONE_TAKEN)
            })
            .is_ok()
    }

    /// Requests in flight now (0 when closed).
    pub(super) fn in_flight(&self) -> u64 {
        let load = self.load.load(Ordering::Acquire);
        if load == CLOSED { 0 } else { load & IN_FLIGHT }
    }

    /// One request fewer in flight (none once closed: a closed instance
    /// keeps [`CLOSED`]).
    pub(super) fn served_one(&self) {
        let before = self
            .load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load != CLOSED && load & IN_FLIGHT > 0).then(|| load - ONE_IN_FLIGHT)
            });
        if let Ok(load) = before
            && load & IN_FLIGHT == 1
            && load >> 32 >= u64::from(self.reuse)
        {
            self.spent.notify_one();
        }
    }

    /// Closes it to new requests if none is in flight (nor on its way):
    /// true when closed.
    pub(super) fn close_if_idle(&self) -> bool {
        self.load
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |load| {
                (load & IN_FLIGHT == 0).then_some(CLOSED)
            })
            .is_ok()
            || self.is_closed()
    }

    /// Closes it, whatever is in flight (it is stopping).
    pub(super) fn close_now(&self) {
        self.load.store(CLOSED, Ordering::Release);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.load.load(Ordering::Acquire) == CLOSED
    }

    pub(super) fn spent(&self) -> bool {
        let load = self.load.load(Ordering::Acquire);
        load != CLOSED && load >> 32 >= u64::from(self.reuse)
    }

    /// Why it stopped, once the worker has said.
    pub(super) async fn why(&self) -> String {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(why) = self.why.get() {
                return why.clone();
            }
            ended.await;
        }
    }

    pub(super) fn say_why(&self, why: String) {
        let _ = self.why.set(why);
        self.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(reuse: u32) -> Instance {
        Instance {
            jobs: mpsc::unbounded_channel().0,
            load: AtomicU64::new(0),
            stop: Notify::new(),
            reuse,
            spent: Notify::new(),
            why: OnceLock::new(),
            ended: Notify::new(),
        }
    }

    #[test]
    fn an_instance_takes_what_it_has_room_for_and_closes_only_when_idle() {
        let shared = instance(3);
        // Two at once…
        assert!(shared.admit(2) && shared.admit(2));
        assert!(!shared.admit(2), "a third at once");
        assert!(!shared.close_if_idle(), "closed with requests in flight");
        shared.served_one();
        // …and three in all.
        assert!(shared.admit(2));
        assert!(!shared.admit(2), "a fourth in all");
        assert!(shared.spent());
        shared.served_one();
        assert_eq!(shared.in_flight(), 1);
        shared.served_one();
        assert_eq!(shared.in_flight(), 0);
        assert!(shared.close_if_idle() && shared.is_closed());
        // Closed stays closed: a late body's end changes nothing.
        shared.served_one();
        assert!(shared.is_closed() && !shared.admit(2));
    }

    #[tokio::test]
    async fn a_spent_instance_is_told_when_its_last_request_is_served() {
        let shared = instance(1);
        assert!(shared.admit(4));
        let told = shared.spent.notified();
        shared.served_one();
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .expect("told");
    }

    #[tokio::test]
    async fn a_waiting_request_learns_why_once_it_is_said() {
        let shared = Arc::new(instance(1));
        let waiting = tokio::spawn({
            let shared = shared.clone();
            async move { shared.why().await }
        });
        shared.say_why("because".to_string());
        assert_eq!(waiting.await.unwrap(), "because");
    }
}
