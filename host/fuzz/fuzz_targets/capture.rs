//! Arbitrary writes to a request's stdout and stderr: the line splitter,
//! level prefixes, UTF-8 replacement, the 10 KB cut and the 256 KiB budget
//! must never panic, and every entry must respect the limits.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use mctx_host::capture::RequestCapture;
use mctx_host::entry::{LogEntry, MAX_MESSAGE_BYTES, RequestMeta, Stream};
use mctx_host::sink::LogSink;
use wasmtime_wasi::cli::StdoutStream as _;

#[derive(Default)]
struct Collect(Mutex<Vec<LogEntry>>);

impl LogSink for Collect {
    fn wants(&self, _slug: &str) -> bool {
        true
    }
    fn publish(&self, _slug: &str, entries: Vec<LogEntry>) {
        self.0.lock().unwrap().extend(entries);
    }
}

fuzz_target!(|data: &[u8]| {
    let sink = Arc::new(Collect::default());
    let meta = Arc::new(RequestMeta { slug: "s".into(), version: "1".into(), request_id: "r".into() });
    let capture = RequestCapture::new(meta, sink.clone());
    let mut stdout = capture.stream(Stream::Stdout).p2_stream();
    let mut stderr = capture.stream(Stream::Stderr).p2_stream();
    // The first byte of each chunk picks the stream and the chunk length.
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let len = usize::from(control >> 1).min(tail.len());
        let (chunk, next) = tail.split_at(len);
        let stream = if control & 1 == 0 { &mut stdout } else { &mut stderr };
        stream.write(bytes::Bytes::copy_from_slice(chunk)).unwrap();
        rest = next;
    }
    capture.finish();
    let entries = sink.0.lock().unwrap();
    let mut warnings = 0;
    for entry in entries.iter() {
        assert!(entry.message.len() <= MAX_MESSAGE_BYTES);
        if entry.message.starts_with("[mctx] output limit reached") {
            warnings += 1;
        }
    }
    // The host writes the budget warning once; a guest may write the same
    // words itself, so only count when it did not.
    if !data.windows(6).any(|w| w == b"[mctx]") {
        assert!(warnings <= 1);
    }
    assert!(capture.bytes_written() == data.len() - count_controls(data));
});

/// How many control bytes the loop above consumed.
fn count_controls(data: &[u8]) -> usize {
    let (mut rest, mut controls) = (data, 0);
    while let Some((&control, tail)) = rest.split_first() {
        controls += 1;
        rest = &tail[usize::from(control >> 1).min(tail.len())..];
    }
    controls
}
