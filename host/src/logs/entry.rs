//! Log entries: what one line of guest output becomes.
//!
//! The platform's contract (`server-logs.txt`) is a `{timestamp, level,
//! message}` record per `console.*` call. Our guests write bytes to stdout and
//! stderr instead, so a line is the unit, the stream gives a default level and
//! a leading `[INFO]`/`[WARN]`/`[ERROR]`/`[DEBUG]` overrides it. The prefix is
//! kept in the message, as the contract's own examples show it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The largest message an entry carries, in bytes (the contract's 10 KB).
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024;

/// A log level, as the contract names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Log,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Log => "log",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// Parses a level name as viewers and the CLI spell it (`warn`, `ERROR`…).
    pub fn parse(name: &str) -> Option<Level> {
        const ALL: [Level; 5] = [
            Level::Debug,
            Level::Log,
            Level::Info,
            Level::Warn,
            Level::Error,
        ];
        ALL.into_iter()
            .find(|level| level.as_str().eq_ignore_ascii_case(name))
    }
}

/// Which guest stream a line came from; it decides the level of a line that
/// has no prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// stdout is `console.log`; stderr is an error unless a prefix says otherwise.
    pub fn default_level(self) -> Level {
        match self {
            Stream::Stdout => Level::Log,
            Stream::Stderr => Level::Error,
        }
    }
}

/// The level a line's prefix names, if it starts with one.
pub fn prefix_level(line: &str) -> Option<Level> {
    const PREFIXES: [(&str, Level); 4] = [
        ("[INFO]", Level::Info),
        ("[WARN]", Level::Warn),
        ("[ERROR]", Level::Error),
        ("[DEBUG]", Level::Debug),
    ];
    PREFIXES
        .into_iter()
        .find_map(|(prefix, level)| line.starts_with(prefix).then_some(level))
}

/// The level a structured line names (`"level": "warning"` and the like):
/// the contract's five, plus the names logging libraries use for them.
fn structured_level(name: &str) -> Option<Level> {
    Level::parse(name).or_else(|| match name.to_ascii_lowercase().as_str() {
        "trace" => Some(Level::Debug),
        "warning" => Some(Level::Warn),
        "err" | "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => Some(Level::Error),
        "notice" => Some(Level::Info),
        _ => None,
    })
}

/// A line that is one JSON object (`{"level":"warn","msg":"…","key":1}`,
/// as structured loggers print): its level and message, and its other
/// fields. `None` for any other line, which stays as it is.
fn structured(line: &str) -> Option<(Option<Level>, Option<String>, Fields)> {
    if !line.trim_start().starts_with('{') {
        return None; // the common case costs one byte's look
    }
    let serde_json::Value::Object(mut object) = serde_json::from_str(line).ok()? else {
        return None;
    };
    let level = match object.get("level") {
        Some(serde_json::Value::String(name)) => structured_level(name),
        _ => None,
    };
    if level.is_some() {
        object.remove("level");
    }
    let message = ["message", "msg"].into_iter().find_map(|key| {
        let text = match object.get(key)? {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        object.remove(key);
        Some(text)
    });
    Some((level, message, object))
}

/// A structured line's other fields.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// Milliseconds since the Unix epoch, the contract's timestamp unit.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who produced an entry: shared by every entry of one request, so it is
/// reference-counted rather than copied per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMeta {
    pub slug: String,
    pub version: String,
    pub request_id: String,
}

/// What an entry records: a line of output, the end of a request, or a
/// change to the server's deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Log,
    Request,
    Deploy,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Log => "log",
            EntryKind::Request => "request",
            EntryKind::Deploy => "deploy",
        }
    }

    pub fn parse(name: &str) -> Option<EntryKind> {
        match name {
            "log" => Some(EntryKind::Log),
            "request" => Some(EntryKind::Request),
            "deploy" => Some(EntryKind::Deploy),
            _ => None,
        }
    }
}

pub use crate::logs::event::{
    DeployAction, DeployEvent, Exception, McpCall, Outcome, RequestEvent, RequestHeaders,
    truncate_message,
};

/// One log entry. `seq` (and, on a cluster, `node`) are given when it is
/// published; before that `seq` is 0.
///
/// It deserializes too: on a cluster, entries travel between hosts in
/// their wire shape, and the receiving host filters them like its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEntry {
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// The host that produced the entry, on a cluster (`[cluster]`): `seq`
    /// counts per producer, so a viewer tracks gaps per `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
    /// Per slug (and producer), from 1, gapless; 0 (and omitted) until
    /// published.
    #[serde(default, skip_serializing_if = "is_unpublished")]
    pub seq: u64,
    pub timestamp: u64,
    pub level: Level,
    pub message: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(flatten)]
    pub meta: Arc<RequestMeta>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RequestEvent>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Box<DeployEvent>>,
    /// A structured line's fields other than its level and message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Box<Fields>>,
    /// The guest stream a line came from (`None` for the host's entries and
    /// `wasi:logging`); not on the wire, for printing as `wasmtime serve`.
    #[serde(skip)]
    pub stream: Option<Stream>,
}

fn is_unpublished(seq: &u64) -> bool {
    *seq == 0
}

impl LogEntry {
    /// A `log` entry with `seq` still to be assigned by the hub.
    fn log(meta: Arc<RequestMeta>, timestamp: u64, level: Level, message: String) -> Self {
        LogEntry {
            kind: EntryKind::Log,
            node: None,
            seq: 0,
            timestamp,
            level,
            message,
            truncated: false,
            meta,
            request: None,
            deploy: None,
            fields: None,
            stream: None,
        }
    }

    /// An entry for one line of guest output: level from the prefix, else
    /// from the stream; message cut to [`MAX_MESSAGE_BYTES`]. A line that is
    /// one JSON object gives its own level and message (`message` or
    /// `msg`) and keeps its other fields under `fields`; without a message
    /// the line itself stays the message, so nothing is lost.
    pub fn from_line(
        meta: Arc<RequestMeta>,
        stream: Stream,
        timestamp: u64,
        mut line: String,
    ) -> Self {
        let truncated = truncate_message(&mut line, MAX_MESSAGE_BYTES);
        // A cut line is no longer JSON: it stays a plain line.
        let parsed = if truncated { None } else { structured(&line) };
        let mut entry = match parsed {
            Some((level, message, fields)) => {
                let level = level.unwrap_or(stream.default_level());
                let mut entry = LogEntry::log(meta, timestamp, level, message.unwrap_or(line));
                if !fields.is_empty() {
                    entry.fields = Some(Box::new(fields));
                }
                entry
            }
            None => {
                let level = prefix_level(&line).unwrap_or(stream.default_level());
                LogEntry::log(meta, timestamp, level, line)
            }
        };
        entry.truncated = truncated;
        entry.stream = Some(stream);
        entry
    }

    /// An entry the host writes about a request (limits reached, traps).
    pub fn from_host(meta: Arc<RequestMeta>, level: Level, message: String) -> Self {
        LogEntry::log(meta, now_ms(), level, message)
    }

    /// The entry that closes a request: `info` if it went well, `error` if
    /// the guest failed or answered 5xx, `warn` if the client went away.
    /// Its message is the one-line summary a viewer shows.
    pub fn request_event(meta: Arc<RequestMeta>, event: RequestEvent) -> Self {
        let level = match (event.outcome, event.status) {
            (Outcome::Ok, Some(status)) if status < 500 => Level::Info,
            (Outcome::Canceled | Outcome::ResponseStreamDisconnected, _) => Level::Warn,
            _ => Level::Error,
        };
        let status = event.status.map_or("-".to_string(), |s| s.to_string());
        // An MCP request says what it called rather than `POST /mcp`.
        let what = match &event.mcp {
            Some(call) => call.summary(),
            None => format!("{} {}", event.method, event.path),
        };
        let message = format!(
            "{what} {status} {} ({} ms)",
            event.outcome.as_str(),
            event.wall_ms
        );
        let mut entry = LogEntry::log(meta, now_ms(), level, message);
        entry.kind = EntryKind::Request;
        entry.request = Some(Box::new(event));
        entry
    }

    /// The entry that tells a server's viewers its deployments changed;
    /// `meta.version` is the version concerned (the newest after a status
    /// change or reload).
    pub fn deploy_event(meta: Arc<RequestMeta>, event: DeployEvent, message: String) -> Self {
        let mut entry = LogEntry::log(meta, now_ms(), Level::Info, message);
        entry.kind = EntryKind::Deploy;
        entry.deploy = Some(Box::new(event));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_object_line_gives_its_level_message_and_fields() {
        let line = |text: &str| LogEntry::from_line(meta(), Stream::Stdout, 1, text.into());
        let entry = line(r#"{"level":"warning","msg":"cache miss","key":"user:42","ms":12}"#);
        assert_eq!(
            (entry.level, entry.message.as_str()),
            (Level::Warn, "cache miss")
        );
        let fields = entry.fields.as_deref().unwrap();
        assert_eq!(fields["key"], "user:42");
        assert_eq!(fields["ms"], 12);
        assert!(!fields.contains_key("level") && !fields.contains_key("msg"));

        // No message: the line stays the message; no level: the stream's.
        let entry = line(r#"{"event":"start"}"#);
        assert_eq!(
            (entry.level, entry.message.as_str()),
            (Level::Log, r#"{"event":"start"}"#)
        );
        assert_eq!(entry.fields.as_deref().unwrap()["event"], "start");
        let entry = line(r#"{"level":"nonsense","message":{"nested":true}}"#);
        assert_eq!(entry.level, Level::Log);
        assert_eq!(entry.message, r#"{"nested":true}"#);
        assert_eq!(
            entry.fields.as_deref().unwrap()["level"],
            "nonsense",
            "kept when not a level"
        );

        // Anything else is untouched.
        for plain in ["[WARN] {\"a\":1}", "[1,2]", "{not json", "\"text\""] {
            let entry = line(plain);
            assert_eq!(entry.message, plain);
            assert!(entry.fields.is_none(), "{plain}");
        }
        let json = serde_json::to_value(line(r#"{"level":"info","msg":"m","k":"v"}"#)).unwrap();
        assert_eq!(json["fields"], serde_json::json!({ "k": "v" }));
        assert_eq!(json["level"], "info");
    }

    fn meta() -> Arc<RequestMeta> {
        Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: "r".into(),
        })
    }

    #[test]
    fn stream_gives_the_level_of_a_plain_line() {
        let out = LogEntry::from_line(meta(), Stream::Stdout, 1, "plain".into());
        let err = LogEntry::from_line(meta(), Stream::Stderr, 1, "plain".into());
        assert_eq!((out.level, err.level), (Level::Log, Level::Error));
    }

    #[test]
    fn prefix_overrides_the_stream_and_stays_in_the_message() {
        let e = LogEntry::from_line(meta(), Stream::Stderr, 1, "[WARN] careful".into());
        assert_eq!(e.level, Level::Warn);
        assert_eq!(e.message, "[WARN] careful");
        assert_eq!(prefix_level("[DEBUG]x"), Some(Level::Debug));
        assert_eq!(prefix_level("[INFO]"), Some(Level::Info));
        assert_eq!(prefix_level("[ERROR] e"), Some(Level::Error));
        assert_eq!(prefix_level(" [INFO] indented"), None);
        assert_eq!(prefix_level("[info] lower case"), None);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "é".repeat(10); // 20 bytes
        assert!(truncate_message(&mut s, 5));
        assert_eq!(s, "éé");
        let mut short = "abc".to_string();
        assert!(!truncate_message(&mut short, 3));
        assert_eq!(short, "abc");
    }

    #[test]
    fn long_lines_are_cut_to_ten_kilobytes_and_flagged() {
        let e = LogEntry::from_line(meta(), Stream::Stdout, 1, "x".repeat(MAX_MESSAGE_BYTES + 1));
        assert!(e.truncated);
        assert_eq!(e.message.len(), MAX_MESSAGE_BYTES);
        let exact = LogEntry::from_line(meta(), Stream::Stdout, 1, "x".repeat(MAX_MESSAGE_BYTES));
        assert!(!exact.truncated);
    }

    #[test]
    fn entry_serializes_in_the_wire_shape() {
        let e = LogEntry::from_line(meta(), Stream::Stdout, 42, "[INFO] hi".into());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "log", "timestamp": 42, "level": "info", "message": "[INFO] hi",
                "slug": "s", "version": "1.0.0", "requestId": "r"})
        );
    }

    #[test]
    fn request_events_are_flat_with_a_summary_message() {
        let event = RequestEvent {
            method: "GET".into(),
            path: "/x".into(),
            status: Some(503),
            outcome: Outcome::ExceededCpu,
            wall_ms: 12,
            cpu_ms: 10,
            subrequests: 2,
            exception: None,
            headers: RequestHeaders::new(),
            mcp: None,
        };
        let entry = LogEntry::request_event(meta(), event);
        assert_eq!(entry.level, Level::Error);
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["type"], "request");
        assert_eq!(json["message"], "GET /x 503 exceededCpu (12 ms)");
        assert_eq!(
            (json["status"].as_u64(), json["outcome"].as_str()),
            (Some(503), Some("exceededCpu"))
        );
        assert_eq!(
            (json["wallMs"].as_u64(), json["cpuMs"].as_u64()),
            (Some(12), Some(10))
        );
        assert_eq!(json["subrequests"], 2);
    }

    #[test]
    fn entries_survive_the_trip_between_hosts() {
        let mut line = LogEntry::from_line(meta(), Stream::Stderr, 7, "[WARN] x".into());
        line.node = Some("host-a".into());
        line.seq = 41;
        line.truncated = true;
        let event = RequestEvent {
            method: "POST".into(),
            path: "/mcp".into(),
            status: None,
            outcome: Outcome::Canceled,
            wall_ms: 3,
            cpu_ms: 1,
            subrequests: 0,
            exception: None,
            headers: [("x-pick".to_string(), "yes".to_string())].into(),
            mcp: Some(McpCall {
                mcp_method: "tools/call".into(),
                mcp_name: Some("get_weather".into()),
            }),
        };
        let request = LogEntry::request_event(meta(), event.clone());
        for entry in [line, request] {
            let json = serde_json::to_string(&entry).unwrap();
            let back: LogEntry = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
        let plain: LogEntry = serde_json::from_str(
            r#"{"type":"log","timestamp":1,"level":"log","message":"m","slug":"s","version":"1","requestId":"r"}"#,
        )
        .unwrap();
        assert!(plain.request.is_none() && plain.node.is_none() && plain.seq == 0);
    }

    #[test]
    fn level_names_parse_case_insensitively() {
        assert_eq!(Level::parse("WARN"), Some(Level::Warn));
        assert_eq!(Level::parse("log"), Some(Level::Log));
        assert_eq!(Level::parse("fatal"), None);
    }
}
