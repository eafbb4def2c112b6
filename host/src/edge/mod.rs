//! The edge layer: what faces the network — the accept loop, routing a
//! request to a tenant or to the host's own endpoints, the dashboard and
//! the log-stream WebSocket.
//!
//! ```text
//!  TCP ─► server (hyper, one task per connection) ─► routing ─┬─► boundary ─► run::dispatch (a tenant)
//!                                                              └─► control ─┬─► /healthz
//!                                                                           ├─► log_stream (WebSocket viewers)
//!                                                                           ├─► deploy_api (crate::deploy)
//!                                                                           ├─► log_query (stored entries)
//!                                                                           └─► dashboard
//! ```

pub(crate) mod boundary;
pub(crate) mod busy_body;
pub(crate) mod connections;
pub(crate) mod control;
pub(crate) mod dashboard;
pub(crate) mod deploy_api;
pub(crate) mod log_query;
pub(crate) mod log_stream;
pub(crate) mod metrics;
pub(crate) mod redirect;
pub(crate) mod routing;
pub(crate) mod server;
pub(crate) mod tls;
