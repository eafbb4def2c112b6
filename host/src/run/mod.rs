//! The run layer: tenants' components compiled once, and each request run
//! in a fresh instance with its limits, or in one kept from the tenant
//! version's previous request when the tenant asks for reuse.
//!
//! ```text
//!  Dispatcher::dispatch ─► Store (RequestState: WASI ctx, capture, meter) ─► GuestPre::P2 instantiate ─► incoming-handler.handle
//!                     │                                                  └► GuestPre::P3 instantiate ─► p3::serve (run_concurrent until the guest is done)
//!                     ├──► InstancePool::take (kept Store, RequestState::begin) ─┘
//!                     └──► SharedInstances::submit ─► a p3 instance's own task, serving several requests at once (run::shared)
//! ```
//!
//! WASIp2 and WASIp3 components compile for two engines (`runtime::Flavor`):
//! the p3 one has the component model's concurrency support, which costs
//! every store, and is made only when a p3 component loads.

pub(crate) mod artifacts;
pub(crate) mod body;
pub(crate) mod budget;
pub(crate) mod capabilities;
pub(crate) mod dispatch;
pub(crate) mod gate;
pub(crate) mod guest_logging;
pub(crate) mod instances;
pub(crate) mod keyvalue;
pub(crate) mod limits;
pub(crate) mod memory;
pub(crate) mod outbound;
pub(crate) mod p3;
pub(crate) mod pool;
pub(crate) mod report;
pub(crate) mod runtime;
pub(crate) mod shared;
pub(crate) mod state;
pub(crate) mod tenants;
