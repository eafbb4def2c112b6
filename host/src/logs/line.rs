//! One output stream's unfinished line: kept up to what an entry can carry
//! (the rest counted, not kept), stamped with when its first byte came, and
//! turned into an entry, with the tenant's secrets redacted, when it ends.

use std::sync::Arc;

use crate::logs::entry::{LogEntry, MAX_MESSAGE_BYTES, RequestMeta, Stream, now_ms};
use crate::logs::redact::{redact, redact_fields};

/// The unfinished line of one stream.
#[derive(Default)]
pub(crate) struct LineBuffer {
    pub(crate) bytes: Vec<u8>,
    /// When the line's first byte arrived (ms since the epoch).
    started_ms: u64,
    /// The line outgrew what an entry can carry; the excess was not kept.
    overflowed: bool,
}

/// A line keeps a few bytes past the limit so that truncation is detected
/// (and cut on a char boundary) after invalid UTF-8 is replaced.
pub(crate) const LINE_KEEP_BYTES: usize = MAX_MESSAGE_BYTES + 4;

impl LineBuffer {
    pub(crate) fn push(&mut self, part: &[u8]) {
        if self.bytes.is_empty() && !self.overflowed {
            self.started_ms = now_ms();
        }
        let room = LINE_KEEP_BYTES.saturating_sub(self.bytes.len());
        if part.len() > room {
            self.overflowed = true;
        }
        self.bytes.extend_from_slice(&part[..part.len().min(room)]);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty() && !self.overflowed
    }

    /// Ends the current line and turns it into an entry, with `secrets`
    /// redacted; `cut` says the line lost bytes (the output budget ran out).
    pub(crate) fn take_entry(
        &mut self,
        meta: &Arc<RequestMeta>,
        stream: Stream,
        secrets: &[String],
        cut: bool,
    ) -> LogEntry {
        if self.bytes.last() == Some(&b'\r') && !self.overflowed {
            self.bytes.pop();
        }
        // An empty line never went through `push`, so it starts now.
        let timestamp = if self.is_empty() {
            now_ms()
        } else {
            self.started_ms
        };
        let mut line = String::from_utf8_lossy(&self.bytes).into_owned();
        redact(&mut line, secrets, cut || self.overflowed);
        // Only a line that may be JSON is parsed (`LogEntry::from_line`);
        // any other line's message is the line, redacted above.
        let parsed = !secrets.is_empty() && line.trim_start().starts_with('{');
        let mut entry = LogEntry::from_line(meta.clone(), stream, timestamp, line);
        if parsed {
            // A structured line's message and fields come from parsing it:
            // a JSON escape has turned back into the secret's own text.
            redact(&mut entry.message, secrets, false);
            if let Some(fields) = &mut entry.fields {
                redact_fields(fields, secrets);
            }
        }
        entry.truncated |= self.overflowed;
        self.bytes.clear();
        self.overflowed = false;
        entry
    }
}
