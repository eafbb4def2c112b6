//! Per-request capture of guest stdout and stderr.
//!
//! Each request gets one [`RequestCapture`]; the guest's stdout and stderr are
//! `CaptureStream`s (`logs::stdio`) writing into it. Bytes are split into lines as they
//! arrive and each complete line becomes a [`LogEntry`] handed to a
//! [`LogSink`] at once, so a viewer sees a line while the request is still
//! running. Nothing goes to the host's own stdout.
//!
//! Limits live here because this is the one place that sees every byte:
//! a line longer than [`MAX_MESSAGE_BYTES`] is cut (and flagged) without
//! buffering the rest of it, and a request that writes more than
//! [`OUTPUT_BUDGET_BYTES`] in total has the rest counted and dropped, with one
//! `warn` entry saying so when the request ends. The guest never blocks on
//! its output and never sees an error for it.
//!
//! Secrets are scrubbed here too: a request's capture knows its tenant's
//! secret values ([`RequestCapture::redacting`]) and every entry it makes
//! has them replaced by `[REDACTED]`, including a secret written in several
//! pieces within one line, and a line's last bytes when the line was cut
//! short in the middle of one.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::logs::entry::{
    Exception, Level, LogEntry, MAX_MESSAGE_BYTES, RequestMeta, Stream, truncate_message,
};
use crate::logs::line::LineBuffer;
use crate::logs::redact::redact;
use crate::logs::sink::LogSink;

/// How many bytes of output one request may write before the rest is dropped.
pub const OUTPUT_BUDGET_BYTES: usize = 256 * 1024;

/// The output of one request: both streams' partial lines and the budget.
pub struct RequestCapture {
    meta: Arc<RequestMeta>,
    sink: Arc<dyn LogSink>,
    /// Values that never appear in an entry (longest first).
    secrets: Arc<[String]>,
    state: Mutex<CaptureState>,
}

#[derive(Default)]
struct CaptureState {
    stdout: LineBuffer,
    stderr: LineBuffer,
    /// Bytes accepted so far, at most [`OUTPUT_BUDGET_BYTES`].
    accepted: usize,
    /// Bytes written past the budget and dropped.
    dropped: usize,
    finished: bool,
    /// The last stderr write ended mid-line.
    stderr_mid_line: bool,
    /// The guest reported an uncaught exception (a stderr line starting
    /// with [`EXCEPTION_LINE`]), and what it said, when the line was read.
    reported: Option<Option<Exception>>,
}

/// How a guest whose language catches its own errors (a JavaScript runtime
/// answers 500 instead of trapping) reports one: a line on stderr that is
/// a JSON object starting with this key, `{"exception":{"name":…,
/// "message":…,"stack":[…]},…}`. Its request then ends as `exception`,
/// with that exception on its event (`wit/README.md`).
pub const EXCEPTION_LINE: &[u8] = b"{\"exception\":";

/// Whether `data`, written to stderr, reports an exception: a line of it
/// starts with [`EXCEPTION_LINE`]. Cheap enough for every write, so that a
/// request's outcome does not depend on whether anyone watches it.
fn reports_exception(data: &[u8], at_line_start: bool) -> bool {
    (at_line_start && data.starts_with(EXCEPTION_LINE))
        || data
            .windows(EXCEPTION_LINE.len() + 1)
            .any(|w| w[0] == b'\n' && &w[1..] == EXCEPTION_LINE)
}

/// The exception a reported line carries under `fields.exception`.
fn reported_exception(entry: &LogEntry) -> Option<Exception> {
    let exception = entry.fields.as_ref()?.get("exception")?.as_object()?;
    let text = |key: &str| {
        exception
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let stack = match exception.get("stack") {
        Some(serde_json::Value::Array(frames)) => frames
            .iter()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(text)) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect(),
        _ => Vec::new(),
    };
    Some(Exception {
        name: text("name").unwrap_or_else(|| "Error".into()),
        message: text("message").unwrap_or_default(),
        stack,
    })
}

impl CaptureState {
    /// Once a stderr write reported an exception, keeps what the first
    /// line carrying one says.
    fn note_exception(&mut self, entries: &[LogEntry]) {
        if self.reported == Some(None)
            && let Some(exception) = entries.iter().find_map(reported_exception)
        {
            self.reported = Some(Some(exception));
        }
    }
}

impl RequestCapture {
    pub fn new(meta: Arc<RequestMeta>, sink: Arc<dyn LogSink>) -> Arc<Self> {
        Self::redacting(meta, sink, Arc::from([]))
    }

    /// A capture whose entries never show any of `secrets`.
    pub fn redacting(
        meta: Arc<RequestMeta>,
        sink: Arc<dyn LogSink>,
        secrets: Arc<[String]>,
    ) -> Arc<Self> {
        Arc::new(RequestCapture {
            meta,
            sink,
            secrets,
            state: Mutex::default(),
        })
    }

    pub fn meta(&self) -> &Arc<RequestMeta> {
        &self.meta
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        // A panic while holding this lock cannot leave the state torn in a
        // way that matters for logs, so a poisoned lock is used as is.
        crate::base::sync::lock(&self.state)
    }

    /// Accepts bytes the guest wrote to `stream`.
    pub(crate) fn write(&self, stream: Stream, mut data: &[u8]) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        let room = OUTPUT_BUDGET_BYTES - state.accepted;
        if data.len() > room {
            state.dropped += data.len() - room;
            data = &data[..room];
        }
        state.accepted += data.len();
        if stream == Stream::Stderr && !data.is_empty() {
            if state.reported.is_none() && reports_exception(data, !state.stderr_mid_line) {
                state.reported = Some(None);
            }
            state.stderr_mid_line = data.last() != Some(&b'\n');
        }
        if data.is_empty() || !self.sink.wants(&self.meta.slug) {
            return;
        }
        let buffer = match stream {
            Stream::Stdout => &mut state.stdout,
            Stream::Stderr => &mut state.stderr,
        };
        let mut entries = Vec::new();
        for (i, part) in data.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                // Lines ended here are whole: only the unfinished one can
                // have lost bytes to the budget.
                entries.push(buffer.take_entry(&self.meta, stream, &self.secrets, false));
            }
            if !part.is_empty() {
                buffer.push(part);
            }
        }
        if stream == Stream::Stderr {
            state.note_exception(&entries);
        }
        drop(state);
        if !entries.is_empty() {
            self.sink.publish(&self.meta.slug, entries);
        }
    }

    /// Accepts one `wasi:logging` message: one entry, level as given, under
    /// the same budget and size limit as stdout and stderr.
    pub fn log_structured(&self, level: Level, mut message: String) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        let room = OUTPUT_BUDGET_BYTES - state.accepted;
        if message.len() > room {
            state.dropped += message.len();
            return;
        }
        state.accepted += message.len();
        drop(state);
        if self.sink.wants(&self.meta.slug) {
            redact(&mut message, &self.secrets, false);
            let truncated = truncate_message(&mut message, MAX_MESSAGE_BYTES);
            let mut entry = LogEntry::from_host(self.meta.clone(), level, message);
            entry.truncated = truncated;
            self.sink.publish(&self.meta.slug, vec![entry]);
        }
    }

    /// Ends capture when the request ends: flushes unfinished lines and, if
    /// the budget ran out, says how much was dropped. Later writes (a guest
    /// task outliving its request cannot, but be safe) are ignored.
    pub fn finish(&self) {
        let mut state = self.lock();
        if std::mem::replace(&mut state.finished, true) {
            return;
        }
        let mut entries = Vec::new();
        let cut = state.dropped > 0;
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buffer = match stream {
                Stream::Stdout => &mut state.stdout,
                Stream::Stderr => &mut state.stderr,
            };
            if !buffer.is_empty() {
                let entry = buffer.take_entry(&self.meta, stream, &self.secrets, cut);
                if stream == Stream::Stderr {
                    state.note_exception(std::slice::from_ref(&entry));
                }
                entries.push(entry);
            }
        }
        if state.dropped > 0 {
            entries.push(LogEntry::from_host(
                self.meta.clone(),
                Level::Warn,
                format!(
                    "[mctx] output limit reached: this request wrote more than {} KiB; \
                     the remaining {} bytes were dropped",
                    OUTPUT_BUDGET_BYTES / 1024,
                    state.dropped
                ),
            ));
        }
        drop(state);
        if !entries.is_empty() && self.sink.wants(&self.meta.slug) {
            self.sink.publish(&self.meta.slug, entries);
        }
    }

    /// Publishes an entry the host writes about this request (a trap's
    /// message, a limit reached), after the guest's own lines.
    pub fn publish_host_entry(&self, level: Level, mut message: String) {
        if self.sink.wants(&self.meta.slug) {
            // A host entry may quote the guest (a URL it called, a trap).
            redact(&mut message, &self.secrets, false);
            let entry = LogEntry::from_host(self.meta.clone(), level, message);
            self.sink.publish(&self.meta.slug, vec![entry]);
        }
    }

    /// Whether anyone reads this request's entries now.
    pub fn wanted(&self) -> bool {
        self.sink.wants(&self.meta.slug)
    }

    /// Publishes an entry built elsewhere (the request event).
    pub fn publish_entry(&self, entry: LogEntry) {
        if self.sink.wants(&self.meta.slug) {
            self.sink.publish(&self.meta.slug, vec![entry]);
        }
    }

    /// Whether the guest reported an uncaught exception on stderr
    /// ([`EXCEPTION_LINE`]), with what it said when its line was read
    /// (lines are read only while someone watches the slug).
    pub fn reported_exception(&self) -> Option<Option<Exception>> {
        self.lock().reported.clone()
    }

    /// Total bytes the guest wrote, including dropped ones.
    pub fn bytes_written(&self) -> usize {
        let state = self.lock();
        state.accepted + state.dropped
    }

    /// Bytes the guest wrote, and of those the bytes dropped past the
    /// budget.
    pub(crate) fn output_bytes(&self) -> (usize, usize) {
        let state = self.lock();
        (state.accepted + state.dropped, state.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::line::LINE_KEEP_BYTES;

    /// Collects everything published, as a viewer would see it.
    #[derive(Default)]
    struct Collect(Mutex<Vec<LogEntry>>);

    impl LogSink for Collect {
        fn wants(&self, _slug: &str) -> bool {
            true
        }
        fn publish(&self, _slug: &str, entries: Vec<LogEntry>) {
            self.0.lock().unwrap().extend(entries);
        }
    }

    fn capture() -> (Arc<RequestCapture>, Arc<Collect>) {
        let sink = Arc::new(Collect::default());
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        });
        (RequestCapture::new(meta, sink.clone()), sink)
    }

    fn messages(sink: &Collect) -> Vec<(Level, String, bool)> {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| (e.level, e.message.clone(), e.truncated))
            .collect()
    }

    #[test]
    fn a_reported_exception_is_noticed_in_any_write_and_read_from_its_line() {
        let line = br#"{"exception":{"name":"TypeError","message":"x is null","stack":["f (a.js:1:2)"]},"level":"error","message":"Uncaught TypeError"}"#;
        let (reader, _) = capture();
        reader.write(Stream::Stderr, b"[DEBUG] before\n");
        reader.write(Stream::Stderr, line);
        reader.write(Stream::Stderr, b"\n");
        reader.finish();
        let exception = reader
            .reported_exception()
            .flatten()
            .expect("read from its line");
        assert_eq!(
            (exception.name.as_str(), exception.stack.as_slice()),
            ("TypeError", ["f (a.js:1:2)".to_string()].as_slice())
        );
        let (reader, _) = capture();
        let mut two = b"first\n".to_vec();
        two.extend_from_slice(line);
        reader.write(Stream::Stderr, &two);
        reader.finish();
        assert!(
            reader.reported_exception().flatten().is_some(),
            "second line of a write"
        );
        for (stream, text) in [
            (Stream::Stdout, &line[..]),
            (Stream::Stderr, &b"say {\"exception\":1}\n"[..]),
        ] {
            let (reader, _) = capture();
            reader.write(stream, text);
            reader.finish();
            assert_eq!(reader.reported_exception(), None, "{stream:?}");
        }
    }

    #[test]
    fn lines_split_across_writes_and_streams() {
        let (capture, sink) = capture();
        capture.write(Stream::Stdout, b"one\ntw");
        capture.write(Stream::Stderr, b"[WARN] w\r\n");
        capture.write(Stream::Stdout, b"o\nthree");
        assert_eq!(
            messages(&sink),
            [
                (Level::Log, "one".into(), false),
                (Level::Warn, "[WARN] w".into(), false),
                (Level::Log, "two".into(), false)
            ]
        );
        capture.finish();
        assert_eq!(
            messages(&sink).last().unwrap(),
            &(Level::Log, "three".to_string(), false)
        );
    }

    #[test]
    fn empty_lines_are_entries_too() {
        let (capture, sink) = capture();
        capture.write(Stream::Stdout, b"\n\n");
        assert_eq!(messages(&sink).len(), 2);
        assert!(sink.0.lock().unwrap().iter().all(|e| e.timestamp > 0));
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let (capture, sink) = capture();
        capture.write(Stream::Stdout, b"bad \xff byte\n");
        assert_eq!(messages(&sink)[0].1, "bad \u{fffd} byte");
    }

    #[test]
    fn a_huge_line_is_cut_without_being_buffered_whole() {
        let (capture, sink) = capture();
        for _ in 0..100 {
            capture.write(Stream::Stdout, &[b'x'; 1000]);
        }
        assert!(capture.lock().stdout.bytes.len() <= LINE_KEEP_BYTES);
        capture.write(Stream::Stdout, b"\n");
        let got = messages(&sink);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), MAX_MESSAGE_BYTES);
        assert!(got[0].2);
    }

    #[test]
    fn output_past_the_budget_is_dropped_and_reported_once() {
        let (capture, sink) = capture();
        let line = [b'y'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        for _ in 0..300 {
            capture.write(Stream::Stdout, &line);
        }
        capture.finish();
        let got = messages(&sink);
        assert_eq!(got.len(), 257, "256 lines of 1 KiB, then one warning");
        let (level, message, _) = got.last().unwrap();
        assert_eq!(*level, Level::Warn);
        assert!(
            message.contains(&format!("{} bytes were dropped", 44 * 1024)),
            "{message}"
        );
        assert_eq!(capture.bytes_written(), 300 * 1024);
    }

    #[test]
    fn secrets_never_reach_an_entry_even_in_pieces() {
        let sink = Arc::new(Collect::default());
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let secrets: Arc<[String]> = Arc::from(["sk-live-1234567890".to_string()]);
        let capture = RequestCapture::redacting(meta, sink.clone(), secrets);
        capture.write(Stream::Stdout, b"key=sk-live-12");
        capture.write(Stream::Stdout, b"34567890 twice sk-live-1234567890\n");
        capture.log_structured(Level::Info, "structured sk-live-1234567890".into());
        capture.publish_host_entry(Level::Warn, "GET https://x/?k=sk-live-1234567890".into());
        // A line cut at the 10 KB limit in the middle of the secret.
        let mut long = vec![b'x'; LINE_KEEP_BYTES - 8];
        long.extend_from_slice(b"sk-live-1234567890\n");
        capture.write(Stream::Stderr, &long);
        let got = messages(&sink);
        assert_eq!(got[0].1, "key=[REDACTED] twice [REDACTED]");
        assert_eq!(got[1].1, "structured [REDACTED]");
        assert_eq!(got[2].1, "GET https://x/?k=[REDACTED]");
        assert!(got[3].2, "cut");
        assert!(
            !got[3].1.contains("sk-l"),
            "no piece of the secret: …{}",
            &got[3].1[got[3].1.len() - 20..]
        );
        assert!(got.iter().all(|(_, m, _)| !m.contains("1234567890")));
    }

    #[test]
    fn nothing_is_built_when_nobody_listens() {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1".into(),
            request_id: "r".into(),
        });
        let capture = RequestCapture::new(meta, Arc::new(crate::logs::sink::Discard));
        capture.write(Stream::Stdout, b"partial line");
        assert!(capture.lock().stdout.is_empty());
        assert_eq!(capture.bytes_written(), 12);
    }
}
