//! `mcp-everything`: an MCP server over Streamable HTTP at `/mcp`, stateless
//! (each request is answered on its own, as fresh-instance-per-request
//! hosting requires), with the tools, resources and prompts the official
//! conformance suite (`@modelcontextprotocol/conformance`) calls. It speaks
//! both generations on the one endpoint: MCP 2026-07-28 (`modern.rs`,
//! `mrtr.rs`: no session, `server/discover`, multi-round-trip requests with
//! signed state) and the 2025 protocol with `initialize` (here).
//!
//! Every request logs the way the platform's docs show: a plain
//! `console.log`-style line, `[INFO]` for what happened, `[DEBUG]` for
//! parameters, `[WARN]`/`[ERROR]` when something is off, with timings.
//! Runs unchanged under `wasmtime serve`.

mod catalog;
mod memory;
mod modern;
mod mrtr;
mod rpc;
mod tasks;

use std::time::Instant;

use guest_kit::{path_with_query, read_body, respond, split_query};
use serde_json::{Value, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

use crate::rpc::{Reply, error, parse_error};

wasip2::http::proxy::export!(Everything);

/// The protocol versions this server speaks, newest first.
const PROTOCOL_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];

/// The largest JSON-RPC message accepted.
const MAX_BODY: usize = 1 << 20;

struct Everything;

impl wasip2::exports::http::incoming_handler::Guest for Everything {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let started = Instant::now();
        let path = path_with_query(&request);
        let method = request.method();
        let method_name = match &method {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            _ => "OTHER",
        };
        println!("{method_name} {path}");

        if let Err(why) = check_host_and_origin(&request) {
            eprintln!("[WARN] Rejected request: {why}");
            return respond(
                out,
                403,
                "application/json",
                error(Value::Null, -32000, &why).to_string().as_bytes(),
            );
        }
        let mcp_headers = modern::headers_of(&request);
        match (split_query(&path).0, method) {
            ("/mcp", Method::Post) => {
                let Some(body) = read_body(&request, MAX_BODY) else {
                    eprintln!(
                        "[ERROR] Failed to read request body (over {MAX_BODY} bytes or broken)"
                    );
                    return respond(
                        out,
                        413,
                        "application/json",
                        parse_error("body too large or unreadable")
                            .to_string()
                            .as_bytes(),
                    );
                };
                handle_message(&body, &mcp_headers, out);
            }
            ("/mcp", _) => {
                // Stateless: no server-initiated stream (GET) and no session to end (DELETE).
                println!("[INFO] {method_name} /mcp is not supported by this stateless server");
                respond(
                    out,
                    405,
                    "application/json",
                    error(Value::Null, -32000, "Method not allowed: use POST")
                        .to_string()
                        .as_bytes(),
                )
            }
            ("/", _) => respond(
                out,
                200,
                "text/plain",
                b"mcp-everything: an MCP server at /mcp\n",
            ),
            (other, _) => {
                println!("[WARN] No route for {other}");
                respond(
                    out,
                    404,
                    "text/plain",
                    b"not found: the MCP endpoint is /mcp\n",
                )
            }
        }
        println!(
            "[INFO] Response sent in {}ms",
            started.elapsed().as_millis()
        );
    }
}

/// DNS-rebinding protection: a browser tricked into calling us under an
/// attacker's name sends that name as `Host` (and `Origin`). Only local
/// names are served: `localhost`, `*.localhost`, loopback addresses.
fn check_host_and_origin(request: &IncomingRequest) -> Result<(), String> {
    let host = request.authority().unwrap_or_default();
    if !is_local(&host) {
        return Err(format!("Host {host:?} is not a local name"));
    }
    let origins = request.headers().get("origin");
    for origin in origins {
        let origin = String::from_utf8_lossy(&origin).into_owned();
        let authority = origin
            .split_once("://")
            .map_or(origin.as_str(), |(_, rest)| rest);
        if !is_local(authority) {
            return Err(format!("Origin {origin:?} is not a local origin"));
        }
    }
    Ok(())
}

fn is_local(authority: &str) -> bool {
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost") || host == "::1" || host.starts_with("127.")
}

/// Handles one JSON-RPC message from a POST: 2026-07-28 (`modern`) or
/// the 2025 protocol, by what the request says it speaks.
fn handle_message(body: &[u8], headers: &modern::McpHeaders, out: ResponseOutparam) {
    let message: Value = match serde_json::from_slice(body) {
        Ok(message) => message,
        Err(e) => {
            eprintln!("[ERROR] Failed to parse request: {e}");
            return respond(
                out,
                400,
                "application/json",
                parse_error(&e.to_string()).to_string().as_bytes(),
            );
        }
    };
    let Some(method) = message["method"].as_str() else {
        // A response to a server request (we send none) or something odd.
        println!("[WARN] Ignoring a message without a method");
        return respond(out, 202, "application/json", b"");
    };
    let Some(id) = message.get("id").cloned() else {
        println!("[INFO] Notification: {method}");
        return respond(out, 202, "application/json", b"");
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    if modern::speaks(headers, &message) {
        println!(
            "[INFO] {method} request received ({}; client can: {})",
            modern::VERSION,
            modern::describe_capabilities(&params)
        );
        println!("[DEBUG] Params: {params}");
        let answer = modern::handle(method, &params, headers);
        return answer.reply.send_as(id, out, answer.status, None);
    }
    println!("[INFO] {method} request received");
    if params != Value::Null {
        println!("[DEBUG] Params: {params}");
    }
    let reply = match method {
        "initialize" => initialize(&params),
        "ping" | "logging/setLevel" | "resources/subscribe" | "resources/unsubscribe" => {
            if method.starts_with("resources/") {
                println!(
                    "[INFO] {method}: {} (acknowledged; this stateless server sends no update notifications)",
                    params["uri"]
                );
            }
            Reply::Result(json!({}))
        }
        "tools/list" => Reply::Result(json!({ "tools": catalog::tools() })),
        "tools/call" => catalog::call_tool(&params),
        "resources/list" => Reply::Result(json!({ "resources": catalog::resources() })),
        "resources/templates/list" => {
            Reply::Result(json!({ "resourceTemplates": catalog::resource_templates() }))
        }
        "resources/read" => catalog::read_resource(&params),
        "prompts/list" => Reply::Result(json!({ "prompts": catalog::prompts() })),
        "prompts/get" => catalog::get_prompt(&params),
        "completion/complete" => Reply::Result(catalog::complete(&params)),
        other => {
            println!("[WARN] Unknown method: {other}");
            Reply::Error(-32601, format!("Method not found: {other}"))
        }
    };
    // Sessions carry no state here (each request stands alone), but clients
    // and the suite's multi-stream checks expect one: hand out a random id
    // and accept any id back.
    let session = (method == "initialize").then(new_session_id);
    reply.send(id, out, session.as_deref());
}

fn new_session_id() -> String {
    let random = wasip2::random::random::get_random_bytes(16);
    random.iter().map(|b| format!("{b:02x}")).collect()
}

fn initialize(params: &Value) -> Reply {
    let requested = params["protocolVersion"].as_str().unwrap_or_default();
    let version = PROTOCOL_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    let client = params["clientInfo"]["name"]
        .as_str()
        .unwrap_or("unknown client");
    println!("[INFO] Initialized {client} with protocol {version}");
    Reply::Result(json!({
        "protocolVersion": version,
        "capabilities": {
            "tools": { "listChanged": false },
            "resources": { "subscribe": true, "listChanged": false },
            "prompts": { "listChanged": false },
            "logging": {},
            "completions": {},
        },
        "serverInfo": { "name": "mcp-everything", "version": env!("CARGO_PKG_VERSION") },
        "instructions": "A test server: every tool, resource and prompt the MCP conformance suite checks.",
    }))
}
