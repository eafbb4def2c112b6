//! Entries as OTLP log records (the OpenTelemetry project's own protobuf
//! types, `opentelemetry-proto`), one `ResourceLogs` per tenant version:
//!
//! | entry | record |
//! |---|---|
//! | `timestamp` (ms) | `time_unix_nano`, `observed_time_unix_nano` |
//! | `level` | `severity_number` (debug 5, log and info 9, warn 13, error 17), `severity_text` |
//! | `message` | `body` (a string) |
//! | slug, version, node | resource `service.name`, `service.version`, `host.name` |
//! | `requestId`, `seq`, `type`, `truncated` | attributes `request.id`, `log.seq`, `log.type`, `log.truncated` |
//! | a request event | `http.request.method`, `url.path`, `http.response.status_code`, `mctx.outcome`, `mctx.wall_ms`, `mctx.cpu_ms`, `mcp.method.name`, `mcp.tool.name`, `exception.type`, `exception.message`, `exception.stacktrace` |
//! | a structured line's fields | attributes of their own names (ours win a clash) |

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use crate::logs::entry::{Level, LogEntry};

fn text(value: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn int(value: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::IntValue(value)),
    })
}

fn attribute(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
        ..KeyValue::default()
    }
}

/// A structured field's value as OTLP has it.
fn json_value(value: &serde_json::Value) -> Option<AnyValue> {
    use serde_json::Value as Json;
    let value = match value {
        Json::String(text) => any_value::Value::StringValue(text.clone()),
        Json::Bool(b) => any_value::Value::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    };
    Some(AnyValue { value: Some(value) })
}

fn severity(level: Level) -> SeverityNumber {
    match level {
        Level::Debug => SeverityNumber::Debug,
        Level::Log | Level::Info => SeverityNumber::Info,
        Level::Warn => SeverityNumber::Warn,
        Level::Error => SeverityNumber::Error,
    }
}

/// One entry as a record.
fn record(entry: &LogEntry) -> LogRecord {
    let nanos = entry.timestamp.saturating_mul(1_000_000);
    let mut attributes = vec![
        attribute("request.id", text(&entry.meta.request_id)),
        attribute("log.type", text(entry.kind.as_str())),
    ];
    if entry.seq > 0 {
        attributes.push(attribute("log.seq", int(entry.seq as i64)));
    }
    if entry.truncated {
        attributes.push(attribute(
            "log.truncated",
            Some(AnyValue {
                value: Some(any_value::Value::BoolValue(true)),
            }),
        ));
    }
    if let Some(event) = &entry.request {
        attributes.push(attribute("http.request.method", text(&event.method)));
        attributes.push(attribute("url.path", text(&event.path)));
        if let Some(status) = event.status {
            attributes.push(attribute(
                "http.response.status_code",
                int(i64::from(status)),
            ));
        }
        attributes.push(attribute("mctx.outcome", text(event.outcome.as_str())));
        attributes.push(attribute("mctx.wall_ms", int(event.wall_ms as i64)));
        attributes.push(attribute("mctx.cpu_ms", int(event.cpu_ms as i64)));
        if let Some(call) = &event.mcp {
            attributes.push(attribute("mcp.method.name", text(&call.mcp_method)));
            if let Some(name) = &call.mcp_name {
                attributes.push(attribute("mcp.tool.name", text(name)));
            }
        }
        if let Some(exception) = &event.exception {
            attributes.push(attribute("exception.type", text(&exception.name)));
            attributes.push(attribute("exception.message", text(&exception.message)));
            attributes.push(attribute(
                "exception.stacktrace",
                text(exception.stack.join("\n")),
            ));
        }
    }
    if let Some(fields) = &entry.fields {
        for (key, value) in fields.iter() {
            if !attributes.iter().any(|a| &a.key == key) {
                attributes.push(attribute(key, json_value(value)));
            }
        }
    }
    LogRecord {
        time_unix_nano: nanos,
        observed_time_unix_nano: nanos,
        severity_number: severity(entry.level) as i32,
        severity_text: entry.level.as_str().to_string(),
        body: text(&entry.message),
        attributes,
        ..LogRecord::default()
    }
}

/// The request a batch becomes: entries grouped by tenant, version and
/// node, in their order.
pub(super) fn request(entries: &[LogEntry]) -> ExportLogsServiceRequest {
    let mut resources: Vec<ResourceLogs> = Vec::new();
    let mut keys: Vec<(&str, &str, Option<&str>)> = Vec::new();
    for entry in entries {
        let key = (
            entry.meta.slug.as_str(),
            entry.meta.version.as_str(),
            entry.node.as_deref(),
        );
        let index = match keys.iter().position(|k| *k == key) {
            Some(index) => index,
            None => {
                keys.push(key);
                let mut attributes = vec![
                    attribute("service.name", text(key.0)),
                    attribute("service.version", text(key.1)),
                ];
                if let Some(node) = key.2 {
                    attributes.push(attribute("host.name", text(node)));
                }
                resources.push(ResourceLogs {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "mctx-host".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..InstrumentationScope::default()
                        }),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                });
                resources.len() - 1
            }
        };
        resources[index].scope_logs[0]
            .log_records
            .push(record(entry));
    }
    ExportLogsServiceRequest {
        resource_logs: resources,
    }
}

/// A batch as the body of a POST: protobuf, gzipped.
pub(super) fn body(entries: &[LogEntry]) -> Vec<u8> {
    let encoded = request(entries).encode_to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&encoded).expect("writing to memory");
    gzip.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::logs::entry::{RequestMeta, Stream};

    #[test]
    fn entries_become_records_under_their_tenant() {
        let meta = |slug: &str| {
            Arc::new(RequestMeta {
                slug: slug.into(),
                version: "1.0.0".into(),
                request_id: "abc".into(),
            })
        };
        let mut warn = LogEntry::from_line(
            meta("s"),
            Stream::Stderr,
            1_700_000_000_123,
            r#"{"level":"warn","msg":"cache miss","key":"user:42","ms":12}"#.into(),
        );
        warn.seq = 7;
        let other = LogEntry::from_line(meta("t"), Stream::Stdout, 1, "hi".into());
        let request = request(&[warn, other]);
        assert_eq!(request.resource_logs.len(), 2, "one resource per tenant");
        let resource = &request.resource_logs[0];
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(attributes[0].key, "service.name");
        assert_eq!(attributes[0].value, text("s"));
        let record = &resource.scope_logs[0].log_records[0];
        assert_eq!(record.time_unix_nano, 1_700_000_000_123_000_000);
        assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(record.severity_text, "warn");
        assert_eq!(record.body, text("cache miss"));
        let find = |key: &str| {
            record
                .attributes
                .iter()
                .find(|a| a.key == key)
                .and_then(|a| a.value.clone())
        };
        assert_eq!(find("request.id"), text("abc"));
        assert_eq!(find("log.seq"), int(7));
        assert_eq!(find("key"), text("user:42"));
        assert_eq!(find("ms"), int(12));
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&body(&[])[..]),
            &mut plain,
        )
        .unwrap();
        let decoded = ExportLogsServiceRequest::decode(&*plain).unwrap();
        assert!(decoded.resource_logs.is_empty());
    }
}
