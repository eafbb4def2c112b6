//! `hello`: the smallest useful tenant.
//!
//! Answers every request with its method, path and headers as JSON, and logs
//! one line at each level the way the platform's docs show (`console.log`-style
//! plain lines and `[INFO]`/`[WARN]`/`[ERROR]`/`[DEBUG]` prefixes, on stdout and
//! stderr), so a viewer sees every level the host can produce. `/quiet` answers
//! without logging, for measuring what capture costs.

use guest_kit::{path_with_query, respond, split_query};
use serde_json::{Map, Value, json};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let method = method_name(&request.method());
        let path = path_with_query(&request);
        let quiet = split_query(&path).0 == "/quiet";

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
        let body = json!({
            "method": method,
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
