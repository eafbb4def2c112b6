//! The host side of `wasi:logging`: a guest that calls `log(level, context,
//! message)` gets an entry with exactly that level, no prefix guessing.
//!
//! Entries from `wasi:logging` go through the same request capture as stdout
//! and stderr, so they share its order, its 10 KB message limit and its
//! per-request output budget.

use crate::entry::Level;
use crate::runtime::TenantState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasi:logging/imports",
});

use self::wasi::logging::logging::{Host, Level as WasiLevel};

/// Adds `wasi:logging/logging` to a linker.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<TenantState>,
) -> wasmtime::Result<()> {
    self::wasi::logging::logging::add_to_linker::<
        TenantState,
        wasmtime::component::HasSelf<TenantState>,
    >(linker, |state| state)
}

/// `trace` has no level of its own in the contract; `critical` is an error.
fn level(level: WasiLevel) -> Level {
    match level {
        WasiLevel::Trace | WasiLevel::Debug => Level::Debug,
        WasiLevel::Info => Level::Info,
        WasiLevel::Warn => Level::Warn,
        WasiLevel::Error | WasiLevel::Critical => Level::Error,
    }
}

impl Host for TenantState {
    fn log(&mut self, level_: WasiLevel, context: String, message: String) {
        let message = if context.is_empty() {
            message
        } else {
            format!("{context}: {message}")
        };
        self.capture().log_structured(level(level_), message);
    }
}
