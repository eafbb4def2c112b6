//! Printing guest output on the host's terminal (`--guest-logs`).
//!
//! `wasmtime serve` shows a guest's output on its own stdout; a developer
//! running one component locally expects the same. We print structured
//! entries instead of raw bytes, so lines from concurrent requests never
//! interleave mid-line and each says which request wrote it.

use std::io::Write as _;

use clap::ValueEnum;

use crate::capture::LogSink;
use crate::entry::{Level, LogEntry};

/// How guest output is shown on the host's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestLogFormat {
    /// `HH:MM:SS.mmm LEVEL [slug@version] message` (local time).
    Pretty,
    /// One JSON entry per line, as viewers receive them.
    Json,
    /// Not shown (viewers still receive them).
    Off,
}

/// A [`LogSink`] writing entries to stdout.
pub struct ConsoleLog {
    format: GuestLogFormat,
}

impl ConsoleLog {
    pub fn new(format: GuestLogFormat) -> Self {
        ConsoleLog { format }
    }
}

impl LogSink for ConsoleLog {
    fn wants(&self, _slug: &str) -> bool {
        self.format != GuestLogFormat::Off
    }

    fn publish(&self, _slug: &str, entries: Vec<LogEntry>) {
        let mut text = String::new();
        for entry in &entries {
            match self.format {
                GuestLogFormat::Pretty => {
                    text.push_str(&pretty_line(entry));
                }
                GuestLogFormat::Json => {
                    text.push_str(&serde_json::to_string(entry).expect("entries serialize"));
                }
                GuestLogFormat::Off => return,
            }
            text.push('\n');
        }
        // One write per batch keeps lines whole; a closed stdout is not the
        // guest's problem.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

/// `12:34:56.789 WARN  [slug@1.0.0] message`, in local time.
pub fn pretty_line(entry: &LogEntry) -> String {
    format!(
        "{} {:<5} [{}@{}] {}",
        clock_local(entry.timestamp),
        level_label(entry.level),
        entry.meta.slug,
        entry.meta.version,
        entry.message
    )
}

/// A level as a terminal shows it.
pub fn level_label(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Log => "LOG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// `HH:MM:SS.mmm` of a millisecond Unix timestamp, in local time.
pub fn clock_local(timestamp_ms: u64) -> String {
    use chrono::TimeZone as _;
    match chrono::Local
        .timestamp_millis_opt(timestamp_ms as i64)
        .single()
    {
        Some(time) => time.format("%H:%M:%S%.3f").to_string(),
        None => clock_utc(timestamp_ms),
    }
}

/// `HH:MM:SS.mmm` of a millisecond Unix timestamp, in UTC.
pub fn clock_utc(timestamp_ms: u64) -> String {
    let ms_of_day = timestamp_ms % 86_400_000;
    let (h, m, s, ms) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_formats_milliseconds_of_the_day() {
        assert_eq!(clock_utc(0), "00:00:00.000");
        // 2026-11-23T13:04:05.067Z
        assert_eq!(clock_utc(1_795_439_045_067), "13:04:05.067");
        let local = clock_local(1_795_439_045_067);
        assert_eq!((local.len(), &local[5..]), (12, ":05.067"), "{local}");
    }
}
