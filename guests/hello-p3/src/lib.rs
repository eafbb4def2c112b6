//! `hello-p3`: the smallest WASIp3 tenant. An async `handle` (the p3
//! `wasi:http/handler` export) that logs a line and answers with a body
//! streamed from a task of its own — what p3 makes possible: one instance
//! may serve several requests at once.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HelloP3);

struct HelloP3;

impl wasip3::exports::http::handler::Guest for HelloP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_else(|| "/".into());
        println!("[INFO] p3 request received: {path}");
        let (mut body_tx, body_rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
        drop(trailers_tx);
        wit_bindgen::spawn_local(async move {
            let unsent = body_tx
                .write_all(format!("hello from p3 at {path}\n").into_bytes())
                .await;
            assert!(unsent.is_empty(), "the client went away");
        });
        Ok(response)
    }
}
