//! One shared instance, as the requests see it: how many it has in flight
//! and has taken, packed in one atomic so that admitting a request and
//! closing the instance cannot race; why it closed, for those waiting.

use super::Queued;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{Notify, mpsc};

/// The handle on one shared instance's task.
pub(super) struct Instance {
    jobs: mpsc::UnboundedSender<Queued>,
    /// Requests in flight (low 32 bits) and taken in all (high 32), or
    /// [`CLOSED`] once it takes no more.
    load: AtomicU64,
    /// Told (after `why` is set) to stop the instance from outside.
    stopping: Notify,
    /// Requests it takes in all.
    reuse: u32,
    /// Told when it has taken all it takes and served them: its task ends.
    spent: Notify,
    /// Why it stopped.
    why: OnceLock<String>,
    /// Told once `why` is set.
    ended: Notify,
}

const CLOSED: u64 = u64::MAX;
const ONE_IN_FLIGHT: u64 = 1;
const ONE_TAKEN: u64 = 1 << 32;
const IN_FLIGHT: u64 = (1 << 32) - 1;

impl Instance {
    /// An instance that has taken its first request and takes `reuse` in
    /// all; what it is handed arrives on the receiver, for its task.
    pub(super) fn new(reuse: u32) -> (Instance, mpsc::UnboundedReceiver<Queued>) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let instance = Instance {
            jobs,
            load: AtomicU64::new(ONE_IN_FLIGHT + ONE_TAKEN),
            stopping: Notify::new(),
            reuse,
            spent: Notify::new(),
            why: OnceLock::new(),
            ended: Notify::new(),
        };
        (instance, receiver)
    }

    /// Hands it a request it has [admitted](Self::admit); gives the request
    /// back if its task has ended.
    pub(super) fn send(&self, queued: Queued) -> Option<Queued> {
        self.jobs
            .send(queued)
            .err()
            .map(|mpsc::error::SendError(back)| back)
    }

    /// Stops it from outside, saying why to every request waiting on it.
    pub(super) fn stop(&self, why: String) {
        self.say_why(why);
        self.stopping.notify_one();
    }

    /// Resolves once it is [stopped](Self::stop) from outside.
    pub(super) async fn stopped(&self) {
        self.stopping.notified().await;
    }

    /// Resolves when it has taken all it takes and served them.
    pub(super) async fn until_spent(&self) {
        self.spent.notified().await;
    }

    /// Whether the reason it stopped is known yet.
    pub(super) fn has_said_why(&self) -> bool {
        self.why.get().is_some()
    }

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
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn instance(reuse: u32) -> Instance {
        Instance {
            jobs: mpsc::unbounded_channel().0,
            load: AtomicU64::new(0),
            stopping: Notify::new(),
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
