//! `structured-log`: logs through `wasi:logging` (see `wit/tenant.wit`), one
//! call per level, so the host's mapping of each level can be checked. It
//! imports an interface `wasmtime serve` does not provide: it runs only
//! under mctx-host.

use guest_kit::respond;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:logging/imports",
    generate_all,
});

use wasi::logging::logging::{Level, log};

wasip2::http::proxy::export!(StructuredLog);

struct StructuredLog;

impl wasip2::exports::http::incoming_handler::Guest for StructuredLog {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        log(Level::Trace, "", "trace message");
        log(Level::Debug, "db", "debug message");
        log(Level::Info, "", "info message");
        log(Level::Warn, "", "warn message");
        log(Level::Error, "", "error message");
        log(Level::Critical, "", "critical message\nwith a second line");
        // A prefix means nothing here: the level is the one passed.
        log(Level::Info, "", "[ERROR] stays info");
        respond(out, 200, "text/plain", b"logged\n");
    }
}
