//! The log stream's wire protocol: every frame a viewer receives on
//! `/log-stream/{slug}` (the filters a viewer asks for in its query are
//! `logs::filter`).
//!
//! The hub serializes these types and `mctx-host tail` deserializes them,
//! so the two cannot disagree about a field; the dashboard's script reads
//! the same JSON.
//!
//! ```text
//! {"type":"logs","entries":[LogEntry, …]}      at most 100 entries
//! {"type":"dropped","count":N}                 N entries this viewer will never get
//! {"type":"notice","message":"…"}              news about the stream itself
//! {"type":"closing","reason":"…"}              the host is about to close
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::logs::entry::LogEntry;

/// The most entries one `logs` frame carries (the contract's batch size).
pub(crate) const MAX_BATCH: usize = 100;

/// One frame of the log stream. `E` is how the entries are held: borrowed
/// when the hub serializes a batch once for many viewers, owned when a
/// client reads one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Frame<E = Vec<LogEntry>> {
    /// Entries, in `seq` order.
    Logs { entries: E },
    /// `count` entries were missed here (the viewer fell behind, the hub
    /// overflowed, or another host's entries did not arrive).
    Dropped { count: u64 },
    /// Something the viewer should know about the stream itself (the
    /// cluster link went down, came back).
    Notice { message: String },
    /// The host is closing this stream, and why.
    Closing { reason: String },
}

impl Frame<()> {
    /// The JSON text of a frame that carries no entries.
    pub(crate) fn json(self) -> String {
        serde_json::to_string(&self).expect("frames serialize")
    }
}

/// `{"type":"logs","entries":[…]}` for `entries`, serialized once to be
/// shared by every viewer with the same filter.
pub(crate) fn logs_json(entries: &[&LogEntry]) -> Arc<str> {
    serde_json::to_string(&Frame::Logs { entries })
        .expect("entries serialize")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    fn entry(request_id: &str, stream: Stream, line: &str) -> LogEntry {
        let meta = Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: request_id.into(),
        });
        LogEntry::from_line(meta, stream, 1, line.into())
    }

    #[test]
    fn frames_are_tagged_by_type_and_read_back() {
        let cases: [(Frame, &str); 3] = [
            (
                Frame::Dropped { count: 3 },
                r#"{"type":"dropped","count":3}"#,
            ),
            (
                Frame::Notice {
                    message: "link down".into(),
                },
                r#"{"type":"notice","message":"link down"}"#,
            ),
            (
                Frame::Closing {
                    reason: "bye".into(),
                },
                r#"{"type":"closing","reason":"bye"}"#,
            ),
        ];
        for (frame, json) in cases {
            assert_eq!(serde_json::to_string(&frame).unwrap(), json);
            let back: Frame = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
        let line = entry("r", Stream::Stdout, "[INFO] hi");
        let json = logs_json(&[&line]);
        let Ok(Frame::Logs { entries }) = serde_json::from_str::<Frame>(&json) else {
            panic!("not a logs frame: {json}");
        };
        assert_eq!(entries[0].message, "[INFO] hi");
        assert!(serde_json::from_str::<Frame>(r#"{"type":"future"}"#).is_err());
    }
}
