//! `hello-p3`: a WASIp3 tenant (`wasi:http/service@0.3`, the `wasip3`
//! crate). Its `handle` is async and returns the response while a task of
//! its own writes the body — what p3 makes possible, and what the host must
//! keep running after the response head is out (`host/src/run/p3.rs`).
//!
//! - `/` (any other path): logs a line, answers `hello from p3 at PATH`.
//! - `/quiet`: the same without the line.
//! - `/lines?n=N`: logs N lines naming the path, then answers.
//! - `/stream?chunks=N`: a line naming this instance (a random id drawn on
//!   its first request), then N body chunks 20 ms apart (a line for each,
//!   naming the request's path).
//! - `/counter`: how many requests this instance has served (1 when fresh).
//! - `/trap`, `/spin`, `/oom`: a panic, a loop that never ends, allocation
//!   until memory runs out — for the host's limits.

use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use wasip3::clocks::monotonic_clock::wait_for;
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HelloP3);

struct HelloP3;

/// Requests this instance has served.
static SERVED: AtomicU32 = AtomicU32::new(0);

/// This instance's id: random, drawn once.
fn instance_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| RandomState::new().hash_one(0u8))
}

impl wasip3::exports::http::handler::Guest for HelloP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let target = request.get_path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let number = |name: &str| {
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find_map(|(key, value)| (key == name).then(|| value.parse::<u32>().ok()))
                .flatten()
                .unwrap_or(1)
        };
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let chunks: Vec<String> = match path {
            "/counter" => vec![format!("{served}\n")],
            "/quiet" => vec![format!("hello from p3 at {target}\n")],
            "/trap" => {
                println!("[INFO] about to trap");
                panic!("hello-p3: trap requested");
            }
            "/spin" => {
                println!("[INFO] spinning");
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "/oom" => {
                println!("[INFO] allocating until memory runs out");
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(vec![1u8; 1 << 20]);
                    black_box(&blocks);
                }
            }
            "/lines" => {
                let n = number("n");
                for i in 1..=n {
                    println!("line {i} of {n} for {target}");
                }
                vec![format!("{n} lines\n")]
            }
            "/stream" => {
                println!("[INFO] streaming in instance {:016x}", instance_id());
                (1..=number("chunks"))
                    .map(|i| format!("chunk {i}\n"))
                    .collect()
            }
            _ => {
                println!("[INFO] p3 request received: {target}");
                vec![format!("hello from p3 at {target}\n")]
            }
        };
        let streaming = path == "/stream";
        let (mut body_tx, body_rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
        drop(trailers_tx);
        // The body is written after `handle` has returned the response.
        wit_bindgen::spawn_local(async move {
            for chunk in chunks {
                if streaming {
                    wait_for(20_000_000).await;
                    println!("[INFO] sending {} of {target}", chunk.trim_end());
                }
                let unsent = body_tx.write_all(chunk.into_bytes()).await;
                if !unsent.is_empty() {
                    eprintln!("[WARN] the client went away");
                    return;
                }
            }
        });
        Ok(response)
    }
}
