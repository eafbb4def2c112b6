//! MCP revision 2026-07-28 on the same `/mcp` endpoint: no session and no
//! `initialize`. Every request carries its protocol version and the
//! client's capabilities in `params._meta` (and the version again in the
//! `MCP-Protocol-Version` header), names its method and target in
//! `Mcp-Method` / `Mcp-Name` headers that must match the body, and gets a
//! result with `resultType`. What used to be a server→client request
//! (elicitation, sampling, roots) is a multi-round-trip request
//! (`mrtr.rs`): the result asks for input, the client calls again with it.
//!
//! A request is answered here when it speaks this revision: its
//! `MCP-Protocol-Version` header names a version newer than 2025-11-25, or
//! it has none and carries `_meta` with a protocol version. Everything else
//! is the 2025 protocol (`lib.rs`), unchanged.

use serde_json::{Value, json};

use crate::catalog;
use crate::mrtr;
use crate::rpc::Reply;
use crate::tasks;

/// The revision this module speaks.
pub const VERSION: &str = "2026-07-28";

/// Versions that use `initialize` and sessions.
const LEGACY: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// `_meta` keys of a 2026 request.
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// JSON-RPC errors of this revision.
const HEADER_MISMATCH: i64 = -32020;
const MISSING_CAPABILITY: i64 = -32021;
const UNSUPPORTED_VERSION: i64 = -32022;
const INVALID_PARAMS: i64 = -32602;
const METHOD_NOT_FOUND: i64 = -32601;

/// Results a client may cache, and for how long (the catalog is static).
const CACHEABLE: [&str; 6] = [
    "server/discover",
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
];
const TTL_MS: u64 = 60_000;

/// The MCP headers of a request, as sent (values trimmed).
#[derive(Default)]
pub struct McpHeaders {
    pub protocol_version: Option<String>,
    pub method: Option<String>,
    pub name: Option<String>,
    /// `Mcp-Param-{Name}` headers: lower-case name suffix and value.
    pub params: Vec<(String, String)>,
}

/// Whether `message` (with these headers) speaks 2026-07-28 or later.
pub fn speaks(headers: &McpHeaders, message: &Value) -> bool {
    match headers.protocol_version.as_deref() {
        Some(version) => !LEGACY.contains(&version),
        None => message["params"]["_meta"].get(META_VERSION).is_some(),
    }
}

/// What goes back: an HTTP status and a JSON-RPC reply.
pub struct Answer {
    pub status: u16,
    pub reply: Reply,
}

fn reject(status: u16, code: i64, message: String) -> Answer {
    Answer {
        status,
        reply: Reply::Error(code, message),
    }
}

/// Answers one 2026-07-28 request.
pub fn handle(method: &str, params: &Value, headers: &McpHeaders) -> Answer {
    if let Err(rejected) = check(method, params, headers) {
        return rejected;
    }
    let meta = &params["_meta"];
    let capabilities = &meta[META_CAPABILITIES];
    let reply = match method {
        "server/discover" => Reply::Result(json!({
            "supportedVersions": [VERSION],
            "capabilities": capabilities_offered(),
            "instructions": "A test server: every tool, resource and prompt the MCP conformance suite checks.",
            "_meta": { "io.modelcontextprotocol/serverInfo": server_info() },
        })),
        "tools/list" => Reply::Result(json!({ "tools": tools() })),
        "tools/call" => match call_tool(params, capabilities, meta.get(META_LOG_LEVEL).is_some()) {
            Ok(reply) => reply,
            Err(rejected) => return rejected,
        },
        "resources/list" => Reply::Result(json!({ "resources": catalog::resources() })),
        "resources/templates/list" => {
            Reply::Result(json!({ "resourceTemplates": catalog::resource_templates() }))
        }
        // An unknown resource is -32602 with the URI (SEP-2164), no longer
        // the 2025 protocol's -32002.
        "resources/read" => match catalog::read_resource(params) {
            Reply::Error(_, message) => {
                Reply::ErrorWithData(INVALID_PARAMS, message, json!({ "uri": params["uri"] }))
            }
            reply => reply,
        },
        "prompts/list" => Reply::Result(json!({ "prompts": prompts() })),
        "prompts/get" => match mrtr::prompt(params) {
            Some(reply) => reply,
            None => catalog::get_prompt(params),
        },
        "completion/complete" => Reply::Result(catalog::complete(params)),
        "tasks/get" | "tasks/update" | "tasks/cancel" => {
            match tasks::method(method, params, capabilities) {
                Some(Ok(reply)) => reply,
                Some(Err(reply)) => return Answer { status: 400, reply },
                None => unreachable!("tasks::method answers these"),
            }
        }
        // `initialize`, `ping`, `logging/setLevel`, `resources/subscribe`
        // and `resources/unsubscribe` are gone in this revision;
        // `subscriptions/listen` needs a server that outlives a request,
        // which this one is not (it declares no listChanged or subscribe).
        other => {
            println!("[WARN] Method not found in {VERSION}: {other}");
            return reject(404, METHOD_NOT_FOUND, format!("Method not found: {other}"));
        }
    };
    Answer {
        status: 200,
        reply: complete(method, reply),
    }
}

/// The request's framing: its version (header and `_meta`, which must
/// agree and be one this server speaks), its capabilities, and its
/// `Mcp-Method` / `Mcp-Name` / `Mcp-Param-*` headers against the body.
fn check(method: &str, params: &Value, headers: &McpHeaders) -> Result<(), Answer> {
    let Some(header_version) = headers.protocol_version.as_deref() else {
        return Err(reject(
            400,
            HEADER_MISMATCH,
            "Missing MCP-Protocol-Version header".into(),
        ));
    };
    let meta = &params["_meta"];
    let missing: Vec<&str> = [META_VERSION, META_CAPABILITIES]
        .into_iter()
        .filter(|key| meta.get(key).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(reject(
            400,
            INVALID_PARAMS,
            format!("Invalid params: _meta lacks {}", missing.join(", ")),
        ));
    }
    if meta[META_VERSION].as_str() != Some(header_version) {
        return Err(reject(
            400,
            HEADER_MISMATCH,
            format!(
                "MCP-Protocol-Version header {header_version:?} does not match _meta {}",
                meta[META_VERSION]
            ),
        ));
    }
    if header_version != VERSION {
        return Err(Answer {
            status: 400,
            reply: Reply::ErrorWithData(
                UNSUPPORTED_VERSION,
                format!("Unsupported protocol version {header_version:?}"),
                json!({ "supported": [VERSION], "requested": header_version }),
            ),
        });
    }
    mirrors(
        "Mcp-Method",
        headers.method.as_deref().map(|m| Ok(m.to_string())),
        method,
    )?;
    let target = match method {
        "tools/call" | "prompts/get" => params["name"].as_str(),
        "resources/read" => params["uri"].as_str(),
        "tasks/get" | "tasks/update" | "tasks/cancel" => params["taskId"].as_str(),
        _ => None,
    };
    if let Some(target) = target {
        mirrors(
            "Mcp-Name",
            headers.name.as_deref().map(decode_header),
            target,
        )?;
    }
    if method == "tools/call" {
        check_param_headers(params, headers)?;
    }
    Ok(())
}

/// A tool's arguments marked `x-mcp-header` travel in `Mcp-Param-{Name}`
/// headers too (so that a proxy can route on them): the header must be
/// there when the argument is, and say the same.
fn check_param_headers(params: &Value, headers: &McpHeaders) -> Result<(), Answer> {
    let name = params["name"].as_str().unwrap_or_default();
    let Some(tool) = tools().into_iter().find(|t| t["name"] == name) else {
        return Ok(());
    };
    let Some(properties) = tool["inputSchema"]["properties"].as_object() else {
        return Ok(());
    };
    for (argument, schema) in properties {
        let Some(header) = schema["x-mcp-header"].as_str() else {
            continue;
        };
        let Some(value) = params["arguments"].get(argument) else {
            continue;
        };
        let wanted = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let sent = headers
            .params
            .iter()
            .find(|(suffix, _)| suffix.eq_ignore_ascii_case(header))
            .map(|(_, value)| decode_header(value));
        mirrors(&format!("Mcp-Param-{header}"), sent, &wanted)?;
    }
    Ok(())
}

/// A header that mirrors the body (`sent`, decoded) must be there and say
/// exactly what the body says (`body`): else 400 with HeaderMismatch.
fn mirrors(header: &str, sent: Option<Result<String, String>>, body: &str) -> Result<(), Answer> {
    let why = match sent {
        Some(Ok(sent)) if sent == body => return Ok(()),
        Some(Ok(sent)) => format!("{header} header {sent:?} does not match the body's {body:?}"),
        Some(Err(why)) => format!("{header}: {why}"),
        None => format!("Missing {header} header"),
    };
    Err(reject(400, HEADER_MISMATCH, why))
}

/// A header value: `=?base64?…?=` is Base64 (strict: padding and alphabet
/// checked), anything else is the value itself.
fn decode_header(value: &str) -> Result<String, String> {
    use base64::Engine as _;
    let Some(encoded) = value
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    else {
        return Ok(value.to_string());
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("invalid Base64 {encoded:?}: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "Base64 value is not UTF-8".to_string())
}

/// Marks a result complete and adds caching hints to cacheable ones.
fn complete(method: &str, reply: Reply) -> Reply {
    let cacheable = CACHEABLE.contains(&method);
    let finish = move |mut result: Value| {
        if let Value::Object(fields) = &mut result {
            fields
                .entry("resultType")
                .or_insert_with(|| json!("complete"));
            if cacheable && fields["resultType"] == "complete" {
                fields.insert("ttlMs".into(), json!(TTL_MS));
                fields.insert("cacheScope".into(), json!("public"));
            }
        }
        result
    };
    match reply {
        Reply::Result(result) => Reply::Result(finish(result)),
        Reply::Stream(run) => Reply::Stream(Box::new(move |events| finish(run(events)))),
        other => other,
    }
}

fn server_info() -> Value {
    json!({ "name": "mcp-everything", "version": env!("CARGO_PKG_VERSION") })
}

/// What this server offers: no `listChanged` or `subscribe` (nothing
/// outlives a request to notify anyone).
fn capabilities_offered() -> Value {
    json!({
        "tools": {},
        "resources": {},
        "prompts": {},
        "completions": {},
        "extensions": { tasks::EXTENSION: {} },
    })
}

/// The 2025 catalog, the tools that ask for input, and the probes of this
/// revision's rules.
fn tools() -> Vec<Value> {
    let mut tools = catalog::tools();
    tools.extend(mrtr::tools());
    tools.extend(tasks::tools());
    let no_args = json!({ "type": "object", "properties": {} });
    tools.push(json!({
        "name": "test_missing_capability",
        "description": "Needs the client's sampling capability: without it, MissingRequiredClientCapability",
        "inputSchema": no_args,
    }));
    tools.push(json!({
        "name": "test_header_param",
        "description": "Echoes its region, which also travels in the Mcp-Param-Region header",
        "inputSchema": {
            "type": "object",
            "properties": { "region": { "type": "string", "x-mcp-header": "Region" } },
            "required": ["region"],
        },
    }));
    tools
}

fn prompts() -> Vec<Value> {
    let mut prompts = catalog::prompts();
    prompts.push(mrtr::prompt_definition());
    prompts
}

fn call_tool(params: &Value, capabilities: &Value, log_level: bool) -> Result<Reply, Answer> {
    let name = params["name"].as_str().unwrap_or_default();
    if let Some(reply) = mrtr::call(name, params, capabilities) {
        return Ok(reply);
    }
    match tasks::call(name, params, capabilities) {
        Some(Ok(reply)) => return Ok(reply),
        Some(Err(reply)) => return Err(Answer { status: 400, reply }),
        None => {}
    }
    match name {
        "test_missing_capability" => {
            if capabilities.get("sampling").is_none() {
                return Err(Answer {
                    status: 400,
                    reply: Reply::ErrorWithData(
                        MISSING_CAPABILITY,
                        "test_missing_capability needs the client's sampling capability".into(),
                        json!({ "requiredCapabilities": { "sampling": {} } }),
                    ),
                });
            }
            Ok(Reply::Result(json!({
                "content": [{ "type": "text", "text": "the client can sample" }],
            })))
        }
        "test_header_param" => {
            let region = params["arguments"]["region"].as_str().unwrap_or_default();
            Ok(Reply::Result(json!({
                "content": [{ "type": "text", "text": format!("region {region}") }],
            })))
        }
        // Log notifications go only to a client that asked for a level.
        "test_logging_tool" if !log_level => Ok(Reply::Result(json!({
            "content": [{ "type": "text", "text": "Logging completed (no logLevel in _meta: no log notifications)" }],
        }))),
        _ => Ok(catalog::call_tool(params)),
    }
}

/// The `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` and
/// `Mcp-Param-*` headers of a request, trimmed.
pub fn headers_of(request: &wasip2::http::types::IncomingRequest) -> McpHeaders {
    let mut headers = McpHeaders::default();
    for (name, value) in request.headers().entries() {
        let value = String::from_utf8_lossy(&value).trim().to_string();
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "mcp-protocol-version" => headers.protocol_version = Some(value),
            "mcp-method" => headers.method = Some(value),
            "mcp-name" => headers.name = Some(value),
            other => {
                if let Some(suffix) = other.strip_prefix("mcp-param-") {
                    headers.params.push((suffix.to_string(), value));
                }
            }
        }
    }
    headers
}

/// For logging: a request's `_meta` capabilities, compactly.
pub fn describe_capabilities(params: &Value) -> String {
    params["_meta"][META_CAPABILITIES]
        .as_object()
        .map(|caps| caps.keys().cloned().collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}
