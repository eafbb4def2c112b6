//! The base layer: what every other layer reads and nothing above it
//! changes — the tenants file, session tokens and the host's own responses.

pub mod auth;
pub mod config;
pub(crate) mod metrics;
pub(crate) mod private;
pub(crate) mod refusals;
pub(crate) mod responses;
pub(crate) mod sync;
pub(crate) mod tls;
pub(crate) mod transport;
