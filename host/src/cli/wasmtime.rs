//! `wasmtime serve`'s command line, accepted as it is.
//!
//! Every README and CI script for wasi:http components says `wasmtime serve
//! -Scli …`; `mctx-host serve` takes the same flags with the same syntax.
//! Each one is either honoured with wasmtime's meaning or refused with one
//! line that says why and names our equivalent, never "unexpected
//! argument". `docs/wasmtime-serve.md` lists them.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use wasmtime::Enabled;

use crate::base::config::Overrides;
use crate::run::pool::{POOL_KNOBS, PoolOptions};

/// The flags of `wasmtime serve` 48 that are not ours already.
#[derive(Args, Debug, Default)]
pub(crate) struct WasmtimeFlags {
    /// wasmtime's optimization options: `pooling-allocator[=y|n]` (on by default),
    /// `memory-init-cow[=y|n]` (off by default: copying data segments measured faster than
    /// copy-on-write here), `pooling-pagemap-scan[=y|n|auto]` (off by default: resets finished
    /// instances' memory in place, 1.7× the fresh-instance throughput, but wasmtime 48 can miss a
    /// page the kernel is moving at that moment; refused where swap is on; docs/instances.md "Instance
    /// pool") and the numeric `pooling-*=N` knobs are honoured; the pool is otherwise sized from
    /// --max-concurrent-requests and the memory limit.
    #[arg(short = 'O', long = "optimize", value_name = "KEY[=VAL[,..]]")]
    optimize: Vec<String>,
    /// wasmtime's codegen options: refused (mctx-host compiles with Cranelift's defaults).
    #[arg(short = 'C', long = "codegen", value_name = "KEY[=VAL[,..]]")]
    codegen: Vec<String>,
    /// wasmtime's debug options: refused.
    #[arg(short = 'D', long = "debug", value_name = "KEY[=VAL[,..]]")]
    debug: Vec<String>,
    /// wasmtime's wasm options: `timeout=DURATION` (wall clock per request, 504 past it) and
    /// `max-memory-size=BYTES` are honoured.
    #[arg(short = 'W', long = "wasm", value_name = "KEY[=VAL[,..]]")]
    wasm: Vec<String>,
    /// wasmtime's WASI options: `cli`, `common`, `http`, `p3` (always on), `inherit-env`,
    /// `inherit-network` (outbound HTTP to public addresses), `keyvalue` (wasi:keyvalue: a store
    /// in memory per tenant, 16 MiB unless `[host] keyvalue_max_bytes` says otherwise) and
    /// `keyvalue-in-memory-data=KEY=VALUE` (what it holds at start) are honoured.
    #[arg(short = 'S', long = "wasi", value_name = "KEY[=VAL[,..]]")]
    wasi: Vec<String>,
    /// wasmtime's execution recording: refused.
    #[arg(short = 'R', long = "record", value_name = "KEY[=VAL[,..]]")]
    record: Vec<String>,
    /// wasmtime's target triple: refused (mctx-host runs components for this machine).
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// wasmtime's precompiled `.cwasm` files: refused (mctx-host keeps its own compiled cache).
    #[arg(long)]
    allow_precompiled: bool,
    /// wasmtime's profiler integration: refused.
    #[arg(long, value_name = "STRATEGY")]
    profile: Option<String>,
    /// Grant the component read-only access to a host directory, as `HOST` or `HOST::GUEST`
    /// (single-component mode).
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]")]
    pub(crate) dirs: Vec<String>,
    /// An environment variable for the component: `NAME=VALUE`, or `NAME` for this process's
    /// value (single-component mode).
    #[arg(long = "env", value_name = "NAME[=VAL]")]
    env: Vec<String>,
    /// Connecting to this address shuts the host down gracefully: a loopback `IP:PORT`
    /// (as in `wasmtime serve`; a connection that sends data, such as a web page's request, is
    /// ignored) or `unix:PATH`, a socket only this user can connect to (0600). Tenants never
    /// reach it.
    #[arg(long, value_name = "SOCKADDR|unix:PATH", value_parser = super::shutdown::ShutdownAddr::parse)]
    pub(crate) shutdown_addr: Option<super::shutdown::ShutdownAddr>,
    /// Print the component's output lines as they are, without a prefix.
    #[arg(long)]
    pub(crate) no_logging_prefix: bool,
    /// Requests one instance serves, one after another, before it is dropped (1: a fresh
    /// instance for every request, the default). Only an instance whose guest returned (no trap, limit or cancel) is
    /// reused, and never across tenants or versions. In a tenants file: `[host] instance_reuse`.
    #[arg(long, value_name = "N")]
    max_instance_reuse_count: Option<u32>,
    /// Requests one WASIp3 instance serves at once (default 1), within --max-instance-reuse-count
    /// in all. Each line the guest writes still carries the id of the request whose task wrote it,
    /// but the instance's memory limit is shared, and a trap or a limit reached by one request
    /// stops every request in that instance. WASIp2 instances serve one at a time whatever this
    /// says. In a tenants file: `[host] instance_concurrent_reuse`.
    #[arg(long, value_name = "N")]
    max_instance_concurrent_reuse_count: Option<u32>,
    /// How long an instance kept for reuse waits for its next request before it is dropped
    /// (default 1s). In a tenants file: `[host] idle_instance_timeout_ms`.
    #[arg(long, value_name = "DURATION")]
    idle_instance_timeout: Option<String>,
    /// `name: value`: replace or add this header on every request before the component sees it
    /// (`@FILE`: one header per line).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Connections open at once (our --max-connections).
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrent_connections: Option<usize>,
}

/// The key-value store `-S keyvalue` grants when the host sets no size.
const SINGLE_KEYVALUE_BYTES: u64 = 16 << 20;

/// One `KEY[=VAL]` of a `-X KEY[=VAL[,..]]` option.
fn items(values: &[String]) -> impl Iterator<Item = (&str, Option<&str>)> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (item, None),
        })
}

/// wasmtime's booleans: `y`, `yes`, `true` or nothing for on; `n`, `no`, `false` for off.
fn on(flag: &str, key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("y" | "yes" | "true") => Ok(true),
        Some("n" | "no" | "false") => Ok(false),
        Some(other) => bail!("{flag} {key}={other}: expected y or n"),
    }
}

/// wasmtime's three-way switches: [`on`]'s words, or `auto` (on where the
/// machine allows it).
fn enabled(flag: &str, key: &str, value: Option<&str>) -> Result<Enabled> {
    match value {
        Some("auto") => Ok(Enabled::Auto),
        _ => match on(flag, key, value) {
            Ok(true) => Ok(Enabled::Yes),
            Ok(false) => Ok(Enabled::No),
            Err(_) => bail!(
                "{flag} {key}={}: expected y, n or auto",
                value.unwrap_or_default()
            ),
        },
    }
}

/// wasmtime's durations: a number of seconds, or with `s`, `ms`, `us`/`μs` or `ns`.
fn duration(flag: &str, text: &str) -> Result<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag}: {text:?} is not a duration (e.g. 5s, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1e3,
        "us" | "μs" => number / 1e6,
        "ns" => number / 1e9,
        _ => bail!("{flag}: {text:?} has an unknown unit (s, ms, us, ns)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Refuses a flag: one line, why, and what to use instead.
fn refuse(flag: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!("{flag} is not supported by mctx-host: {why}")
}

/// What the flags ask for, beyond the tenants' settings.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    /// `-O pooling-allocator`, `memory-init-cow`, `pooling-pagemap-scan`
    /// and `pooling-KEY=N`.
    pub(crate) pool: PoolOptions,
}

impl WasmtimeFlags {
    /// Adds what the flags set to the command line's settings (checked with
    /// the rest when they are settled), or says which flag cannot be.
    pub(crate) fn apply(&self, over: &mut Overrides) -> Result<Asked> {
        let mut asked = Asked::default();
        for (group, values, why) in [
            (
                "-C",
                &self.codegen,
                "mctx-host compiles with Cranelift's defaults",
            ),
            (
                "-D",
                &self.debug,
                "debugging a guest is wasmtime's job: run it under `wasmtime serve`",
            ),
            (
                "-R",
                &self.record,
                "execution recording is wasmtime's: run it under `wasmtime serve`",
            ),
        ] {
            if let Some((key, _)) = items(values).next() {
                return Err(refuse(&format!("{group} {key}"), why));
            }
        }
        if self.target.is_some() {
            return Err(refuse(
                "--target",
                "components run compiled for this machine",
            ));
        }
        if self.allow_precompiled {
            return Err(refuse(
                "--allow-precompiled",
                "mctx-host compiles components itself and caches the result (--cache-dir)",
            ));
        }
        if self.profile.is_some() {
            return Err(refuse(
                "--profile",
                "profile the host with perf (docs/profile.md shows how)",
            ));
        }
        for (key, value) in items(&self.optimize) {
            let knob = key
                .strip_prefix("pooling-")
                .filter(|knob| POOL_KNOBS.contains(knob));
            match (key, knob) {
                ("pooling-allocator", _) => asked.pool.pooling = on("-O", key, value)?,
                ("memory-init-cow", _) => asked.pool.memory_init_cow = on("-O", key, value)?,
                ("pooling-pagemap-scan", _) => {
                    asked.pool.pagemap_scan = enabled("-O", key, value)?;
                }
                (_, Some(knob)) => {
                    let n = value.and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
                        anyhow::anyhow!("-O {key}: expected {key}=N (a whole number)")
                    })?;
                    asked.pool.overrides.push((knob.to_string(), n));
                }
                _ => {
                    return Err(refuse(
                        &format!("-O {key}"),
                        "of -O, mctx-host takes pooling-allocator, memory-init-cow, pooling-pagemap-scan and the numeric pooling-* knobs",
                    ));
                }
            }
        }
        for (key, value) in items(&self.wasm) {
            let value = value.unwrap_or_default();
            match key {
                "timeout" => {
                    let ms = duration("-W timeout", value)?.as_millis().max(1);
                    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
                    over.host("-W timeout", "[host] request_timeout_ms", move |host| {
                        host.request_timeout_ms = ms;
                    });
                }
                "max-memory-size" => {
                    let bytes: u64 = value.parse().map_err(|_| {
                        anyhow::anyhow!("-W max-memory-size={value}: expected a number of bytes")
                    })?;
                    let mb = bytes.div_ceil(1 << 20).max(1);
                    over.host(
                        "-W max-memory-size",
                        "[host] memory_limit_mb",
                        move |host| {
                            host.memory_limit_mb = mb;
                        },
                    );
                }
                "async-stack-zeroing" => {
                    asked.pool.stack_zeroing =
                        on("-W", key, Some(value).filter(|v| !v.is_empty()))?;
                }
                _ => {
                    return Err(refuse(
                        &format!("-W {key}"),
                        "of -W, mctx-host takes timeout, max-memory-size and async-stack-zeroing; its limits are --cpu-limit-ms, --memory-limit-mb and --request-timeout-ms",
                    ));
                }
            }
        }
        let mut inherit_env = false;
        for (key, value) in items(&self.wasi) {
            if key == "keyvalue-in-memory-data" {
                let (name, data) = value.and_then(|v| v.split_once('=')).ok_or_else(|| {
                    anyhow::anyhow!(
                        "-S keyvalue-in-memory-data: expected keyvalue-in-memory-data=KEY=VALUE"
                    )
                })?;
                over.tenants
                    .keyvalue_seed
                    .insert(name.to_string(), data.to_string());
                continue;
            }
            let enabled = on("-S", key, value);
            match key {
                "cli" | "common" | "http" | "p3" => {
                    if !enabled? {
                        return Err(refuse(
                            &format!("-S {key}=n"),
                            "mctx-host always links WASI CLI and HTTP, p2 and p3 (they grant nothing by themselves)",
                        ));
                    }
                }
                "inherit-env" => inherit_env = enabled?,
                "keyvalue" => {
                    let granted = enabled?;
                    over.host("-S keyvalue", "[host] keyvalue_max_bytes", move |host| {
                        // The file's size, if it sets one.
                        host.keyvalue_max_bytes = match (granted, host.keyvalue_max_bytes) {
                            (false, _) => 0,
                            (true, 0) => SINGLE_KEYVALUE_BYTES,
                            (true, set) => set,
                        };
                    });
                }
                "inherit-network" => over.tenants.any_outbound = enabled?,
                _ => {
                    return Err(refuse(
                        &format!("-S {key}"),
                        "mctx-host offers WASI CLI and HTTP (outbound HTTP under allowed_outbound_hosts) and keyvalue",
                    ));
                }
            }
        }
        let tenants = &mut over.tenants;
        if inherit_env {
            tenants.env.extend(std::env::vars());
        }
        for entry in &self.env {
            let (name, value) = match entry.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (entry.clone(), std::env::var(entry).unwrap_or_default()),
            };
            tenants.env.insert(name, value);
        }
        for header in &self.headers {
            tenants.request_headers.extend(parse_headers(header)?);
        }
        for dir in &self.dirs {
            let (host, guest) = dir.split_once("::").unwrap_or((dir, dir));
            tenants.dirs.push((host.into(), guest.to_string()));
        }
        if let Some(n) = self.max_instance_reuse_count {
            // Every tenant's default (a tenant's own `instance_reuse` wins).
            over.host(
                "--max-instance-reuse-count",
                "[host] instance_reuse",
                move |host| host.instance_reuse = n,
            );
        }
        if let Some(n) = self.max_instance_concurrent_reuse_count {
            over.host(
                "--max-instance-concurrent-reuse-count",
                "[host] instance_concurrent_reuse",
                move |host| host.instance_concurrent_reuse = n,
            );
        }
        if let Some(timeout) = &self.idle_instance_timeout {
            let idle = duration("--idle-instance-timeout", timeout)?;
            let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
            over.host(
                "--idle-instance-timeout",
                "[host] idle_instance_timeout_ms",
                move |host| host.idle_instance_timeout_ms = ms,
            );
        }
        if let Some(n) = self.max_concurrent_connections {
            over.host(
                "--max-concurrent-connections",
                "[host] max_connections",
                move |host| host.max_connections = Some(n),
            );
        }
        Ok(asked)
    }
}

/// `name: value`, or `@FILE` with one such header per line.
fn parse_headers(argument: &str) -> Result<Vec<(String, String)>> {
    let text = match argument.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--header @{path}: {e}"))?
        }
        None => argument.to_string(),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("--header {line:?}: expected `name: value`"))?;
            let name = name.trim();
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| anyhow::anyhow!("--header {line:?}: {name:?} is not a header name"))?;
            Ok((name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_are_zeroed_unless_w_async_stack_zeroing_n() {
        let zeroing = |wasm: &[&str]| {
            let flags = WasmtimeFlags {
                wasm: wasm.iter().map(|w| w.to_string()).collect(),
                ..WasmtimeFlags::default()
            };
            let mut over = Overrides::default();
            flags.apply(&mut over).unwrap().pool.stack_zeroing
        };
        assert!(zeroing(&[]), "on by default, unlike wasmtime");
        assert!(!zeroing(&["async-stack-zeroing=n"]));
        assert!(zeroing(&["async-stack-zeroing"]));
    }

    #[test]
    fn option_lists_and_values_parse_as_wasmtime_writes_them() {
        let values = ["cli,http=y".to_string(), "inherit-env".to_string()];
        let parsed: Vec<_> = items(&values).collect();
        assert_eq!(
            parsed,
            [("cli", None), ("http", Some("y")), ("inherit-env", None)]
        );
        assert_eq!(
            duration("-W timeout", "5s").unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            duration("-W timeout", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration("-W timeout", "2").unwrap(), Duration::from_secs(2));
        assert!(duration("-W timeout", "5m").is_err());
        assert!(on("-S", "cli", Some("maybe")).is_err());
        assert_eq!(enabled("-O", "k", None).unwrap(), Enabled::Yes);
        assert_eq!(enabled("-O", "k", Some("no")).unwrap(), Enabled::No);
        assert_eq!(enabled("-O", "k", Some("auto")).unwrap(), Enabled::Auto);
        let refused = enabled("-O", "pooling-pagemap-scan", Some("maybe")).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "-O pooling-pagemap-scan=maybe: expected y, n or auto"
        );
        assert_eq!(
            parse_headers("X-Hello: world").unwrap(),
            [("x-hello".to_string(), "world".to_string())]
        );
        assert!(parse_headers("no colon").is_err());
    }
}
