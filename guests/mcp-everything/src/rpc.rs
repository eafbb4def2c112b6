//! JSON-RPC framing and the two ways a reply goes out: one JSON body, or a
//! stream of server-sent events (notifications, then the result).

use guest_kit::{Streaming, respond, respond_with_headers};
use serde_json::{Value, json};
use wasip2::http::types::ResponseOutparam;

/// What a request produces.
pub enum Reply {
    Result(Value),
    /// A JSON-RPC error: code and message.
    Error(i64, String),
    /// A JSON-RPC error with `data`.
    ErrorWithData(i64, String, Value),
    /// Notifications sent over SSE as they happen, then the result.
    Stream(Box<dyn FnOnce(&mut EventStream) -> Value>),
}

impl Reply {
    /// Sends the reply to request `id`; `session` is the `Mcp-Session-Id`
    /// to hand out (on `initialize`).
    pub fn send(self, id: Value, out: ResponseOutparam, session: Option<&str>) {
        self.send_as(id, out, 200, session)
    }

    /// Sends the reply with HTTP `status` (2026-07-28 maps some errors to
    /// 400 and 404).
    pub fn send_as(self, id: Value, out: ResponseOutparam, status: u16, session: Option<&str>) {
        match self {
            Reply::Result(result) => {
                let body = json!({ "jsonrpc": "2.0", "id": id, "result": result });
                let mut headers = vec![("content-type", "application/json")];
                if let Some(session) = session {
                    headers.push(("mcp-session-id", session));
                }
                respond_with_headers(out, status, &headers, body.to_string().as_bytes());
            }
            Reply::Error(code, message) => {
                eprintln!("[ERROR] {message}");
                respond(
                    out,
                    status,
                    "application/json",
                    error(id, code, &message).to_string().as_bytes(),
                );
            }
            Reply::ErrorWithData(code, message, data) => {
                eprintln!("[ERROR] {message}");
                let mut body = error(id, code, &message);
                body["error"]["data"] = data;
                respond(out, status, "application/json", body.to_string().as_bytes());
            }
            Reply::Stream(run) => {
                let mut events = EventStream {
                    stream: Streaming::start(
                        out,
                        status,
                        &[
                            ("content-type", "text/event-stream"),
                            ("cache-control", "no-cache"),
                        ],
                    ),
                    open: true,
                };
                let result = run(&mut events);
                events.event(&json!({ "jsonrpc": "2.0", "id": id, "result": result }));
                events.stream.finish();
            }
        }
    }
}

/// Server-sent events on a POST response.
pub struct EventStream {
    stream: Streaming,
    open: bool,
}

impl EventStream {
    /// Sends one JSON-RPC message as an SSE `message` event.
    pub fn event(&mut self, message: &Value) {
        if self.open
            && !self
                .stream
                .send(format!("event: message\ndata: {message}\n\n").as_bytes())
        {
            println!("[WARN] Client disconnected mid-stream");
            self.open = false;
        }
    }

    /// Sends a notification.
    pub fn notify(&mut self, method: &str, params: Value) {
        self.event(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }
}

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

pub fn parse_error(message: &str) -> Value {
    error(Value::Null, -32700, &format!("Parse error: {message}"))
}
