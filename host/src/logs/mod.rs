//! The logs layer: what a guest writes becomes entries, numbered once and
//! delivered to every viewer that watches, on this host or another.
//!
//! ```text
//!  guest stdout/stderr ─► capture (lines, limits) ─► publish (seq) ─► hub ─► viewers
//!                                                        ├─► cluster ─► other hosts' hubs
//!                                                        ├─► store (retained tenants) ─► queries
//!                                                        └─► export (OTLP/HTTP destinations)
//! ```

pub mod capture;
pub(crate) mod cluster;
pub(crate) mod console;
pub mod entry;
pub(crate) mod event;
pub(crate) mod export;
pub(crate) mod filter;
pub(crate) mod hub;
pub(crate) mod line;
pub(crate) mod publish;
pub(crate) mod redact;
pub mod sink;
pub(crate) mod stdio;
pub(crate) mod store;
pub(crate) mod wire;
