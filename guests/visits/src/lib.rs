//! `visits`: what a tenant can keep between requests with `wasi:keyvalue`
//! (the tenant's store, granted in its table with `keyvalue_max_bytes`).
//!
//! - `GET /count`: adds one to `visits` (atomically) and answers the total.
//! - `GET /kv/KEY`, `PUT /kv/KEY` (the body), `DELETE /kv/KEY`.
//! - `GET /keys`: every key, one a line.
//!
//! A store error is the answer, with 503 for a store this tenant is not
//! granted and 507 for any other refusal (the host also tells the tenant's
//! log stream why). It runs under `wasmtime serve -S keyvalue` too, whose
//! store keeps a request's writes only for that request.

use guest_kit::{path_with_query, read_body, respond, split_query};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:keyvalue/imports",
    generate_all,
});

use wasi::keyvalue::atomics;
use wasi::keyvalue::store::{self, Bucket, Error};

wasip2::http::proxy::export!(Visits);

struct Visits;

/// The largest value `PUT` takes.
const MAX_VALUE: usize = 1 << 20;

impl wasip2::exports::http::incoming_handler::Guest for Visits {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = path_with_query(&request);
        let (path, _) = split_query(&target);
        let (status, body) = match store::open("") {
            Ok(bucket) => serve(&request, path, &bucket),
            Err(e) => failed(e),
        };
        respond(out, status, "text/plain", body.as_bytes());
    }
}

fn serve(request: &IncomingRequest, path: &str, bucket: &Bucket) -> (u16, String) {
    let answer = match (request.method(), path) {
        (Method::Get, "/count") => atomics::increment(bucket, "visits", 1).map(|n| {
            println!("visit number {n}");
            n.to_string()
        }),
        (Method::Get, "/keys") => keys(bucket),
        (method, path) => match path.strip_prefix("/kv/") {
            None | Some("") => return (404, "try /count, /keys or /kv/KEY\n".into()),
            Some(key) => match method {
                Method::Get => match bucket.get(key) {
                    Ok(Some(value)) => Ok(String::from_utf8_lossy(&value).into_owned()),
                    Ok(None) => return (404, format!("no key {key:?}\n")),
                    Err(e) => Err(e),
                },
                Method::Put => match read_body(request, MAX_VALUE) {
                    Some(value) => bucket.set(key, &value).map(|()| "stored".into()),
                    None => return (413, format!("a value has at most {MAX_VALUE} bytes\n")),
                },
                Method::Delete => bucket.delete(key).map(|()| "deleted".into()),
                _ => return (405, "GET, PUT or DELETE\n".into()),
            },
        },
    };
    match answer {
        Ok(text) => (200, text + "\n"),
        Err(e) => failed(e),
    }
}

/// Every key, a page at a time, one a line.
fn keys(bucket: &Bucket) -> Result<String, Error> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor)?;
        all.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all.join("\n")),
        }
    }
}

fn failed(error: Error) -> (u16, String) {
    eprintln!("[ERROR] store: {error:?}");
    match error {
        Error::AccessDenied => (503, "access-denied: this tenant has no store\n".into()),
        Error::NoSuchStore => (503, "no-such-store\n".into()),
        Error::Other(why) => (507, format!("{why}\n")),
    }
}
