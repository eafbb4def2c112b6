//! `misbehave`: a tenant that does, on request, every bad thing a host must
//! survive. Each path is one fault:
//!
//! | path | what the guest does |
//! |---|---|
//! | `/trap` | panics (a wasm trap) after logging a line |
//! | `/spin` | loops forever: only the host's CPU limit stops it |
//! | `/oom` | allocates 1 MiB blocks until memory runs out |
//! | `/stack` | recurses until the stack overflows |
//! | `/flood?lines=N` | writes N numbered lines to stdout (default 1000) |
//! | `/big?kb=N` | writes one line of N KiB (default 64) |
//! | `/slow?ms=N` | sleeps N ms (not CPU time) before answering (default 100) |
//! | `/stream` | answers 200, then streams a body chunk every 10 ms forever |
//! | `/tick?lines=N` | writes N lines `tick <unix ns>` stamped as each is written (default 1), for latency measurements |
//! | `/script` | logs markup (`<script>`, an `onerror` handler) that a viewer must show as text |
//! | `/counter?tag=T` | answers how many requests this instance has served (state kept in the guest: 1 on a fresh instance) and logs `counter N for T` |
//! | `/residue?kb=N` | answers how many 8-byte words of a new N KiB allocation (default 64) already hold its mark, then marks them all and frees it: 0 unless memory an earlier request wrote reached this one |
//! | `/escapes` | logs one line full of terminal escape sequences (window title, clear screen, C1 CSI, a bidi override, a carriage return) that `tail` must show as text |
//! | `/cookies` | answers with `Set-Cookie`s for the host's `session`, a `Domain` cookie, a harmless `theme`, and `Clear-Site-Data: "cookies"` |
//! | anything else | answers `ok` |

use std::hint::black_box;
use std::io::Write as _;

use guest_kit::{path_with_query, query_number, respond, respond_with_headers, split_query};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingResponse, ResponseOutparam};

wasip2::http::proxy::export!(Misbehave);

struct Misbehave;

impl wasip2::exports::http::incoming_handler::Guest for Misbehave {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = path_with_query(&request);
        let (route, query) = split_query(&path);
        match route {
            "/trap" => {
                println!("[INFO] about to trap");
                panic!("misbehave: trap requested");
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
            "/escapes" => {
                // What a hostile tenant prints to attack whoever tails it:
                // retitle the window (OSC 0), clear the screen, a C1 CSI,
                // a bidirectional override, a carriage return.
                println!(
                    "[WARN] title\x1b]0;pwned\x07 clear\x1b[2J c1\u{9b}31m bidi\u{202e}txt cr\rend"
                );
                respond(out, 200, "text/plain", b"printed escapes\n");
            }
            "/stack" => {
                println!("[INFO] recursing");
                black_box(recurse(black_box(0)));
            }
            "/flood" => {
                let lines = query_number(query, "lines", 1000);
                let stdout = std::io::stdout();
                let mut stdout = stdout.lock();
                for i in 0..lines {
                    let _ = writeln!(stdout, "flood line {i}");
                }
                let _ = stdout.flush();
                respond(
                    out,
                    200,
                    "text/plain",
                    format!("{lines} lines\n").as_bytes(),
                );
            }
            "/big" => {
                let kb = query_number(query, "kb", 64) as usize;
                let line = "x".repeat(kb * 1024);
                println!("{line}");
                respond(
                    out,
                    200,
                    "text/plain",
                    format!("{kb} KiB line\n").as_bytes(),
                );
            }
            "/slow" => {
                let ms = query_number(query, "ms", 100);
                println!("[INFO] sleeping {ms} ms");
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(
                    out,
                    200,
                    "text/plain",
                    format!("slept {ms} ms\n").as_bytes(),
                );
            }
            "/stream" => stream_forever(out),
            "/tick" => {
                let lines = query_number(query, "lines", 1);
                for _ in 0..lines {
                    let now = wasip2::clocks::wall_clock::now();
                    println!(
                        "tick {}",
                        now.seconds as u128 * 1_000_000_000 + now.nanoseconds as u128
                    );
                }
                respond(
                    out,
                    200,
                    "text/plain",
                    format!("{lines} ticks\n").as_bytes(),
                );
            }
            "/counter" => {
                // Instance state: survives only when the host reuses instances.
                static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let tag = guest_kit::query_param(query, "tag").unwrap_or("-");
                println!("[INFO] counter {served} for {tag}");
                respond(out, 200, "text/plain", format!("{served}\n").as_bytes());
            }
            "/residue" => {
                let kb = query_number(query, "kb", 64) as usize;
                let stale = residue(kb << 10);
                println!("[INFO] {stale} words of {kb} KiB already marked");
                respond(out, 200, "text/plain", format!("{stale}\n").as_bytes());
            }
            "/script" => {
                println!(
                    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
                );
                respond(out, 200, "text/plain", b"logged markup\n");
            }
            "/cookies" => {
                // What a tenant would send to fixate or wipe its visitors'
                // host session; the host keeps only `theme`.
                respond_with_headers(
                    out,
                    200,
                    &[
                        ("content-type", "text/plain"),
                        ("set-cookie", "session=fixated; Path=/"),
                        ("set-cookie", "__Host-session=fixated; Path=/; Secure"),
                        ("set-cookie", "wide=1; Path=/; Domain=localhost"),
                        ("set-cookie", "theme=dark; Path=/"),
                        ("clear-site-data", "\"cookies\""),
                    ],
                    b"cookies offered\n",
                );
            }
            _ => respond(out, 200, "text/plain", b"ok\n"),
        }
    }
}

/// What `/residue` writes: a word no allocator bookkeeping looks like.
const MARK: u64 = 0xA5A5_5A5A_C3C3_3C3C;

/// How many 8-byte words of a new `len`-byte heap block hold [`MARK`];
/// then marks the whole block and frees it. The allocator hands a fresh
/// instance the same block every time, so a host whose pool slots keep one
/// instance's memory for the next shows the marks here; within one reused
/// instance the freed block comes back marked, which is how a test knows
/// the probe sees.
fn residue(len: usize) -> usize {
    let layout = std::alloc::Layout::from_size_align(len.max(8), 4096).expect("a valid layout");
    let words = layout.size() / 8;
    // SAFETY: the block is ours from alloc to dealloc, 4096-aligned, and
    // `words` words long. Its contents were never written by this program:
    // volatile reads, so that the compiler loads what memory holds rather
    // than assuming anything about it; `black_box` keeps the marks from
    // being dropped as stores to memory about to be freed.
    unsafe {
        let block = std::alloc::alloc(layout).cast::<u64>();
        if block.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        let marked = (0..words)
            .filter(|&i| block.add(i).read_volatile() == MARK)
            .count();
        for i in 0..words {
            block.add(i).write(MARK);
        }
        std::alloc::dealloc(black_box(block).cast(), layout);
        marked
    }
}

/// Recursion the optimiser cannot turn into a loop: each frame keeps a buffer
/// alive across the call.
#[expect(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse(depth + 1) + frame[black_box(3)]
}

fn stream_forever(out: ResponseOutparam) {
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = body.write().expect("stream is taken once");
    let mut chunk: u64 = 0;
    loop {
        if writeln!(stream, "chunk {chunk}")
            .and_then(|()| std::io::Write::flush(&mut stream))
            .is_err()
        {
            println!("[INFO] client went away after {chunk} chunks");
            return;
        }
        chunk += 1;
        wasip2::clocks::monotonic_clock::subscribe_duration(10_000_000).block();
    }
}
