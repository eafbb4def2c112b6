//! A log viewer: a real WebSocket client of `/log-stream/{slug}`.

use super::host::HostProcess;
use super::{PATIENCE, token};

/// A log viewer: a real WebSocket client on `/log-stream/{slug}`.
pub struct Viewer {
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

/// Why a viewer was refused: the HTTP status and the JSON `error`.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

impl HostProcess {
    /// Opens `/log-stream/{slug}?{query}` on the control plane as `user`.
    pub async fn viewer(&self, slug: &str, query: &str, user: &str) -> Viewer {
        let cookie = format!("session={}", token(user));
        self.try_viewer(
            &format!("/log-stream/{slug}?{query}"),
            &[("cookie", &cookie)],
        )
        .await
        .unwrap_or_else(|refused| panic!("viewer refused: {refused:?}"))
    }

    /// Opens a log stream at `path` with exactly `headers`.
    pub async fn try_viewer(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Viewer, Refused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let mut request = format!("ws://localhost:{}{path}", self.addr.port())
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(Viewer { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let body = response.body().clone().unwrap_or_default();
                let error = serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|v| v["error"].as_str().unwrap_or_default().to_string())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
                Err(Refused {
                    status: response.status().as_u16(),
                    error,
                })
            }
            Err(e) => panic!("WebSocket handshake failed: {e}"),
        }
    }
}

/// What a viewer can receive.
#[derive(Debug)]
pub enum Received {
    /// A JSON frame (`logs`, `dropped`, `closing`).
    Frame(serde_json::Value),
    Ping,
    /// The close frame's code and reason, or `None` when the socket ended.
    Closed(Option<(u16, String)>),
}

impl Viewer {
    /// The next thing the host sent.
    pub async fn receive(&mut self) -> Received {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let next = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("the host sent something in time");
            return match next {
                Some(Ok(Message::Text(text))) => {
                    Received::Frame(serde_json::from_str(&text).expect("frames are JSON"))
                }
                Some(Ok(Message::Ping(_))) => Received::Ping,
                Some(Ok(Message::Close(frame))) => {
                    Received::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Received::Closed(None),
            };
        }
    }

    /// The next text frame, unparsed (`None` once the stream has closed):
    /// for counting without paying for JSON parsing.
    pub async fn text_frame(&mut self) -> Option<String> {
        use futures_util::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => return Some(text.to_string()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// A frame that has already arrived, without waiting for one.
    pub fn try_frame(&mut self) -> Option<serde_json::Value> {
        use futures_util::FutureExt as _;
        loop {
            match self.receive().now_or_never()? {
                Received::Frame(frame) => return Some(frame),
                Received::Ping => continue,
                Received::Closed(close) => panic!("the stream closed: {close:?}"),
            }
        }
    }

    /// The next JSON frame (pings are answered and skipped). Pings do not
    /// extend the wait: a frame that never comes fails the test.
    pub async fn frame(&mut self) -> serde_json::Value {
        let next = async {
            loop {
                match self.receive().await {
                    Received::Frame(frame) => return frame,
                    Received::Ping => continue,
                    Received::Closed(close) => panic!("the stream closed: {close:?}"),
                }
            }
        };
        tokio::time::timeout(PATIENCE, next)
            .await
            .expect("a frame arrived in time")
    }

    /// Entries from `logs` frames until `done` says the last one is there;
    /// panics on any other frame.
    pub async fn entries_until(
        &mut self,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        loop {
            let frame = self.frame().await;
            assert_eq!(frame["type"], "logs", "unexpected frame {frame}");
            for entry in frame["entries"].as_array().unwrap() {
                entries.push(entry.clone());
                if done(entry) {
                    return entries;
                }
            }
        }
    }

    /// The entries of every `logs` frame that arrives while `work` runs
    /// (other frames are skipped), with what `work` returned.
    pub async fn entries_while<T>(
        &mut self,
        mut work: tokio::task::JoinHandle<T>,
    ) -> (T, Vec<serde_json::Value>) {
        let mut entries = Vec::new();
        loop {
            tokio::select! {
                done = &mut work => return (done.unwrap(), entries),
                frame = self.frame() => {
                    if frame["type"] == "logs" {
                        entries.extend(frame["entries"].as_array().unwrap().iter().cloned());
                    }
                }
            }
        }
    }

    /// Closes the socket, as a browser closing the modal does.
    pub async fn close(&mut self) {
        let _ = self.socket.close(None).await;
    }

    /// Every entry of one request, up to and including its request event.
    pub async fn request_entries(&mut self, request_id: &str) -> Vec<serde_json::Value> {
        self.entries_until(|e| e["type"] == "request" && e["requestId"] == request_id)
            .await
    }
}
