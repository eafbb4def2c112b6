//! Small helpers shared by the sample tenants.
//!
//! The tenants use the raw `wasi:http` bindings from `wasip2` on purpose: they
//! are meant to run unchanged under any `wasi:http/proxy` host (ours and plain
//! `wasmtime serve`), so they depend on nothing but the standard interfaces.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

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
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type.as_bytes().to_vec())])
            .expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(status)
        .expect("status codes passed here are valid");
    let response_body = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    write_body(response_body, body);
}

/// Writes `body` in chunks the host accepts and finishes the stream.
pub fn write_body(response_body: OutgoingBody, body: &[u8]) {
    {
        let mut stream = response_body.write().expect("stream is taken once");
        // A failed write means the client went away; nothing is left to do.
        if stream
            .write_all(body)
            .and_then(|()| std::io::Write::flush(&mut stream))
            .is_err()
        {
            return;
        }
    }
    let _ = OutgoingBody::finish(response_body, None);
}
