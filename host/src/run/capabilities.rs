//! What a tenant may use and reach, settled once when its tenants load:
//! its effective limits (its own, else `[host]`'s), its outbound rules, and
//! its environment with the secrets' values read from their sources.
//!
//! Secret values live only here and in the guest's environment. They are
//! never printed (`Debug` says how many there are), and every entry the
//! tenant's requests produce has them replaced by `[REDACTED]`
//! (`RequestCapture::redacting`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::base::config::{HostSettings, OutboundSpec, Retention, SecretSource, TenantSpec};
use crate::logs::export::Destination;
use crate::run::gate::Gate;
use crate::run::keyvalue::{KeyValueStores, TenantStore};
use crate::run::limits::{self, Limits};

/// A tenant's settled capabilities.
pub(crate) struct Capabilities {
    pub(crate) limits: Limits,
    /// Its share of the host's instances, and its queue.
    pub(crate) gate: Gate,
    pub(crate) outbound: Arc<OutboundSpec>,
    /// `env` and the secrets, as the guest sees them.
    pub(crate) env: Vec<(String, String)>,
    /// The secrets' values, for redaction.
    pub(crate) secrets: Secrets,
    /// Set on every request before the guest sees it.
    pub(crate) request_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Host directories the guest may read: (host path, guest path).
    pub(crate) dirs: Vec<(std::path::PathBuf, String)>,
    /// Its key-value store, when granted (`run::keyvalue`).
    pub(crate) keyvalue: Option<Arc<TenantStore>>,
    /// How long its log is kept on disk, when granted (`logs::store`).
    pub(crate) retention: Option<Retention>,
    /// Where its entries are sent (`[[tenants.logs.export]]`).
    pub(crate) exports: Vec<Destination>,
}

/// Secret values: shared by every request of the tenant, never printed.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Arc<[String]>);

impl Secrets {
    pub(crate) fn values(&self) -> &Arc<[String]> {
        &self.0
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// Names only: `env` holds the secrets' values too.
impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(key, _)| key.as_str()).collect();
        f.debug_struct("Capabilities")
            .field("limits", &self.limits)
            .field("max_concurrent", &self.gate.max_concurrent())
            .field("outbound", &self.outbound)
            .field("env", &names)
            .field("secrets", &self.secrets)
            .finish()
    }
}

impl Capabilities {
    /// Settles a tenant's capabilities; each problem (a secret whose source
    /// is missing or unsafe) goes to `problems`, naming the tenant and key.
    ///
    /// `tenants` is how many tenants share the host: the default
    /// concurrency is the whole pool for one, half of it otherwise.
    pub(crate) fn settle(
        spec: &TenantSpec,
        host: &HostSettings,
        tenants: usize,
        stores: &KeyValueStores,
        problems: &mut Vec<String>,
    ) -> Capabilities {
        let limits = Limits {
            cpu: Duration::from_millis(spec.cpu_limit_ms.unwrap_or(host.cpu_limit_ms)),
            memory_bytes: limits::mib(spec.memory_limit_mb.unwrap_or(host.memory_limit_mb)),
            wall: Duration::from_millis(spec.request_timeout_ms.unwrap_or(host.request_timeout_ms)),
            body_bytes: spec
                .max_request_body_bytes
                .unwrap_or(host.max_request_body_bytes),
            reuse: spec.instance_reuse.unwrap_or(host.instance_reuse).max(1),
            concurrent_reuse: spec
                .instance_concurrent_reuse
                .unwrap_or(host.instance_concurrent_reuse)
                .max(1),
            idle: Duration::from_millis(host.idle_instance_timeout_ms),
        };
        let pool = host.max_concurrent_requests.max(1);
        let fair_share = if tenants <= 1 {
            pool
        } else {
            (pool / 2).max(1)
        };
        let max_concurrent = spec
            .max_concurrent
            .or(host.max_concurrent_per_tenant)
            .unwrap_or(fair_share) as usize;
        let max_queued = spec.max_queued.map_or(max_concurrent, |n| n as usize);
        let (env, secrets) = Self::environment(spec, problems);
        let mut request_headers = Vec::new();
        for (name, value) in &spec.request_headers {
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => request_headers.push((name, value)),
                _ => problems.push(format!("header {name}: {value:?} is not a valid header")),
            }
        }
        for (host, _) in &spec.dirs {
            if !host.is_dir() {
                problems.push(format!(
                    "--dir {}: not a directory this host can read",
                    host.display()
                ));
            }
        }
        // Every spelling a guest could print, longest first, so that a
        // form containing another is replaced whole.
        let secrets = crate::logs::redact::forms_of(&secrets);
        let exports = Destination::settle_all(
            &spec.logs.export,
            read_secret,
            |n| {
                format!(
                    "tenant {:?}: [[tenants.logs.export]] #{n}",
                    spec.slug.as_str()
                )
            },
            problems,
        );
        Capabilities {
            limits,
            gate: Gate::new(max_concurrent, max_queued),
            outbound: Arc::new(spec.outbound.clone()),
            env,
            secrets: Secrets(secrets.into()),
            request_headers,
            dirs: spec.dirs.clone(),
            keyvalue: match spec.keyvalue_max_bytes.unwrap_or(host.keyvalue_max_bytes) {
                0 => None,
                quota => Some(stores.grant(spec.slug.as_str(), quota, &spec.keyvalue_seed)),
            },
            retention: Retention::settle(&spec.logs, host.log_retain, host.log_retain_max_bytes),
            exports,
        }
    }
}

impl Capabilities {
    /// The guest's environment (`env`, then the secrets read from their
    /// sources) and the secrets' values; a secret that cannot be read goes
    /// to `problems`.
    pub(crate) fn environment(
        spec: &TenantSpec,
        problems: &mut Vec<String>,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let mut secrets = Vec::new();
        for (key, source) in &spec.secrets {
            match read_secret(source) {
                Ok(value) => {
                    if !value.is_empty() {
                        secrets.push(value.clone());
                    }
                    env.push((key.clone(), value));
                }
                Err(why) => problems.push(format!(
                    "tenant {:?}: secret {key:?}: {why}",
                    spec.slug.as_str()
                )),
            }
        }
        (env, secrets)
    }
}

/// A secret's value from its source.
pub(crate) fn read_secret(source: &SecretSource) -> Result<String, String> {
    match source {
        SecretSource::Env(name) => std::env::var(name).map_err(|_| {
            format!("the host's environment variable {name} is not set (or not UTF-8)")
        }),
        SecretSource::File(path) => {
            let shown = path.display();
            crate::base::private::check_secret_file(path)?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read file {shown}: {e}"))?;
            // Files written by `echo` end with a newline that is not part of
            // the secret.
            Ok(text.strip_suffix('\n').unwrap_or(&text).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::base::config::Config;

    fn spec(extra: &str) -> TenantSpec {
        let text = format!(
            "[[tenants]]\nslug = \"s\"\nowner = \"o\"\nstatus = \"active\"\nversions = {{ \"1.0.0\" = \"a.wasm\" }}\n{extra}"
        );
        Config::parse(&text, "t.toml", std::path::Path::new("/"))
            .unwrap()
            .tenants
            .remove(0)
    }

    #[test]
    fn limits_fall_back_to_the_hosts() {
        let host = HostSettings::default();
        let mut problems = Vec::new();
        let own = Capabilities::settle(
            &spec("cpu_limit_ms = 50"),
            &host,
            2,
            &KeyValueStores::default(),
            &mut problems,
        );
        assert_eq!(own.limits.cpu, Duration::from_millis(50));
        assert_eq!(own.limits.memory_bytes, 128 << 20);
        assert_eq!(own.gate.max_concurrent(), 500, "half the pool of 1000");
        assert!(problems.is_empty());
    }

    #[test]
    fn secrets_come_from_the_environment_or_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        std::fs::write(&private, "file-secret\n").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = dir.path().join("shared");
        std::fs::write(&shared, "x").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let extra = format!(
            "env = {{ MODE = \"test\" }}\nsecrets = {{ A = {{ file = {private:?} }}, B = {{ file = {shared:?} }}, \
             C = {{ env = \"MCTX_TEST_NEVER_SET\" }}, D = {{ env = \"PATH\" }} }}"
        );
        let mut problems = Vec::new();
        let caps = Capabilities::settle(
            &spec(&extra),
            &HostSettings::default(),
            1,
            &KeyValueStores::default(),
            &mut problems,
        );
        assert!(caps.env.contains(&("MODE".into(), "test".into())));
        assert!(caps.env.contains(&("A".into(), "file-secret".into())));
        assert!(caps.env.iter().any(|(k, _)| k == "D"));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains(r#"tenant "s": secret "B""#) && problems[0].contains("644"));
        assert!(
            problems[1].contains(r#"secret "C""#) && problems[1].contains("MCTX_TEST_NEVER_SET")
        );
        assert!(
            !format!("{caps:?}").contains("file-secret"),
            "never printed"
        );
    }
}
