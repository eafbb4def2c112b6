//! Settling the configuration: one place, in both modes, at start and on
//! every reload.
//!
//! A setting has three possible sources, and the later wins: its default,
//! the tenants file, and the command line (our flags, `wasmtime serve`'s,
//! and the `MCTX_*` variables). [`Layers::settle`] lays them over each
//! other into one [`Draft`] and only then checks it, with the checks of
//! `tables.rs` and `tenant.rs`; so each rule is written once and a value
//! from a flag is held to the same rule as one from the file. A problem
//! with a value a flag gave names the flag.
//!
//! A reload settles the same [`Layers`] again: the command line still wins
//! over the edited file, as it did at start.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use semver::Version;

use super::{
    AllowList, AuthSettings, ClusterSettings, Config, Draft, HostSettings, MetricsSettings, Slug,
    TenantSpec,
};

/// What a configuration is settled from.
#[derive(Clone, Debug)]
pub struct Layers {
    pub base: Base,
    /// The command line's settings, over the base.
    pub over: Overrides,
}

/// What the command line's settings go over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    /// A tenants file: multi-tenant mode.
    File(PathBuf),
    /// One component served alone as tenant `slug`, owned by `local`, every
    /// table at its default: single-component mode.
    Component { slug: Slug, component: PathBuf },
}

/// Settings from the command line, applied in the order they were added.
#[derive(Clone, Default)]
pub struct Overrides {
    settings: Vec<Setting>,
    /// What tenants get beyond their tables.
    pub tenants: TenantExtras,
}

/// One setting: what it changes, and who asked.
#[derive(Clone)]
struct Setting {
    /// The flag or variable that gave the value, for messages.
    flag: &'static str,
    /// The key, as the checks name it (`[host] cpu_limit_ms`): a problem
    /// that starts with it, then a space, is this flag's.
    key: &'static str,
    apply: Arc<Apply>,
}

/// Changes a draft, or says why it cannot (a problem, as the checks word them).
type Apply = dyn Fn(&mut Draft) -> Result<(), String> + Send + Sync;

/// What the command line grants tenants that their tables cannot say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantExtras {
    /// `-S inherit-network`: every tenant of the file may call any public
    /// address (`allowed_outbound_hosts = ["*://*:*"]`).
    pub any_outbound: bool,
    /// `--env` and `-S inherit-env` (single-component mode).
    pub env: BTreeMap<String, String>,
    /// `--header` (single-component mode).
    pub request_headers: Vec<(String, String)>,
    /// `--dir`, as (host path, guest path) (single-component mode).
    pub dirs: Vec<(PathBuf, String)>,
    /// `-S keyvalue-in-memory-data` (single-component mode).
    pub keyvalue_seed: BTreeMap<String, String>,
}

impl TenantExtras {
    /// Whether any extra is one only single-component mode takes.
    fn single_only(&self) -> bool {
        !(self.env.is_empty()
            && self.request_headers.is_empty()
            && self.dirs.is_empty()
            && self.keyvalue_seed.is_empty())
    }

    fn grant(&self, tenant: &mut TenantSpec) {
        if self.any_outbound {
            tenant.outbound.allowed = AllowList::parse(&["*://*:*".to_string()]).expect("valid");
        }
        tenant.env.extend(self.env.clone());
        tenant
            .request_headers
            .extend(self.request_headers.iter().cloned());
        tenant.dirs.extend(self.dirs.iter().cloned());
        tenant.keyvalue_seed.extend(self.keyvalue_seed.clone());
    }
}

impl Overrides {
    /// Sets something in `[host]`; `key` is how the checks name it.
    pub fn host(
        &mut self,
        flag: &'static str,
        key: &'static str,
        set: impl Fn(&mut HostSettings) + Send + Sync + 'static,
    ) {
        self.push(flag, key, move |draft| {
            set(&mut draft.host);
            Ok(())
        });
    }

    /// Sets something in `[auth]`.
    pub fn auth(
        &mut self,
        flag: &'static str,
        key: &'static str,
        set: impl Fn(&mut AuthSettings) + Send + Sync + 'static,
    ) {
        self.push(flag, key, move |draft| {
            set(&mut draft.auth);
            Ok(())
        });
    }

    /// Sets something in `[metrics]`.
    pub fn metrics(
        &mut self,
        flag: &'static str,
        key: &'static str,
        set: impl Fn(&mut MetricsSettings) + Send + Sync + 'static,
    ) {
        self.push(flag, key, move |draft| {
            set(&mut draft.metrics);
            Ok(())
        });
    }

    /// Makes the host a cluster member through `url` (a `[cluster]` table
    /// with every other value defaulted, if the file has none).
    pub fn join_cluster(&mut self, flag: &'static str, url: String) {
        self.push(flag, "[cluster] nats_url", move |draft| {
            let cluster = draft
                .cluster
                .get_or_insert_with(|| ClusterSettings::new(url.clone()));
            cluster.nats_url = super::CredentialUrl::new(url.clone());
            Ok(())
        });
    }

    /// Sets something in `[cluster]`, which the file or
    /// [`join_cluster`](Self::join_cluster) must have made.
    pub fn cluster(
        &mut self,
        flag: &'static str,
        key: &'static str,
        set: impl Fn(&mut ClusterSettings) + Send + Sync + 'static,
    ) {
        self.push(flag, key, move |draft| match &mut draft.cluster {
            Some(cluster) => {
                set(cluster);
                Ok(())
            }
            None => Err(format!(
                "{flag} is for a cluster: add --nats-url or a [cluster] table"
            )),
        });
    }

    fn push(
        &mut self,
        flag: &'static str,
        key: &'static str,
        apply: impl Fn(&mut Draft) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.settings.push(Setting {
            flag,
            key,
            apply: Arc::new(apply),
        });
    }
}

/// Names each setting; the values may be secrets.
impl fmt::Debug for Overrides {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides")
            .field(
                "settings",
                &self.settings.iter().map(|s| s.flag).collect::<Vec<_>>(),
            )
            .field("tenants", &self.tenants)
            .finish()
    }
}

impl Layers {
    /// A tenants file with nothing over it.
    pub fn file(path: PathBuf) -> Layers {
        Layers {
            base: Base::File(path),
            over: Overrides::default(),
        }
    }

    /// The configuration, or every problem with it at once.
    pub fn settle(&self) -> Result<Config> {
        let (mut draft, source, dir) = match &self.base {
            Base::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                let source = path.display().to_string();
                let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                let draft = Draft::read(&text, &source, &dir)?;
                if draft.auth.session_secret.is_some() {
                    // Whoever reads this file can sign in as anyone.
                    crate::base::private::check_secret_file(path)
                        .map_err(|e| anyhow::anyhow!("[auth] session_secret: {e}"))?;
                }
                (draft, source, dir)
            }
            Base::Component { .. } => (Draft::default(), "command line".to_string(), ".".into()),
        };
        let mut problems = Vec::new();
        for setting in &self.over.settings {
            if let Err(problem) = (setting.apply)(&mut draft) {
                problems.push(problem);
            }
        }
        let mut config = draft.check(&source, &dir, &mut problems);
        let extras = &self.over.tenants;
        match &self.base {
            Base::Component { slug, component } => config.tenants.push(TenantSpec::new(
                slug.clone(),
                "local",
                [(Version::new(0, 0, 0), component.clone())].into(),
            )),
            Base::File(_) if extras.single_only() => problems.push(
                "--env, --dir, --header, -S inherit-env and -S keyvalue-in-memory-data are for \
                 single-component mode; in a tenants file use each tenant's env, secrets, \
                 allowed_outbound_hosts and keyvalue_max_bytes"
                    .to_string(),
            ),
            Base::File(_) => {}
        }
        for tenant in &mut config.tenants {
            extras.grant(tenant);
            let store = tenant
                .keyvalue_max_bytes
                .unwrap_or(config.host.keyvalue_max_bytes);
            if !tenant.keyvalue_seed.is_empty() && store == 0 {
                problems.push(
                    "-S keyvalue-in-memory-data fills the component's key-value store: add -S keyvalue"
                        .to_string(),
                );
            }
        }
        refuse_if_any(&source, problems, &self.over.settings)?;
        Ok(config)
    }
}

/// Fails with every problem, each from a flag naming it.
fn refuse_if_any(source: &str, problems: Vec<String>, settings: &[Setting]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .into_iter()
        .map(|problem| {
            match settings.iter().rev().find(|s| {
                problem
                    .strip_prefix(s.key)
                    .is_some_and(|rest| rest.starts_with(' '))
            }) {
                Some(setting) => format!("{problem} (given by {})", setting.flag),
                None => problem,
            }
        })
        .collect();
    bail!(
        "{source}: invalid configuration:\n  - {}",
        lines.join("\n  - ")
    )
}

pub(super) fn refuse_if_any_in(source: &str, problems: Vec<String>) -> Result<()> {
    refuse_if_any(source, problems, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "[[tenants]]\nslug = \"a\"\nowner = \"o\"\nstatus = \"active\"\nversions = { \"1.0.0\" = \"a.wasm\" }\n";

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn cpu_limit(ms: u64) -> Overrides {
        let mut over = Overrides::default();
        over.host("--cpu-limit-ms", "[host] cpu_limit_ms", move |host| {
            host.cpu_limit_ms = ms;
        });
        over
    }

    #[test]
    fn the_command_line_wins_over_the_file_at_start_and_on_reload() {
        let (_dir, path) = file_with(&format!("[host]\ncpu_limit_ms = 50\n{TENANT}"));
        let mut layers = Layers::file(path.clone());
        layers.over = cpu_limit(70);
        layers.over.tenants.any_outbound = true;
        let config = layers.settle().unwrap();
        assert_eq!(config.host.cpu_limit_ms, 70);
        assert!(!config.tenants[0].outbound.allowed.is_empty());

        std::fs::write(
            &path,
            format!(
                "[host]\ncpu_limit_ms = 60\n{}",
                TENANT.replace("\"a\"", "\"b\"")
            ),
        )
        .unwrap();
        let reloaded = layers.settle().unwrap();
        assert_eq!(reloaded.host.cpu_limit_ms, 70);
        assert_eq!(reloaded.tenants[0].slug.as_str(), "b");
        assert!(!reloaded.tenants[0].outbound.allowed.is_empty());
        assert_eq!(Config::load(&path).unwrap().host.cpu_limit_ms, 60);
    }

    #[test]
    fn a_flags_value_is_held_to_the_files_rule_and_named() {
        let (_dir, path) = file_with(TENANT);
        let mut layers = Layers::file(path);
        layers.over = cpu_limit(0);
        layers
            .over
            .host("--max-instance-reuse-count", "[host] instance_reuse", |h| {
                h.instance_reuse = 0;
            });
        let err = layers.settle().unwrap_err().to_string();
        assert!(
            err.contains("[host] cpu_limit_ms must be at least 1 (given by --cpu-limit-ms)"),
            "{err}"
        );
        assert!(
            err.contains("instance_reuse must be at least 1 (1: a fresh instance per request) (given by --max-instance-reuse-count)"),
            "{err}"
        );
    }

    #[test]
    fn a_files_problem_is_not_blamed_on_a_flag_whose_key_is_a_prefix() {
        let (_dir, path) = file_with(&format!("[host]\nmax_connections_per_ip = 0\n{TENANT}"));
        let mut layers = Layers::file(path);
        layers
            .over
            .host("--max-connections", "[host] max_connections", |h| {
                h.max_connections = Some(100);
            });
        let err = layers.settle().unwrap_err().to_string();
        assert!(
            err.contains("[host] max_connections_per_ip must be at least 1")
                && !err.contains("given by"),
            "{err}"
        );
    }

    #[test]
    fn single_component_mode_is_one_tenant_with_the_command_lines_extras() {
        let mut layers = Layers {
            base: Base::Component {
                slug: Slug::parse("solo").unwrap(),
                component: "app.wasm".into(),
            },
            over: Overrides::default(),
        };
        layers.over.tenants.env.insert("K".into(), "v".into());
        layers
            .over
            .tenants
            .keyvalue_seed
            .insert("k".into(), "v".into());
        let err = layers.settle().unwrap_err().to_string();
        assert!(err.contains("add -S keyvalue"), "{err}");
        layers
            .over
            .host("-S keyvalue", "[host] keyvalue_max_bytes", |h| {
                h.keyvalue_max_bytes = 1 << 20;
            });
        let config = layers.settle().unwrap();
        assert_eq!(config.source, "command line");
        let tenant = &config.tenants[..];
        assert_eq!(tenant.len(), 1);
        assert_eq!(
            (tenant[0].slug.as_str(), tenant[0].owner.as_str()),
            ("solo", "local")
        );
        assert_eq!(tenant[0].env["K"], "v");
        assert_eq!(tenant[0].keyvalue_seed["k"], "v");
    }

    #[test]
    fn what_only_one_component_can_take_is_refused_with_a_file() {
        let (_dir, path) = file_with(TENANT);
        let mut layers = Layers::file(path);
        layers
            .over
            .tenants
            .dirs
            .push(("/srv".into(), "/srv".into()));
        let err = layers.settle().unwrap_err().to_string();
        assert!(err.contains("are for single-component mode"), "{err}");
    }

    #[test]
    fn cluster_flags_need_a_cluster_and_make_one_from_a_url() {
        let (_dir, path) = file_with(TENANT);
        let mut layers = Layers::file(path);
        layers
            .over
            .cluster("--node", "[cluster] node", |c| c.node = Some("a".into()));
        let err = layers.settle().unwrap_err().to_string();
        assert!(
            err.contains("--node is for a cluster: add --nats-url or a [cluster] table"),
            "{err}"
        );
        let mut over = Overrides::default();
        over.join_cluster("--nats-url", "nats://127.0.0.1:4222".into());
        over.cluster("--node", "[cluster] node", |c| c.node = Some("a b".into()));
        layers.over = over;
        let err = layers.settle().unwrap_err().to_string();
        assert!(
            err.contains("\"a b\"") && err.contains("(given by --node)"),
            "{err}"
        );
    }
}
