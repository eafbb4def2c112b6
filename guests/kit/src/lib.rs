//! Small helpers shared by the sample tenants.
//!
//! The tenants use the raw `wasi:http` bindings from `wasip2` on purpose: they
//! are meant to run unchanged under any `wasi:http/proxy` host (ours and plain
//! `wasmtime serve`), so they depend on nothing but the standard interfaces.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::OutputStream;

/// The request's path and query, `/` when the host sent none.
pub fn path_with_query(request: &IncomingRequest) -> String {
    request.path_with_query().unwrap_or_else(|| "/".to_string())
}

/// Splits `/a/b?x=1` into (`/a/b`, `x=1`).
pub fn split_query(path_with_query: &str) -> (&str, &str) {
    path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""))
}

/// The value of `name` in a query string (`a=1&b=2`), without percent-decoding:
/// the tenants only take numbers this way.
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// A numeric query parameter, or `default` when absent or malformed.
pub fn query_number(query: &str, name: &str, default: u64) -> u64 {
    query_param(query, name)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Sends a complete response: status, one `content-type` header and a body.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond_with_headers(out, status, &[("content-type", content_type)], body);
}

/// Sends a complete response with the given headers.
pub fn respond_with_headers(
    out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut response = Streaming::start(out, status, headers);
    response.send(body);
    response.finish();
}

/// Reads a request body whole, up to `limit` bytes (`None` if it is larger
/// or cannot be read).
pub fn read_body(request: &IncomingRequest, limit: usize) -> Option<Vec<u8>> {
    let body = request.consume().ok()?;
    let stream = body.stream().ok()?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > limit {
                    return None;
                }
            }
            Err(wasip2::io::streams::StreamError::Closed) => return Some(bytes),
            Err(_) => return None,
        }
    }
}

/// A response whose body is written piece by piece, each piece flushed to
/// the client at once (for server-sent events).
pub struct Streaming {
    // Declared before `body`: the stream must be dropped first.
    stream: OutputStream,
    body: OutgoingBody,
}

impl Streaming {
    /// Sends the status and headers; the body follows with [`Streaming::send`].
    pub fn start(out: ResponseOutparam, status: u16, headers: &[(&str, &str)]) -> Self {
        let fields: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        let headers = Fields::from_list(&fields).expect("headers passed here are valid");
        let response = OutgoingResponse::new(headers);
        response
            .set_status_code(status)
            .expect("status codes passed here are valid");
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("stream is taken once");
        Streaming { stream, body }
    }

    /// Writes and flushes one piece; false if the client went away.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream
            .write_all(bytes)
            .and_then(|()| std::io::Write::flush(&mut self.stream))
            .is_ok()
    }

    /// Ends the body.
    pub fn finish(self) {
        let Streaming { stream, body } = self;
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }
}
