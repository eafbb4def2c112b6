//! mctx-host: a multi-tenant host for `wasi:http/proxy` WebAssembly
//! components that streams each tenant's console output, live, to its owners.
//!
//! Every module below owns one idea, named in the comment above it here
//! and explained in its own documentation.

// On-disk cache of compiled components.
pub mod artifacts;
// Session tokens (HS256 JWT) from the cookie or a bearer header.
pub mod auth;
// Guest stdout/stderr → log entries, per request.
pub mod capture;
// Command line: `serve`, and how a configuration becomes a running host.
pub mod cli;
// Log hubs across hosts on NATS: entries between hosts, the cluster-wide viewer limit.
pub mod cluster;
// `tenants.toml`: tenants, versions, host settings; validation.
pub mod config;
// Printing entries on the host's terminal.
pub mod console;
// The host's own endpoints (`/healthz`, `/log-stream/{slug}`).
pub mod control;
// The dashboard: sign-in, servers, the live log modal.
pub mod dashboard;
// One request in a fresh instance, with limits; outcome → response.
pub mod dispatch;
// Log entries: levels, prefixes, truncation, wire shape.
pub mod entry;
// The host side of `wasi:logging`: structured entries with exact levels.
pub mod guest_logging;
// Per-slug broadcast hubs: batching, seq, bounded viewer queues.
pub mod hub;
// CPU-time metering and the memory limiter.
pub mod limits;
// The `/log-stream/{slug}` WebSocket: checks, upgrade, viewer loop.
pub mod log_stream;
// `Host` header and path → tenant, version and the path the guest sees.
pub mod routing;
// Engine, linker, per-request store state, loading components.
pub mod runtime;
// The HTTP front door: accept loop, routing a request to a tenant or the control plane.
pub mod server;
// `mctx-host tail`: the log stream in a terminal.
pub mod tail;
// Slug → versions → pre-instantiated components.
pub mod tenants;
