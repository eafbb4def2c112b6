//! `hello`: the smallest useful tenant.
//!
//! Answers every request with its method, scheme, authority, path and headers
//! as JSON (the scheme is `https` when the host received it over TLS), and logs
//! one line at each level the way the platform's docs show (`console.log`-style
//! plain lines and `[INFO]`/`[WARN]`/`[ERROR]`/`[DEBUG]` prefixes, on stdout and
//! stderr), so a viewer sees every level the host can produce. `/quiet` answers
//! without logging, for measuring what capture costs; `/structured` prints one
//! structured (JSON object) line and one plain line.
//!
//! Two paths show what a tenant may reach (the host's `allowed_outbound_hosts`,
//! `env` and `secrets`):
//! - `/env?name=NAME` answers with the environment variable's value and
//!   prints it, the way a careless tenant would: the host redacts secrets
//!   (`&as=json`: every character `\uXXXX`-escaped in a structured line;
//!   `&as=url`: percent-encoded; `&as=base64`: as `Basic` credentials);
//! - `/read?path=PATH` answers with a file's text (from a `--dir` grant);
//! - `/fetch` makes `x-fetch-times` (default 1) GET requests to the URL in
//!   the `x-fetch-url` header and answers with each one's status and body, or
//!   its error code.

use guest_kit::{path_with_query, query_param, respond, split_query};
use serde_json::{Map, Value, json};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingRequest, ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = method_name(&request.method());
        let path = path_with_query(&request);
        let (route, query) = split_query(&path);
        match route {
            "/env" => {
                let name = query_param(query, "name").unwrap_or_default();
                return env(out, name, query_param(query, "as"));
            }
            "/read" => return read(out, query_param(query, "path").unwrap_or_default()),
            "/fetch" => return fetch(&request, out),
            _ => {}
        }
        if route == "/structured" {
            // What a structured logger prints: one JSON object a line.
            println!(r#"{{"level":"warn","msg":"cache miss","key":"user:42","ms":12}}"#);
            println!("not JSON, a plain line");
            return respond(out, 200, "text/plain", b"logged\n");
        }
        let quiet = route == "/quiet";

        if !quiet {
            println!("hello: {method} {path}");
            println!("[INFO] request received: {method} {path}");
            println!("[DEBUG] headers: {}", request.headers().entries().len());
            eprintln!("[WARN] this is what a warning looks like");
            eprintln!("[ERROR] this is what an error looks like");
            eprintln!("stderr without a prefix");
        }

        let mut headers = Map::new();
        for (name, value) in request.headers().entries() {
            let value = Value::String(String::from_utf8_lossy(&value).into_owned());
            match headers.get_mut(&name) {
                // A repeated header keeps every value, in order.
                Some(Value::Array(values)) => values.push(value),
                Some(first) => *first = Value::Array(vec![first.take(), value]),
                None => {
                    headers.insert(name, value);
                }
            }
        }
        let scheme = request.scheme().map(|scheme| match scheme {
            Scheme::Http => "http".to_string(),
            Scheme::Https => "https".to_string(),
            Scheme::Other(other) => other,
        });
        let body = json!({
            "method": method,
            "scheme": scheme,
            "authority": request.authority(),
            "path": path,
            "headers": headers,
        });
        respond(out, 200, "application/json", body.to_string().as_bytes());
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

/// `/env?name=NAME[&as=FORM]`: the variable's value, also printed.
fn env(out: ResponseOutparam, name: &str, form: Option<&str>) {
    let value = std::env::var(name).ok();
    let shown = value.as_deref().unwrap_or("(not set)");
    match form {
        // Every character as a JSON `\uXXXX` escape, in a structured line.
        Some("json") => {
            let escaped: String = shown
                .chars()
                .map(|c| format!("\\u{:04x}", c as u32))
                .collect();
            println!(r#"{{"message": "env {name}={escaped}", "value": "{escaped}"}}"#);
        }
        Some("url") => {
            let encoded: String = shown.bytes().map(|b| format!("%{b:02X}")).collect();
            println!("env {name}={encoded}");
        }
        Some("base64") => println!("env {name}=Basic {}", base64(&format!("user:{shown}"))),
        _ => println!("env {name}={shown}"),
    }
    let body = json!({ "name": name, "value": value });
    respond(out, 200, "application/json", body.to_string().as_bytes());
}

/// Standard base64 with padding: what an `Authorization: Basic` header holds.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `/read?path=PATH`: a file's text from a directory the host granted.
fn read(out: ResponseOutparam, path: &str) {
    let body = match std::fs::read_to_string(path) {
        Ok(text) => json!({ "path": path, "text": text }),
        Err(e) => json!({ "path": path, "error": e.to_string() }),
    };
    respond(out, 200, "application/json", body.to_string().as_bytes());
}

/// `/fetch`: `x-fetch-times` GETs of `x-fetch-url`, one after the other.
fn fetch(request: &IncomingRequest, out: ResponseOutparam) {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let Some(url) = header("x-fetch-url") else {
        return respond(out, 400, "text/plain", b"send the URL in x-fetch-url");
    };
    let times: usize = header("x-fetch-times")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let results: Vec<Value> = (0..times)
        .map(|_| match get(&url) {
            Ok((status, body)) => json!({ "status": status, "body": body }),
            Err(error) => json!({ "error": error }),
        })
        .collect();
    println!("[INFO] fetched {url} {times} time(s)");
    let body = json!({ "url": url, "results": results });
    respond(out, 200, "application/json", body.to_string().as_bytes());
}

/// One GET through `wasi:http/outgoing-handler`: the status and body, or
/// the error code's name.
fn get(url: &str) -> Result<(u16, String), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken twice")?;
    let stream = body.stream().map_err(|()| "stream taken twice")?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading the body: {}", e.to_debug_string()));
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
