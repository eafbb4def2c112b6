//! Per-request resource limits: CPU time and linear memory.
//!
//! **What "CPU time" means here.** Wasmtime's epoch interruption fires on
//! wall-clock ticks, and time a guest spends waiting on I/O (a sleep, a slow
//! client, an outgoing request) advances epochs too. Counting ticks would
//! charge a guest for waiting, which the contract's "CPU time limit" does not
//! do. So instead [`Metered`] measures the time the polling thread spends
//! inside the request's future (the guest and the host calls it makes), and
//! the epoch callback, which runs on every tick while guest code runs,
//! compares that total with the limit. A spinning guest is stopped within
//! one tick of its limit; a guest that sleeps for a minute is not charged
//! for the minute.
//!
//! **How it is measured, cheaply.** A poll is timed with the monotonic
//! clock (a vDSO read, no system call). Only a poll that lasts into an
//! epoch tick — a guest computing for milliseconds, the only kind a limit
//! can stop — switches to the thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`,
//! a system call) from that tick on, so that a busy machine, where the OS
//! gives the core to someone else mid-poll, does not make a long-running
//! guest look more expensive than it is. The short polls of an ordinary
//! request (microseconds, rarely preempted) cost two clock reads and no
//! system call; measured, the thread CPU clock around every poll cost
//! 4-5 % of a reused instance's throughput.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

/// `mb` MiB in bytes, saturating (a limit that large means "no limit").
pub(crate) fn mib(mb: u64) -> usize {
    usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
}

/// What one request of a tenant may use: the tenant's own limits, else
/// `[host]`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) cpu: Duration,
    pub(crate) memory_bytes: usize,
    /// Wall-clock time, from arrival to the guest's end.
    pub(crate) wall: Duration,
    /// The request body's size.
    pub(crate) body_bytes: u64,
    /// Requests one instance serves before it is dropped (1: a fresh
    /// instance each).
    pub(crate) reuse: u32,
    /// Requests one WASIp3 instance serves at once (1: one at a time;
    /// `run::shared` when more).
    pub(crate) concurrent_reuse: u32,
    /// How long an instance kept for reuse waits for a request.
    pub(crate) idle: Duration,
}

/// CPU time and limit flags of one request, shared between the task running
/// the guest, the store's epoch callback and the dispatcher.
#[derive(Debug)]
pub(crate) struct RequestMeter {
    started: Instant,
    cpu_limit: Duration,
    wall_limit: Duration,
    /// CPU nanoseconds spent polling, excluding the poll in progress.
    cpu_ns: AtomicU64,
    /// When the poll in progress began (ns after `started`), or
    /// `NOT_POLLING`.
    poll_began_ns: AtomicU64,
    /// In a poll that reached an epoch tick: when it switched to the thread
    /// CPU clock (ns after `started`), else `NOT_POLLING`.
    switched_at_ns: AtomicU64,
    /// The thread's CPU clock at that switch.
    switched_cpu_ns: AtomicU64,
    cpu_exceeded: AtomicBool,
    memory_exceeded: AtomicBool,
    wall_exceeded: AtomicBool,
}

const NOT_POLLING: u64 = u64::MAX;

impl RequestMeter {
    pub(crate) fn new(cpu_limit: Duration, wall_limit: Duration) -> Self {
        RequestMeter {
            started: Instant::now(),
            cpu_limit,
            wall_limit,
            cpu_ns: AtomicU64::new(0),
            poll_began_ns: AtomicU64::new(NOT_POLLING),
            switched_at_ns: AtomicU64::new(NOT_POLLING),
            switched_cpu_ns: AtomicU64::new(0),
            cpu_exceeded: AtomicBool::new(false),
            memory_exceeded: AtomicBool::new(false),
            wall_exceeded: AtomicBool::new(false),
        }
    }

    /// CPU time of the calling thread, in ns.
    fn thread_cpu_ns() -> u64 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec; the clock id is a
        // constant every Linux supports.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0;
        if ok {
            now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
        } else {
            0
        }
    }

    /// Monotonic ns since the request began.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Time charged for the poll in progress so far (0 when none is):
    /// monotonic time, and thread CPU time after a switch.
    fn in_poll_ns(&self) -> u64 {
        let began = self.poll_began_ns.load(Ordering::Relaxed);
        if began == NOT_POLLING {
            return 0;
        }
        match self.switched_at_ns.load(Ordering::Relaxed) {
            NOT_POLLING => self.now_ns().saturating_sub(began),
            switched => {
                switched.saturating_sub(began)
                    + Self::thread_cpu_ns()
                        .saturating_sub(self.switched_cpu_ns.load(Ordering::Relaxed))
            }
        }
    }

    /// CPU time used so far, including the poll in progress. Only the
    /// polling thread (where the epoch callback runs) sees a poll in
    /// progress; elsewhere (reports) there is none.
    pub(crate) fn cpu_used(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed) + self.in_poll_ns())
    }

    /// Wall time since the request began.
    pub(crate) fn wall(&self) -> Duration {
        self.started.elapsed()
    }

    /// Called from the epoch callback: true (and remembered) once the CPU
    /// limit is exceeded.
    pub(crate) fn check_cpu(&self) -> bool {
        let exceeded = self.at_tick() > self.cpu_limit;
        if exceeded {
            self.cpu_exceeded.store(true, Ordering::Relaxed);
        }
        exceeded
    }

    /// At an epoch tick: the CPU time used so far, the poll in progress
    /// charged by the thread's CPU clock from now on.
    pub(crate) fn at_tick(&self) -> Duration {
        self.switch_to_thread_clock();
        self.cpu_used()
    }

    /// Charges `spent` to this request: the CPU time of a shared instance
    /// (`run::shared`) since its last tick, when this request's code is the
    /// one running at the tick.
    pub(crate) fn charge(&self, spent: Duration) {
        let spent = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.cpu_ns.fetch_add(spent, Ordering::Relaxed);
    }

    /// A poll long enough to meet a tick is charged by the thread's CPU
    /// clock from here on.
    fn switch_to_thread_clock(&self) {
        if self.poll_began_ns.load(Ordering::Relaxed) != NOT_POLLING
            && self.switched_at_ns.load(Ordering::Relaxed) == NOT_POLLING
        {
            self.switched_cpu_ns
                .store(Self::thread_cpu_ns(), Ordering::Relaxed);
            self.switched_at_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    /// The instance this request ran in went past its memory limit (the
    /// limiter's finding, or, in a shared instance, its neighbour's).
    pub(crate) fn set_memory_exceeded(&self) {
        self.memory_exceeded.store(true, Ordering::Relaxed);
    }

    pub(crate) fn cpu_limit(&self) -> Duration {
        self.cpu_limit
    }

    pub(crate) fn wall_limit(&self) -> Duration {
        self.wall_limit
    }

    pub(crate) fn cpu_exceeded(&self) -> bool {
        self.cpu_exceeded.load(Ordering::Relaxed)
    }

    pub(crate) fn memory_exceeded(&self) -> bool {
        self.memory_exceeded.load(Ordering::Relaxed)
    }

    /// The request ran past its wall-clock limit and was stopped.
    pub(crate) fn set_wall_exceeded(&self) {
        self.wall_exceeded.store(true, Ordering::Relaxed);
    }

    pub(crate) fn wall_exceeded(&self) -> bool {
        self.wall_exceeded.load(Ordering::Relaxed)
    }

    fn begin_poll(&self) {
        self.poll_began_ns.store(self.now_ns(), Ordering::Relaxed);
    }

    fn end_poll(&self) {
        let spent = self.in_poll_ns();
        self.poll_began_ns.store(NOT_POLLING, Ordering::Relaxed);
        self.switched_at_ns.store(NOT_POLLING, Ordering::Relaxed);
        self.cpu_ns.fetch_add(spent, Ordering::Relaxed);
    }
}

/// A future whose polling CPU time is charged to a [`RequestMeter`].
pub(crate) struct Metered<F> {
    meter: Arc<RequestMeter>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(meter: Arc<RequestMeter>, inner: F) -> Self {
        Metered {
            meter,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.meter.begin_poll();
        let result = self.inner.as_mut().poll(cx);
        self.meter.end_poll();
        result
    }
}

/// Caps a request's linear memory. Growth past the limit fails (the guest
/// sees `memory.grow` return -1, as on any full machine) and is remembered,
/// so that a guest dying of it is reported as `exceededMemory`.
pub(crate) struct MemoryLimiter {
    max_bytes: usize,
    meter: Arc<RequestMeter>,
}

impl MemoryLimiter {
    pub(crate) fn new(max_bytes: usize, meter: Arc<RequestMeter>) -> Self {
        MemoryLimiter { max_bytes, meter }
    }

    /// The request whose limit a kept instance now counts against. The
    /// limit itself is on the instance's memory, so what earlier requests
    /// grew counts too.
    pub(crate) fn set_meter(&mut self, meter: Arc<RequestMeter>) {
        self.meter = meter;
    }
}

/// Table growth is bounded too, so a guest cannot exhaust host memory
/// through tables instead of memories.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.meter.set_memory_exceeded();
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cpu_time_inside_polls_is_charged() {
        let meter = RequestMeter::new(Duration::from_millis(5), Duration::MAX);
        // Outside a poll, nothing is charged, whatever the thread does.
        spin_for(Duration::from_millis(10));
        assert_eq!(meter.cpu_used(), Duration::ZERO);
        assert!(!meter.check_cpu());
        // A poll that meets no tick is charged its monotonic time…
        meter.begin_poll();
        std::thread::sleep(Duration::from_millis(2));
        meter.end_poll();
        let short = meter.cpu_used();
        assert!(
            short >= Duration::from_millis(2) && !meter.check_cpu(),
            "{short:?}"
        );
        // …one that meets a tick switches to the thread's CPU clock, so
        // sleeping from there on costs nothing…
        meter.begin_poll();
        assert!(!meter.check_cpu(), "the tick");
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            meter.cpu_used() < short + Duration::from_millis(3),
            "{:?}",
            meter.cpu_used()
        );
        // …and computing does, the poll in progress included.
        spin_for(Duration::from_millis(10));
        assert!(meter.cpu_used() >= Duration::from_millis(5));
        assert!(meter.check_cpu());
        meter.end_poll();
        assert!(meter.cpu_exceeded());
        assert!(meter.wall() >= Duration::from_millis(20));
    }

    /// Burns CPU on this thread for about `duration`.
    fn spin_for(duration: Duration) {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < duration {
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn memory_growth_past_the_limit_is_refused_and_remembered() {
        let meter = Arc::new(RequestMeter::new(Duration::from_secs(1), Duration::MAX));
        let mut limiter = MemoryLimiter::new(1 << 20, meter.clone());
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!meter.memory_exceeded());
        assert!(
            !limiter
                .memory_growing(1 << 20, (1 << 20) + 65536, None)
                .unwrap()
        );
        assert!(meter.memory_exceeded());
    }
}
