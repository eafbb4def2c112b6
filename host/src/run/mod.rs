//! The run layer: tenants' components compiled once, and each request run
//! in a fresh instance with its limits, or in one kept from the tenant
//! version's previous request when the tenant asks for reuse.
//!
//! ```text
//!  Dispatcher::dispatch ─► Store (RequestState: WASI ctx, capture, meter) ─► ProxyPre::instantiate ─► handle
//!                     └──► InstancePool::take (kept Store, RequestState::begin) ──────────────────────┘
//! ```

pub(crate) mod artifacts;
pub(crate) mod capabilities;
pub(crate) mod dispatch;
pub(crate) mod gate;
pub(crate) mod guest_logging;
pub(crate) mod instances;
pub(crate) mod keyvalue;
pub(crate) mod limits;
pub(crate) mod memory;
pub(crate) mod outbound;
pub(crate) mod report;
pub(crate) mod runtime;
pub(crate) mod state;
pub(crate) mod tenants;
