//! `mctx-host tail`: a tenant's live logs in the terminal, like `wrangler
//! tail`. A client of the same `/log-stream/{slug}` WebSocket the dashboard
//! uses, authenticated with a bearer token.
//!
//! A dropped connection is retried with backoff (1 s, 2 s, 4 s … 16 s) and
//! said on stderr; a refusal (401/403/404/429) is final: the reason is
//! printed and the exit code is non-zero. Entries go to stdout, everything
//! else to stderr, so `--format json | jq` sees only entries.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt as _;
use http::{HeaderValue, Uri};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::console::{clock_local, level_label};
use crate::entry::Level;

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// How entries are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    /// `HH:MM:SS.mmm LEVEL [slug@version] message`, coloured on a terminal.
    Pretty,
    /// One JSON entry per line (pipe into `jq`).
    Json,
}

/// `mctx-host tail <slug>`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// The server (tenant) whose logs to follow.
    slug: String,

    /// The host's control plane (add `/.mctx` for a single-component host).
    #[arg(long, default_value = "http://localhost:8080")]
    url: String,

    /// A session token (`mctx-host token --user YOU` prints one).
    #[arg(long, env = "MCTX_TOKEN", hide_env_values = true)]
    token: Option<String>,

    #[arg(long, value_enum, default_value = "pretty")]
    format: TailFormat,

    /// Only these levels, e.g. `warn,error`.
    #[arg(long)]
    level: Option<String>,

    /// Only messages containing this text (case-insensitive).
    #[arg(long)]
    search: Option<String>,

    /// Only this request's entries.
    #[arg(long)]
    request_id: Option<String>,

    /// Only `log` entries or only `request` events.
    #[arg(long = "type", value_parser = ["log", "request"])]
    kind: Option<String>,
}

/// Why the stream ended.
enum Ended {
    /// Connection lost or closed by the host: try again.
    Retry(String),
    /// The host refused us: stop.
    Refused(String),
}

impl TailArgs {
    pub async fn run(self) -> Result<()> {
        let Some(token) = self.token.clone() else {
            bail!(
                "no session token: pass --token or set MCTX_TOKEN (`mctx-host token --user YOU` prints one)"
            );
        };
        let url = self.stream_url()?;
        let mut backoff = Duration::from_secs(1);
        loop {
            let ended = tokio::select! {
                ended = self.stream_once(&url, &token, &mut backoff) => ended,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match ended {
                Ended::Refused(reason) => bail!("{reason}"),
                Ended::Retry(reason) => {
                    eprintln!(
                        "mctx-host tail: {reason}; reconnecting in {} s",
                        backoff.as_secs()
                    );
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// `ws[s]://host[:port][/base]/log-stream/{slug}?filters`.
    fn stream_url(&self) -> Result<String> {
        let uri: Uri = self
            .url
            .parse()
            .with_context(|| format!("--url {:?} is not a URL", self.url))?;
        let scheme = match uri.scheme_str() {
            Some("http") | Some("ws") => "ws",
            Some("https") | Some("wss") => "wss",
            _ => bail!("--url {:?} must start with http:// or https://", self.url),
        };
        let authority = uri
            .authority()
            .with_context(|| format!("--url {:?} has no host", self.url))?;
        let base = uri.path().trim_end_matches('/');
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(level) = &self.level {
            for name in level.split(',').filter(|l| !l.is_empty()) {
                if Level::parse(name).is_none() {
                    bail!("--level: unknown level {name:?} (use log, info, warn, error, debug)");
                }
            }
            query.append_pair("level", level);
        }
        for (name, value) in [
            ("search", &self.search),
            ("requestId", &self.request_id),
            ("type", &self.kind),
        ] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        let query = query.finish();
        let slug = form_urlencoded::byte_serialize(self.slug.as_bytes()).collect::<String>();
        let mut url = format!("{scheme}://{authority}{base}/log-stream/{slug}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        Ok(url)
    }

    async fn stream_once(&self, url: &str, token: &str, backoff: &mut Duration) -> Ended {
        let mut request = match url.into_client_request() {
            Ok(request) => request,
            Err(e) => return Ended::Refused(format!("invalid stream URL {url}: {e}")),
        };
        let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Ended::Refused("the token has characters a header cannot hold".into());
        };
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, bearer);
        let mut socket = match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => socket,
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body = response.body().as_deref().unwrap_or_default();
                let reason = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
                let message = format!(
                    "{} {}: {reason}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
                return match status.as_u16() {
                    401 | 403 | 404 | 429 => Ended::Refused(message),
                    _ => Ended::Retry(message),
                };
            }
            Err(e) => return Ended::Retry(format!("cannot connect to {url}: {e}")),
        };
        eprintln!("mctx-host tail: connected to {url}");
        *backoff = Duration::from_secs(1);
        let color = self.format == TailFormat::Pretty && std::io::stdout().is_terminal();
        let mut closing = None;
        while let Some(message) = socket.next().await {
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Ended::Retry(format!("connection lost: {e}")),
            };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            match frame["type"].as_str() {
                Some("logs") => self.print_entries(&frame["entries"], color),
                Some("dropped") => eprintln!(
                    "mctx-host tail: {} entries missed (this client fell behind, or the cluster link was down)",
                    frame["count"]
                ),
                Some("notice") => eprintln!(
                    "mctx-host tail: {}",
                    frame["message"].as_str().unwrap_or_default()
                ),
                Some("closing") => closing = frame["reason"].as_str().map(str::to_string),
                _ => {}
            }
        }
        Ended::Retry(match closing {
            Some(reason) => format!("the host closed the stream: {reason}"),
            None => "the host closed the stream".into(),
        })
    }

    fn print_entries(&self, entries: &Value, color: bool) {
        let Some(entries) = entries.as_array() else {
            return;
        };
        let mut out = std::io::stdout().lock();
        for entry in entries {
            let line = match self.format {
                TailFormat::Json => entry.to_string(),
                TailFormat::Pretty => pretty(entry, color),
            };
            if writeln!(out, "{line}").is_err() {
                std::process::exit(0); // stdout closed (`| head`): done
            }
        }
        let _ = out.flush();
    }
}

/// One entry as a terminal line.
fn pretty(entry: &Value, color: bool) -> String {
    let level = entry["level"]
        .as_str()
        .and_then(Level::parse)
        .unwrap_or(Level::Log);
    let time = clock_local(entry["timestamp"].as_u64().unwrap_or(0));
    let label = format!("{:<5}", level_label(level));
    let label = if color {
        let code = match level {
            Level::Log => "90",
            Level::Info => "34",
            Level::Warn => "33",
            Level::Error => "31",
            Level::Debug => "35",
        };
        format!("\x1b[{code}m{label}\x1b[0m")
    } else {
        label
    };
    let text = |key: &str| entry[key].as_str().unwrap_or_default().to_string();
    // On a cluster, which host served the request.
    let node = entry["node"]
        .as_str()
        .map_or(String::new(), |node| format!(" on {node}"));
    format!(
        "{time} {label} [{}@{}{node}] {}",
        text("slug"),
        text("version"),
        text("message")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> TailArgs {
        TailArgs {
            slug: "my-app".into(),
            url: url.into(),
            token: None,
            format: TailFormat::Pretty,
            level: Some("warn,error".into()),
            search: Some("tool called".into()),
            request_id: Some("abc".into()),
            kind: Some("log".into()),
        }
    }

    #[test]
    fn the_stream_url_carries_base_path_and_filters() {
        assert_eq!(
            args("http://localhost:8080").stream_url().unwrap(),
            "ws://localhost:8080/log-stream/my-app?level=warn%2Cerror&search=tool+called&requestId=abc&type=log"
        );
        assert!(
            args("https://h.example/.mctx/")
                .stream_url()
                .unwrap()
                .starts_with("wss://h.example/.mctx/log-stream/my-app?")
        );
        assert!(args("ftp://x").stream_url().is_err());
        let mut bad = args("http://x");
        bad.level = Some("loud".into());
        assert!(bad.stream_url().unwrap_err().to_string().contains("loud"));
    }

    #[test]
    fn pretty_lines_colour_only_when_asked() {
        let entry = serde_json::json!({"timestamp": 0, "level": "warn", "message": "careful",
            "slug": "s", "version": "1.0.0"});
        let plain = pretty(&entry, false);
        assert!(plain.ends_with(" WARN  [s@1.0.0] careful"), "{plain}");
        assert!(!plain.contains('\x1b'));
        assert!(pretty(&entry, true).contains("\x1b[33mWARN \x1b[0m"));
        let mut clustered = entry.clone();
        clustered["node"] = "host-a".into();
        let line = pretty(&clustered, false);
        assert!(line.ends_with("[s@1.0.0 on host-a] careful"), "{line}");
    }
}
