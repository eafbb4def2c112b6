//! Every integration test, in one binary: each module one part of the host
//! against the real `mctx-host` binary (or, in `app`, the library), over
//! real HTTP, WebSockets, NATS, Prometheus and Chromium.
//!
//! One binary rather than one per file: each test binary links the host's
//! dependencies (wasmtime among them, ~70 MiB a binary), and 22 of them took
//! a minute to link and 1.6 GiB of `target/`. Run one module with
//! `cargo test -p mctx-host --test all boundary::`, one test by its name.
//!
//! The harness is `tests/support/` (shared with the benches): starting the
//! host, a viewer, `tail`, `wasmtime serve`, `nats-server`; certificates.

#[path = "../support/mod.rs"]
mod support;

mod app;
mod boundary;
mod cluster;
mod dashboard;
mod deploy;
mod deploy_limits;
mod deploy_reload;
mod faults;
mod front_door;
mod js_kit;
mod js_tenant;
mod keyvalue;
mod layout;
mod load;
mod log_export;
mod log_retention;
mod log_stream_auth;
mod log_stream_viewers;
mod log_streams;
mod mcp_client;
mod mcp_conformance;
mod metrics;
mod outbound;
mod reuse;
mod runtime;
mod secrets;
mod shutdown;
mod tail;
mod tls;
mod wasip3;
mod wasmtime_parity;
