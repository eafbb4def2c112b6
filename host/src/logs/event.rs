//! What an entry can carry besides a line: the event that ends a request
//! (its outcome, status, timings, MCP call, headers, exception) and the
//! event a deploy makes, and the one rule for cutting text to a size.
//! `logs::entry` re-exports them, so the shape of an
//! entry is named from one place.

use serde::{Deserialize, Serialize};

/// What changed in a server's deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeployAction {
    /// A version was deployed (the entry's `version`).
    Deployed,
    /// A version was deleted (the entry's `version`).
    VersionDeleted,
    /// The server was made active or inactive.
    StatusChanged,
    /// The tenants file was reloaded and this server's table changed.
    Reloaded,
}

/// The facts of a deployment change, carried by an entry of kind `deploy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployEvent {
    pub action: DeployAction,
    /// Who made the change: a user id, or `tenants file`.
    pub by: String,
}

/// How a request ended, as the log stream reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Ok,
    /// The guest trapped (panic, unreachable, stack overflow…).
    Exception,
    ExceededCpu,
    ExceededMemory,
    /// Stopped at its wall-clock limit (`request_timeout_ms`).
    ExceededWallTime,
    /// The client went away before the guest finished.
    Canceled,
    /// The guest answered, and the client went away while the response
    /// body was still streaming (Cloudflare's tail events say the same).
    ResponseStreamDisconnected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Exception => "exception",
            Outcome::ExceededCpu => "exceededCpu",
            Outcome::ExceededMemory => "exceededMemory",
            Outcome::ExceededWallTime => "exceededWallTime",
            Outcome::Canceled => "canceled",
            Outcome::ResponseStreamDisconnected => "responseStreamDisconnected",
        }
    }
}

/// The facts of a finished request, carried by an entry of kind `request`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestEvent {
    pub method: String,
    pub path: String,
    /// The status the client got (`None` if it went away first).
    pub status: Option<u16>,
    pub outcome: Outcome,
    pub wall_ms: u64,
    pub cpu_ms: u64,
    /// Outbound HTTP calls the request made (refused ones included).
    #[serde(default)]
    pub subrequests: u32,
    /// What went wrong when the guest trapped (outcome `exception`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<Exception>,
    /// The request's headers, as Cloudflare's tail events carry them:
    /// names in lower case, repeated ones joined with `, `, credentials
    /// (`authorization`, `cookie`, `proxy-authorization`) and the tenant's
    /// secrets shown as `[REDACTED]`. Kept only while someone watches the
    /// slug; what `--header` filters on.
    #[serde(default, skip_serializing_if = "RequestHeaders::is_empty")]
    pub headers: RequestHeaders,
    /// An MCP request's method and name, from its `Mcp-Method` and
    /// `Mcp-Name` headers (MCP 2026-07-28; never from the body).
    #[serde(flatten)]
    pub mcp: Option<McpCall>,
}

/// What an MCP request asked for, as its headers say: `tools/call` and
/// the tool's name, `prompts/get` and the prompt's…
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct McpCall {
    pub mcp_method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_name: Option<String>,
}

impl McpCall {
    /// The longest header value kept.
    const MAX_BYTES: usize = 256;

    /// From a request's `Mcp-Method` (and `Mcp-Name`) headers, if it has
    /// one: values cut to 256 bytes, non-UTF-8 bytes replaced.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<McpCall> {
        let text = |name: &str| {
            headers.get(name).map(|value| {
                let mut text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                truncate_message(&mut text, Self::MAX_BYTES);
                text
            })
        };
        Some(McpCall {
            mcp_method: text("mcp-method")?,
            mcp_name: text("mcp-name"),
        })
    }

    /// `tools/call get_weather`.
    pub fn summary(&self) -> String {
        match &self.mcp_name {
            Some(name) => format!("{} {name}", self.mcp_method),
            None => self.mcp_method.clone(),
        }
    }
}

/// A request's headers on its event, in name order.
pub type RequestHeaders = std::collections::BTreeMap<String, String>;

/// A guest's failure, as Cloudflare's tail events carry it: the kind of
/// trap, its message, and the guest's functions from the innermost out
/// (from the component's name section, Rust names demangled).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    pub name: String,
    pub message: String,
    pub stack: Vec<String>,
}

/// Cuts `message` to at most `max` bytes on a char boundary. Returns whether
/// anything was cut.
pub fn truncate_message(message: &mut String, max: usize) -> bool {
    if message.len() <= max {
        return false;
    }
    let cut = message.floor_char_boundary(max);
    message.truncate(cut);
    true
}
