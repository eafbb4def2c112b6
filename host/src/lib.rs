//! mctx-host: a multi-tenant host for `wasi:http/proxy` WebAssembly
//! components that streams each tenant's console output, live, to its owners.
//!
//! # Layout
//!
//! Five layers, each using only the ones below it, and a composition root
//! on top. No two modules import each other, directly or round a circle
//! (checked when this was last reorganised; see issue 29's note):
//!
//! | layer | modules | what it owns |
//! |---|---|---|
//! | root | [`app`], [`cli`] | `App::build` wires every part from an [`AppConfig`]; `App::serve` runs and shuts down in order. The CLI only turns flags into settings over the tenants file (`config::Layers`, settled once, and again on each reload) and holds the `tail` client. |
//! | edge | `edge::{server, busy_body, routing, control, dashboard, log_stream, log_query, deploy_api}` | the network: accept loop, `Host` + path → tenant or control plane, `/healthz`, the dashboard, the log-stream WebSocket, stored entries' queries, the deploy API's HTTP. |
//! | deploy | `deploy::{rules, apply, durable, mirror, load, error, store, shared, reload}` | the server list and every change to it, one at a time: the rules (`rules`), durable (`state_dir`, or JetStream on a cluster) before the tenant registry swaps; reloading the tenants file. Its refusals (`error::Why`) know no HTTP: `edge::deploy_api` maps them to statuses. |
//! | run | `run::{dispatch, body, runtime, pool, p3, shared, state, limits, tenants, instances, budget, keyvalue, artifacts, guest_logging}` | WebAssembly: an engine and linker per WASI generation (p2; p3 when one loads), tenants' components compiled once, each request in a fresh instance (from a pool whose slots are made clean between tenants, `pool`) (or, for a tenant that asks, one kept from its version's previous request, or a p3 instance serving several at once) with its CPU and memory limits; each tenant's key-value store; the registry of tenants, an immutable snapshot swapped whole. |
//! | logs | `logs::{capture, stdio, line, redact, entry, event, publish, hub, wire, filter, cluster, store, console}` | what guests write becoming entries (`capture`: per request; `stdio`: the guest's streams; `line`: one unfinished line), numbered once, fanned out to viewers here and on other hosts, and kept on disk for tenants granted retention (`store`: SQLite, one writer thread, queries); `wire` is the viewer protocol, `filter` what a viewer (or a query) asks for. |
//! | base | `base::{config, auth, responses, metrics, sync}` | the configuration (one struct per table; the file and the command line settled in one place, `config::settle`), session tokens, the host's own responses, the operator's metrics, taking locks. |
//!
//! **How a request travels.** `edge::server` accepts the connection and
//! hands each request to its `FrontDoor`; `edge::routing` picks the tenant
//! and version from `Host` and path (or the control plane); `run::dispatch`
//! adds `X-Tenant-Slug`, admits the request (or refuses it), prepares its
//! `RequestState` store (WASI context, capture, CPU meter, memory limiter)
//! and calls the tenant's pre-instantiated component in the connection's
//! task (a task of its own once it streams a body); the guest's response
//! streams back through hyper, and a `type:"request"` entry records how
//! it ended.
//!
//! **How a deploy travels.** `edge::deploy_api` authenticates and reads
//! the upload; `deploy` checks the rules, compiles it off the async
//! threads, writes it and the server list crash-safely, then swaps in a new
//! `run::tenants` snapshot: requests already running keep the tenant they
//! started with, the next ones get the new version, and the slug's viewers
//! get a `type:"deploy"` entry through `logs::publish`.
//!
//! **How a log line travels.** The guest writes to stdout or stderr (or
//! calls `wasi:logging`); `logs::capture` cuts the bytes into lines, applies
//! the 10 KB and 256 KiB limits and makes [`entry::LogEntry`]s at once;
//! `logs::publish` gives each its `seq` (the only place that does) and
//! hands it to `logs::hub`, whose per-slug batcher serializes frames of at
//! most 100 entries (`logs::wire` is the protocol) into each viewer's
//! bounded queue; `edge::log_stream` writes them to the WebSocket. On a
//! cluster, `publish` also hands the entries to `logs::cluster`, which
//! sends them over NATS to hosts whose viewers watch the slug. For a
//! tenant granted retention, `publish` also queues them for `logs::store`,
//! whose writer thread keeps them in SQLite within the tenant's age and
//! bytes; `edge::log_query` and `tail --since` read them back.
//!
//! `RequestState`: run::state::RequestState

pub mod app;
mod base;
pub mod cli;
mod deploy;
mod edge;
mod logs;
mod run;

pub use app::{App, AppConfig};
pub use base::{auth, config};
pub use edge::routing::RoutingMode;
pub use logs::console::GuestLogFormat;
pub use logs::{capture, entry, sink};
pub use run::pool::PoolOptions;
