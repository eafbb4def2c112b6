//! Memory back to the system after a burst.
//!
//! A burst of a thousand concurrent requests leaves the process with tens
//! of megabytes of freed heap that glibc keeps for reuse (measured: 83 MB
//! resident after a 1,200-connection burst against 17 MB idle; 32 MB after
//! `malloc_trim`). Pooled instances need no help (their linear memories are
//! decommitted as they are freed). So once the requests in flight fall
//! well below the burst's peak, the heap is trimmed, once per burst, on a
//! blocking thread: never on the request path.

use std::time::Duration;

/// How often the requests in flight are sampled.
const SAMPLE: Duration = Duration::from_secs(1);
/// A peak below this is not a burst worth trimming after.
const BURST: usize = 64;

/// Samples `in_flight` every second and trims the heap when a burst of at
/// least [`BURST`] requests has fallen to a quarter of its peak.
pub(crate) async fn trim_after_bursts(in_flight: impl Fn() -> usize) {
    let mut peak = 0;
    let mut every = tokio::time::interval(SAMPLE);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = in_flight();
        peak = peak.max(now);
        if peak >= BURST && now <= peak / 4 {
            let before = resident_kib();
            let _ = tokio::task::spawn_blocking(trim).await;
            tracing::debug!(
                peak,
                before_kib = before,
                after_kib = resident_kib(),
                "returned freed memory to the system after a burst"
            );
            peak = now;
        }
    }
}

/// Gives free heap memory back to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap structures under its
    // own locks; 0 means "keep no extra padding".
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident memory in KiB (0 where /proc is not there).
pub(crate) fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
