//! Which entries a viewer wants, from its query (`?level=warn,error&search=…`,
//! `mctx-host tail --level …`): parsed once, applied in the host before
//! anything is sent, and encoded back into a query by `tail`.

use crate::logs::entry::{EntryKind, Level, LogEntry, Outcome, RequestEvent, RequestHeaders};

/// The items of a comma-separated query value (`warn,error`), empty ones
/// skipped.
fn list_items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').filter(|item| !item.is_empty())
}

/// Which entries a viewer wants; applied in the host, before sending.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// Only these levels (empty: all).
    pub(crate) levels: Vec<Level>,
    /// Only messages (or structured fields, names or values) containing this
    /// text, case-insensitively (lower case).
    pub(crate) search: Option<String>,
    pub(crate) request_id: Option<String>,
    pub(crate) kind: Option<EntryKind>,
    /// Only a sample of the requests: parts per million (`samplingRate`).
    pub(crate) sample: Option<Sample>,
    /// Only requests that ended so (`status=ok,error`; empty: all).
    pub(crate) statuses: Vec<StatusClass>,
    /// Only requests with one of these methods, upper case (empty: all).
    pub(crate) methods: Vec<String>,
    /// Only requests carrying every one of these headers.
    pub(crate) headers: Vec<HeaderMatch>,
    /// Only MCP requests with one of these methods (`tools/call`), as
    /// their `Mcp-Method` header says (empty: all).
    pub(crate) mcp_methods: Vec<String>,
}

/// How a request ended, in `wrangler tail --status`'s three words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusClass {
    /// The guest finished (whatever status it answered).
    Ok,
    /// The guest failed: an exception or a limit (CPU, memory, wall time).
    Error,
    /// The client went away, before the response or during its body.
    Canceled,
}

impl StatusClass {
    pub(crate) fn of(outcome: Outcome) -> StatusClass {
        match outcome {
            Outcome::Ok => StatusClass::Ok,
            Outcome::Exception
            | Outcome::ExceededCpu
            | Outcome::ExceededMemory
            | Outcome::ExceededWallTime => StatusClass::Error,
            Outcome::Canceled | Outcome::ResponseStreamDisconnected => StatusClass::Canceled,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StatusClass::Ok => "ok",
            StatusClass::Error => "error",
            StatusClass::Canceled => "canceled",
        }
    }

    pub(crate) fn parse(name: &str) -> Result<StatusClass, String> {
        [StatusClass::Ok, StatusClass::Error, StatusClass::Canceled]
            .into_iter()
            .find(|class| class.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown status {name:?}: use ok, error or canceled"))
    }
}

/// `NAME` (the request has the header) or `NAME:VALUE` (with exactly this
/// value, surrounding spaces aside); names case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HeaderMatch {
    /// Lower case.
    pub(crate) name: String,
    pub(crate) value: Option<String>,
}

impl HeaderMatch {
    pub(crate) fn parse(text: &str) -> Result<HeaderMatch, String> {
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name.trim(), Some(value.trim().to_string())),
            None => (text.trim(), None),
        };
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("header filter {text:?}: use NAME or NAME:VALUE"));
        }
        Ok(HeaderMatch {
            name: name.to_ascii_lowercase(),
            value,
        })
    }

    fn matches(&self, headers: &RequestHeaders) -> bool {
        headers.get(&self.name).is_some_and(|value| {
            self.value
                .as_deref()
                .is_none_or(|wanted| value.split(", ").any(|one| one == wanted) || value == wanted)
        })
    }

    fn to_query(&self) -> String {
        match &self.value {
            Some(value) => format!("{}:{value}", self.name),
            None => self.name.clone(),
        }
    }
}

/// A sample of requests, decided by request id alone, so that every
/// viewer and every host with the same rate picks the same requests, and
/// a picked request comes with all its entries: a request is in a sample of
/// rate `r` when its id, read as a 64-bit hexadecimal number, is below
/// `r × 2^64` (an id that is not one is hashed). Entries of no request
/// (`deploy`) are always in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sample {
    pub(crate) per_million: u32,
}

impl Sample {
    pub(crate) fn parse(text: &str) -> Result<Sample, String> {
        let rate: f64 = text
            .parse()
            .ok()
            .filter(|r: &f64| (0.0..=1.0).contains(r))
            .ok_or_else(|| format!("sampling rate {text:?}: use a number from 0 to 1"))?;
        Ok(Sample {
            per_million: (rate * 1e6).round() as u32,
        })
    }

    pub(crate) fn rate(self) -> f64 {
        f64::from(self.per_million) / 1e6
    }

    pub(crate) fn picks(self, request_id: &str) -> bool {
        if request_id.is_empty() {
            return true;
        }
        let value = u64::from_str_radix(request_id, 16).unwrap_or_else(|_| {
            // FNV-1a: ids from elsewhere that are not 64-bit hex.
            request_id
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                    (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
                })
        });
        // In integers: floats cannot tell 2^63 - 1 from 2^63.
        u128::from(value) < (u128::from(self.per_million) << 64) / 1_000_000
    }
}

impl Filter {
    pub(crate) fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether the filter asks how a request ended (its status, method or
    /// headers, all on its closing event): then its lines wait for that
    /// event before they can be sent, or not (`hub::held`).
    pub(crate) fn by_request(&self) -> bool {
        !self.statuses.is_empty()
            || !self.methods.is_empty()
            || !self.headers.is_empty()
            || !self.mcp_methods.is_empty()
    }

    /// Whether a finished request is one the viewer asked for.
    pub(crate) fn request_matches(&self, event: &RequestEvent) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&StatusClass::of(event.outcome)))
            && (self.methods.is_empty() || self.methods.contains(&event.method))
            && self.headers.iter().all(|h| h.matches(&event.headers))
            && (self.mcp_methods.is_empty()
                || event
                    .mcp
                    .as_ref()
                    .is_some_and(|call| self.mcp_methods.contains(&call.mcp_method)))
    }

    /// Whether an entry passes the filters that need nothing but the
    /// entry (all but [`by_request`](Filter::by_request)'s).
    pub(crate) fn matches(&self, entry: &LogEntry) -> bool {
        (self.levels.is_empty() || self.levels.contains(&entry.level))
            && self.kind.is_none_or(|kind| kind == entry.kind)
            && self
                .request_id
                .as_deref()
                .is_none_or(|id| id == entry.meta.request_id)
            && self
                .sample
                .is_none_or(|sample| sample.picks(&entry.meta.request_id))
            && self.search.as_deref().is_none_or(|needle| {
                entry.message.to_lowercase().contains(needle)
                    || entry.fields.as_ref().is_some_and(|fields| {
                        fields.iter().any(|(key, value)| {
                            key.to_lowercase().contains(needle)
                                || match value {
                                    serde_json::Value::String(text) => {
                                        text.to_lowercase().contains(needle)
                                    }
                                    other => other.to_string().to_lowercase().contains(needle),
                                }
                        })
                    })
            })
    }

    /// Parses a comma-separated list of level names (`warn,error`).
    pub(crate) fn parse_levels(list: &str) -> Result<Vec<Level>, String> {
        list_items(list)
            .map(|name| {
                Level::parse(name).ok_or_else(|| {
                    format!("unknown level {name:?}: use log, info, warn, error or debug")
                })
            })
            .collect()
    }

    /// Parses `level=warn,error&search=text&requestId=…&type=log|request|deploy
    /// &samplingRate=0.1&status=ok,error,canceled&method=GET,POST
    /// &header=NAME[:VALUE]&mcpMethod=tools/call,prompts/get` (`header` may
    /// repeat; unknown parameters are ignored).
    pub(crate) fn from_query(query: &str) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "level" => filter.levels.extend(Filter::parse_levels(&value)?),
                "search" if !value.is_empty() => filter.search = Some(value.to_lowercase()),
                "requestId" if !value.is_empty() => filter.request_id = Some(value.into_owned()),
                "type" => {
                    let kind = EntryKind::parse(&value).ok_or_else(|| {
                        format!("unknown type {value:?}: use log, request or deploy")
                    })?;
                    filter.kind = Some(kind);
                }
                "samplingRate" => filter.sample = Some(Sample::parse(&value)?),
                "status" => {
                    for name in list_items(&value) {
                        filter.statuses.push(StatusClass::parse(name)?);
                    }
                }
                "method" => filter
                    .methods
                    .extend(list_items(&value).map(str::to_ascii_uppercase)),
                "header" => filter.headers.push(HeaderMatch::parse(&value)?),
                "mcpMethod" => filter
                    .mcp_methods
                    .extend(list_items(&value).map(str::to_string)),
                _ => {}
            }
        }
        Ok(filter)
    }

    /// The query string [`from_query`](Filter::from_query) reads back.
    pub(crate) fn to_query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if !self.levels.is_empty() {
            let names: Vec<&str> = self.levels.iter().map(|l| l.as_str()).collect();
            query.append_pair("level", &names.join(","));
        }
        if let Some(search) = &self.search {
            query.append_pair("search", search);
        }
        if let Some(id) = &self.request_id {
            query.append_pair("requestId", id);
        }
        if let Some(kind) = self.kind {
            query.append_pair("type", kind.as_str());
        }
        if let Some(sample) = self.sample {
            query.append_pair("samplingRate", &sample.rate().to_string());
        }
        if !self.statuses.is_empty() {
            let names: Vec<&str> = self.statuses.iter().map(|s| s.as_str()).collect();
            query.append_pair("status", &names.join(","));
        }
        if !self.methods.is_empty() {
            query.append_pair("method", &self.methods.join(","));
        }
        for header in &self.headers {
            query.append_pair("header", &header.to_query());
        }
        if !self.mcp_methods.is_empty() {
            query.append_pair("mcpMethod", &self.mcp_methods.join(","));
        }
        query.finish()
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    #[test]
    fn a_sample_is_decided_by_the_request_id_alone() {
        let half = Sample::parse("0.5").unwrap();
        assert!(half.picks("0000000000000000"));
        assert!(half.picks("7fffffffffffffff"));
        assert!(!half.picks("8000000000000001"));
        assert!(!half.picks("ffffffffffffffff"));
        assert!(half.picks(""), "entries of no request are always in");
        assert!(!Sample::parse("0").unwrap().picks("0000000000000001"));
        assert!(Sample::parse("1").unwrap().picks("ffffffffffffffff"));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(Sample::parse(bad).is_err(), "{bad}");
        }
        let filter = Filter::from_query("samplingRate=0.25").unwrap();
        assert_eq!(
            filter.sample,
            Some(Sample {
                per_million: 250_000
            })
        );
        assert_eq!(Filter::from_query(&filter.to_query()).unwrap(), filter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    fn entry(request_id: &str, stream: Stream, line: &str) -> LogEntry {
        let meta = std::sync::Arc::new(RequestMeta {
            slug: "s".into(),
            version: "1.0.0".into(),
            request_id: request_id.into(),
        });
        LogEntry::from_line(meta, stream, 1, line.into())
    }

    #[test]
    fn filters_match_level_kind_request_and_text() {
        let warn = entry("r1", Stream::Stderr, "[WARN] Disk Almost Full");
        let log = entry("r2", Stream::Stdout, "plain");
        let by_level = Filter {
            levels: vec![Level::Warn],
            ..Filter::default()
        };
        assert!(by_level.matches(&warn) && !by_level.matches(&log));
        let by_text = Filter {
            search: Some("almost".into()),
            ..Filter::default()
        };
        assert!(by_text.matches(&warn) && !by_text.matches(&log));
        let by_id = Filter {
            request_id: Some("r2".into()),
            ..Filter::default()
        };
        assert!(!by_id.matches(&warn) && by_id.matches(&log));
        let requests = Filter {
            kind: Some(EntryKind::Request),
            ..Filter::default()
        };
        assert!(!requests.matches(&log));
        assert!(Filter::default().is_empty() && !requests.is_empty());
    }

    #[test]
    fn filters_parse_from_the_query_and_encode_back() {
        let f = Filter::from_query("level=warn,ERROR&search=Tool%20Called&requestId=abc&type=log")
            .unwrap();
        assert_eq!(f.levels, [Level::Warn, Level::Error]);
        assert_eq!(f.search.as_deref(), Some("tool called"));
        assert_eq!(f.request_id.as_deref(), Some("abc"));
        assert_eq!(f.kind, Some(EntryKind::Log));
        assert_eq!(
            f.to_query(),
            "level=warn%2Cerror&search=tool+called&requestId=abc&type=log"
        );
        assert_eq!(Filter::from_query(&f.to_query()).unwrap(), f);
        assert!(Filter::from_query("").unwrap().is_empty());
        assert!(
            Filter::from_query("level=loud")
                .unwrap_err()
                .contains("loud")
        );
        assert!(Filter::from_query("type=x").is_err());
    }

    #[test]
    fn request_filters_judge_the_closing_event() {
        let f =
            Filter::from_query("status=error,Canceled&method=post&header=X-Pick:yes&header=x-any")
                .unwrap();
        assert_eq!(f.statuses, [StatusClass::Error, StatusClass::Canceled]);
        assert_eq!(f.methods, ["POST"]);
        assert_eq!(Filter::from_query(&f.to_query()).unwrap(), f);
        assert!(f.by_request() && !Filter::default().by_request());
        let event = |method: &str, outcome, headers: &[(&str, &str)]| RequestEvent {
            method: method.into(),
            path: "/".into(),
            status: Some(500),
            outcome,
            wall_ms: 1,
            cpu_ms: 1,
            subrequests: 0,
            exception: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            mcp: None,
        };
        let both = [("x-pick", "yes"), ("x-any", "")];
        assert!(f.request_matches(&event("POST", Outcome::Exception, &both)));
        assert!(f.request_matches(&event("POST", Outcome::ResponseStreamDisconnected, &both)));
        assert!(
            !f.request_matches(&event("POST", Outcome::Ok, &both)),
            "status"
        );
        assert!(
            !f.request_matches(&event("GET", Outcome::Exception, &both)),
            "method"
        );
        let wrong = [("x-pick", "no"), ("x-any", "1")];
        assert!(
            !f.request_matches(&event("POST", Outcome::Exception, &wrong)),
            "value"
        );
        assert!(
            !f.request_matches(&event("POST", Outcome::Exception, &both[..1])),
            "name"
        );
        let tools = Filter::from_query("mcpMethod=tools/call").unwrap();
        assert_eq!(Filter::from_query(&tools.to_query()).unwrap(), tools);
        let mut call = event("POST", Outcome::Ok, &[]);
        assert!(!tools.request_matches(&call), "not an MCP request");
        call.mcp = Some(crate::logs::entry::McpCall {
            mcp_method: "tools/call".into(),
            mcp_name: Some("get_weather".into()),
        });
        assert!(tools.request_matches(&call));
        assert!(
            Filter::from_query("status=fine")
                .unwrap_err()
                .contains("fine")
        );
        assert!(Filter::from_query("header=bad%20name").is_err());
    }
}
