//! Printing guest output on the host's terminal (`--guest-logs`).
//!
//! `wasmtime serve` shows a guest's output on its own stdout; a developer
//! running one component locally expects the same. We print structured
//! entries instead of raw bytes, so lines from concurrent requests never
//! interleave mid-line and each says which request wrote it. The same
//! printer ([`pretty_line`]) serves `mctx-host tail`.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};

use clap::ValueEnum;

use crate::logs::entry::{EntryKind, Level, LogEntry, Stream};
use crate::logs::sink::LogSink;

/// How guest output is shown on the host's stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestLogFormat {
    /// `HH:MM:SS.mmm LEVEL [slug@version] message` (local time).
    Pretty,
    /// One JSON entry per line, as viewers receive them.
    Json,
    /// The guest's lines as it wrote them, nothing added (what `wasmtime
    /// serve --no-logging-prefix` prints).
    Raw,
    /// `stdout [ID] :: line` on stdout and `stderr [ID] :: line` on stderr,
    /// as `wasmtime serve` prints them (ID is the request id; wasmtime
    /// counts instances from 0).
    Wasmtime,
    /// Not shown (viewers still receive them).
    Off,
}

/// A [`LogSink`] writing entries to stdout.
pub(crate) struct ConsoleLog {
    format: GuestLogFormat,
    /// Levels in colour: only when stdout is a terminal.
    color: bool,
}

impl ConsoleLog {
    pub(crate) fn new(format: GuestLogFormat) -> Self {
        ConsoleLog {
            format,
            color: std::io::stdout().is_terminal(),
        }
    }
}

impl LogSink for ConsoleLog {
    fn wants(&self, _slug: &str) -> bool {
        self.format != GuestLogFormat::Off
    }

    fn wants_headers(&self, _slug: &str) -> bool {
        false // the console does not print them
    }

    fn publish(&self, _slug: &str, entries: Vec<LogEntry>) {
        if self.format == GuestLogFormat::Wasmtime {
            return print_as_wasmtime(&entries);
        }
        let mut text = String::new();
        for entry in &entries {
            if self.format == GuestLogFormat::Raw && entry.kind == EntryKind::Request {
                continue; // wasmtime prints nothing of its own per request
            }
            match self.format {
                GuestLogFormat::Pretty => {
                    text.push_str(&pretty_line(entry, self.color));
                }
                GuestLogFormat::Json => {
                    text.push_str(&serde_json::to_string(entry).expect("entries serialize"));
                }
                GuestLogFormat::Raw => text.push_str(&entry.message),
                GuestLogFormat::Off | GuestLogFormat::Wasmtime => return,
            }
            text.push('\n');
        }
        // One write per batch keeps lines whole; a closed stdout is not the
        // guest's problem.
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
    }
}

/// The guest's own lines, each on the stream it wrote it to, with
/// `wasmtime serve`'s prefix; the host's entries are not printed.
fn print_as_wasmtime(entries: &[LogEntry]) {
    let (mut out, mut err) = (String::new(), String::new());
    for entry in entries {
        let Some(stream) = entry.stream else { continue };
        let text = match stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        let _ = writeln!(
            text,
            "{} [{}] :: {}",
            stream.name(),
            entry.meta.request_id,
            entry.message
        );
    }
    if !out.is_empty() {
        let _ = std::io::stdout().lock().write_all(out.as_bytes());
    }
    if !err.is_empty() {
        let _ = std::io::stderr().lock().write_all(err.as_bytes());
    }
}

/// `12:34:56.789 WARN  [slug@1.0.0] message`, in local time; on a cluster
/// `[slug@1.0.0 on node]` says which host served the request. With `color`,
/// the level is coloured with ANSI escapes. Everything a guest (or another
/// host) wrote is shown through [`Escaped`]: the line is for a terminal, and
/// a guest's escape sequence must not reach it.
pub(crate) fn pretty_line(entry: &LogEntry, color: bool) -> String {
    let label = format!("{:<5}", level_label(entry.level));
    let label = if color {
        let code = match entry.level {
            Level::Log => "90",
            Level::Info => "34",
            Level::Warn => "33",
            Level::Error => "31",
            Level::Debug => "35",
        };
        format!("\x1b[{code}m{label}\x1b[0m")
    } else {
        label
    };
    let node = entry
        .node
        .as_deref()
        .map_or(String::new(), |node| format!(" on {}", Escaped(node)));
    let mut line = format!(
        "{} {label} [{}@{}{node}] {}",
        clock_local(entry.timestamp),
        entry.meta.slug,
        Escaped(&entry.meta.version),
        Escaped(&entry.message)
    );
    // A trap's exception, under the request's line, innermost frame first.
    if let Some(exception) = entry.request.as_ref().and_then(|r| r.exception.as_ref()) {
        let _ = write!(
            line,
            "\n    {}: {}",
            Escaped(&exception.name),
            Escaped(&exception.message)
        );
        for frame in exception.stack.iter().take(MAX_FRAMES) {
            let _ = write!(line, "\n      at {}", Escaped(frame));
        }
        if exception.stack.len() > MAX_FRAMES {
            let _ = write!(
                line,
                "\n      … {} more",
                exception.stack.len() - MAX_FRAMES
            );
        }
    }
    // A structured line's fields, as `key=value` after the message.
    for (key, value) in entry.fields.iter().flat_map(|fields| fields.iter()) {
        match value {
            serde_json::Value::String(text) => {
                let _ = write!(line, " {}={}", Escaped(key), Escaped(text));
            }
            other => {
                let _ = write!(line, " {}={}", Escaped(key), Escaped(&other.to_string()));
            }
        }
    }
    line
}

/// Guest text made safe for a terminal: a control character (C0, DEL, C1)
/// or a bidirectional override is shown as its `\u{..}` escape instead of
/// being sent, so a guest can neither move the cursor, retitle the window,
/// clear the screen or write to the clipboard of whoever tails it (OSC 52),
/// nor make a line read differently from what it holds (Trojan Source
/// overrides). A tab stays: it is layout, not a command. Newlines are
/// escaped too, so one entry is one line. The raw formats
/// (`--guest-logs raw|wasmtime`) print the guest's bytes as `wasmtime serve`
/// does; this is for the formats that are ours.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(needs_escape) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found a char");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Whether a terminal would take `c` as a command rather than text.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The most stack frames a terminal gets for one exception.
const MAX_FRAMES: usize = 20;

/// A level as a terminal shows it.
fn level_label(level: Level) -> &'static str {
    match level {
        Level::Debug => "DEBUG",
        Level::Log => "LOG",
        Level::Info => "INFO",
        Level::Warn => "WARN",
        Level::Error => "ERROR",
    }
}

/// `HH:MM:SS.mmm` of a millisecond Unix timestamp, in local time.
pub(crate) fn clock_local(timestamp_ms: u64) -> String {
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
pub(crate) fn clock_utc(timestamp_ms: u64) -> String {
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
    fn pretty_lines_colour_only_when_asked() {
        let meta = std::sync::Arc::new(crate::logs::entry::RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        });
        let entry = LogEntry::from_line(
            meta,
            crate::logs::entry::Stream::Stderr,
            0,
            "[WARN] careful".into(),
        );
        let plain = pretty_line(&entry, false);
        assert!(
            plain.ends_with(" WARN  [s@1.0.0] [WARN] careful"),
            "{plain}"
        );
        assert!(!plain.contains('\x1b'));
        assert!(pretty_line(&entry, true).contains("\x1b[33mWARN \x1b[0m"));
        let mut clustered = entry.clone();
        clustered.node = Some("host-a".into());
        let line = pretty_line(&clustered, false);
        assert!(
            line.ends_with("[s@1.0.0 on host-a] [WARN] careful"),
            "{line}"
        );
    }

    #[test]
    fn guest_text_cannot_command_the_terminal() {
        let hostile = "a\x1b]0;pwned\x07b\x1b[2J\r\nc\u{9b}31m\u{202e}d\te\u{7f}é";
        assert_eq!(
            Escaped(hostile).to_string(),
            "a\\u{1b}]0;pwned\\u{7}b\\u{1b}[2J\\r\\nc\\u{9b}31m\\u{202e}d\te\\u{7f}é"
        );
        assert_eq!(Escaped("plain text").to_string(), "plain text");
    }

    #[test]
    fn clock_formats_milliseconds_of_the_day() {
        assert_eq!(clock_utc(0), "00:00:00.000");
        // 2026-11-23T13:04:05.067Z
        assert_eq!(clock_utc(1_795_439_045_067), "13:04:05.067");
        let local = clock_local(1_795_439_045_067);
        assert_eq!((local.len(), &local[5..]), (12, ":05.067"), "{local}");
    }
}
