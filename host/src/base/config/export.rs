//! Where a tenant's log entries are sent as they happen:
//! `[[tenants.logs.export]]` for one tenant, `[[logs.export]]` for every
//! tenant (like a Logpush job). Off unless configured: nothing leaves the
//! host by default.
//!
//! ```toml
//! [[tenants.logs.export]]
//! otlp = "https://api.honeycomb.io/v1/logs"          # OTLP/HTTP, protobuf
//! headers = { "x-honeycomb-team" = { env = "HONEYCOMB_KEY" } }
//! sampling_rate = 0.25                               # a quarter of the requests, whole
//! ```
//!
//! A header's value is text, or `{ env = "VAR" }` / `{ file = "path" }` like
//! a tenant's secrets: read by the host when the tenants load, never shown,
//! and never given to the guest.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SecretSource;

/// Entries one destination may have waiting unless it says otherwise.
pub const DEFAULT_MAX_QUEUED: usize = 10_000;

/// One export destination as written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTable {
    /// The OTLP/HTTP logs endpoint, `http(s)://host[:port]/v1/logs`.
    pub otlp: String,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValueSource>,
    /// Requests sent, 0 to 1, each whole (decided by request id, as a
    /// viewer's `samplingRate`); default 1.
    pub sampling_rate: Option<f64>,
    /// Entries waiting (the destination slow or down) before the oldest
    /// are dropped and counted.
    pub max_queued: Option<usize>,
}

/// Equal is equal: a rate that is not a number is refused by `check`.
impl Eq for ExportTable {}

/// A header value: as written, or from where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum HeaderValueSource {
    Text(String),
    Secret(SecretSource),
}

impl ExportTable {
    /// What is wrong with this destination, if anything; `name` says where
    /// it is (`tenant "x": [[tenants.logs.export]] #1`).
    pub(super) fn check(&self, name: &str, problems: &mut Vec<String>) {
        let url = &self.otlp;
        let shown = super::without_userinfo(url);
        match url.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some_and(|h| !h.is_empty()) => {}
            _ => problems.push(format!(
                "{name}: otlp = {shown:?} is not an http(s) URL (e.g. \"https://collector.example/v1/logs\")"
            )),
        }
        if let Some(rate) = self.sampling_rate
            && !(0.0..=1.0).contains(&rate)
        {
            problems.push(format!("{name}: sampling_rate {rate} must be from 0 to 1"));
        }
        if self.max_queued == Some(0) {
            problems.push(format!("{name}: max_queued must be at least 1"));
        }
        for header in self.headers.keys() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(format!("{name}: {header:?} is not a header name"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_reads_and_checks() {
        let table: ExportTable = toml::from_str(
            r#"
            otlp = "https://collector.example/v1/logs"
            headers = { "x-team" = "ours", "x-api-key" = { env = "KEY" } }
            sampling_rate = 0.5
            "#,
        )
        .unwrap();
        assert_eq!(
            table.headers["x-api-key"],
            HeaderValueSource::Secret(SecretSource::Env("KEY".into()))
        );
        assert_eq!(
            table.headers["x-team"],
            HeaderValueSource::Text("ours".into())
        );
        let mut problems = Vec::new();
        table.check("t", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let bad = ExportTable {
            otlp: "ftp://user:pw@x/v1/logs".into(),
            headers: [(
                "bad header".to_string(),
                HeaderValueSource::Text("v".into()),
            )]
            .into(),
            sampling_rate: Some(2.0),
            max_queued: Some(0),
        };
        bad.check("t", &mut problems);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            !problems[0].contains("pw"),
            "the URL is shown without its userinfo"
        );
    }
}
