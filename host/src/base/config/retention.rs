//! Log retention as the tenants file grants it: `[host] log_retain` and
//! `log_retain_max_bytes` for every tenant, `[tenants.logs]` for one.
//!
//! Off unless granted: the contract's default is that nothing is stored
//! (`server-logs.txt`, "Logs are not stored"). Granted, a tenant's entries
//! are kept for `retain` and at most `max_bytes` of them, oldest dropped
//! first (`logs::store`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The most a tenant's log may be kept: past a month, a log is an archive,
/// and an archive belongs in an export destination.
pub(super) const MAX_RETAIN: Duration = Duration::from_secs(31 * 86_400);

/// A tenant's bytes of stored entries unless its table says otherwise.
pub(super) const DEFAULT_RETAIN_MAX_BYTES: u64 = 64 << 20;

/// The `[tenants.logs]` table: this tenant's retention, over `[host]`'s.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLogs {
    /// How long entries are kept (`"24h"`, `"7d"`; `"0"`: not at all).
    #[serde(deserialize_with = "some_duration")]
    pub retain: Option<Duration>,
    /// Bytes of entries kept (as they are sent to viewers, JSON); 0: none.
    pub max_bytes: Option<u64>,
    /// Where its entries are sent as they happen (`[[tenants.logs.export]]`).
    pub export: Vec<super::ExportTable>,
}

/// What a tenant's log is kept for, once settled: `None` when not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub age: Duration,
    pub max_bytes: u64,
}

impl Retention {
    /// The tenant's own settings over the host's; `None` when either says
    /// 0.
    pub fn settle(
        tenant: &TenantLogs,
        host_retain: Duration,
        host_max_bytes: u64,
    ) -> Option<Retention> {
        let age = tenant.retain.unwrap_or(host_retain);
        let max_bytes = tenant.max_bytes.unwrap_or(host_max_bytes);
        (!age.is_zero() && max_bytes > 0).then_some(Retention { age, max_bytes })
    }

    /// The problem with a retention of `age`, if any; `key` names it.
    pub(super) fn check(key: &str, age: Duration, problems: &mut Vec<String>) {
        if age > MAX_RETAIN {
            let secs = age.as_secs();
            let given = if secs.is_multiple_of(86_400) {
                format!("{}d", secs / 86_400)
            } else {
                humantime::format_duration(age).to_string()
            };
            problems.push(format!(
                "{key} = {given:?} is longer than the {} days a log is kept at most: \
                 send older logs to an export destination",
                MAX_RETAIN.as_secs() / 86_400
            ));
        }
    }
}

/// `"24h"`, `"7d"`, `"90m"`, `"0"`: a duration as people write one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}): write one such as \"24h\", \"7d\" or \"0\"")
    })
}

pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration in quotes, such as \"24h\", \"7d\" or \"0\"")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(Text)
}

fn some_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_overrides_the_host_and_zero_turns_it_off() {
        let day = Duration::from_secs(86_400);
        let none = TenantLogs::default();
        assert_eq!(Retention::settle(&none, Duration::ZERO, 1 << 20), None);
        assert_eq!(
            Retention::settle(&none, day, 1 << 20),
            Some(Retention {
                age: day,
                max_bytes: 1 << 20
            })
        );
        let off = TenantLogs {
            retain: Some(Duration::ZERO),
            ..TenantLogs::default()
        };
        assert_eq!(Retention::settle(&off, day, 1 << 20), None);
        let small = TenantLogs {
            max_bytes: Some(0),
            ..TenantLogs::default()
        };
        assert_eq!(Retention::settle(&small, day, 1 << 20), None);
        let own = TenantLogs {
            retain: Some(Duration::from_secs(3600)),
            max_bytes: Some(4096),
            ..TenantLogs::default()
        };
        assert_eq!(
            Retention::settle(&own, Duration::ZERO, 0),
            Some(Retention {
                age: Duration::from_secs(3600),
                max_bytes: 4096
            })
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let refused = parse_duration("a day").unwrap_err();
        assert!(refused.contains("\"24h\""), "{refused}");
    }
}
