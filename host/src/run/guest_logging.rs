//! The host side of `wasi:logging`: a guest that calls `log(level, context,
//! message)` gets an entry with exactly that level, no prefix guessing.
//!
//! Entries from `wasi:logging` go through the same request capture as stdout
//! and stderr, so they share its order, its 10 KB message limit and its
//! per-request output budget.

use crate::logs::entry::Level;
use crate::run::state::RequestState;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasi:logging/imports",
});

use self::wasi::logging::logging::{Host as LoggingHost, Level as WasiLevel};

/// Adds `wasi:logging/logging` to a linker.
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<RequestState>,
) -> wasmtime::Result<()> {
    self::wasi::logging::logging::add_to_linker::<
        RequestState,
        wasmtime::component::HasSelf<RequestState>,
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

impl LoggingHost for RequestState {
    fn log(&mut self, level_: WasiLevel, context: String, message: String) {
        let message = if context.is_empty() {
            message
        } else {
            format!("{context}: {message}")
        };
        self.capture().log_structured(level(level_), message);
    }
}
