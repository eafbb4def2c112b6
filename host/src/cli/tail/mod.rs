//! `mctx-host tail`: a tenant's live logs in the terminal, like `wrangler
//! tail`. A client of the same `/log-stream/{slug}` WebSocket the dashboard
//! uses, authenticated with a bearer token.
//!
//! A dropped connection is retried with backoff (1 s, 2 s, 4 s … 16 s) and
//! said on stderr; a refusal (401/403/404/429) is final: the reason is
//! printed and the exit code is non-zero. Entries go to stdout, everything
//! else to stderr, so `--format json | jq` sees only entries.
//!
//! `--since 15m` (a tenant whose logs the host keeps) first prints the
//! stored entries from then on, then goes on live: the stream is joined
//! *before* the stored entries are asked for, the live ones are held back
//! until those are printed, and an entry seen twice (same node and `seq`)
//! is printed once. A reconnection fills its gap the same way.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use futures_util::StreamExt as _;
use http::{HeaderValue, Uri};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::logs::console::{Escaped, pretty_line};
use crate::logs::entry::{EntryKind, LogEntry};
use crate::logs::filter::Filter;
use crate::logs::wire::Frame;

mod backfill;

use backfill::{From, Seen, urlencode};

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// How entries are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TailFormat {
    /// `HH:MM:SS.mmm LEVEL [slug@version] message`, coloured on a terminal.
    Pretty,
    /// One JSON entry per line (pipe into `jq`).
    Json,
}

/// `mctx-host tail <slug>`.
#[derive(Args, Debug)]
pub(crate) struct TailArgs {
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

    /// Only a sample of the requests, 0 to 1 (`0.1`: one in ten), each with
    /// all its entries; decided in the host by request id, so every viewer
    /// with the same rate sees the same requests.
    #[arg(long, value_name = "RATE", value_parser = crate::logs::filter::Sample::parse)]
    sampling_rate: Option<crate::logs::filter::Sample>,

    /// A CA certificate (PEM) to trust besides the system's, for a host
    /// whose certificate comes from a private CA (https/wss only).
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,

    /// The TLS settings, made from `ca_cert` once (`run`).
    #[arg(skip)]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,

    /// Only requests that ended so: `ok` (the guest finished), `error` (an
    /// exception or a limit), `canceled` (the client left); repeat for more.
    /// Lines wait in the host until their request ends, then come whole.
    #[arg(long, value_name = "STATUS", value_parser = crate::logs::filter::StatusClass::parse)]
    status: Vec<crate::logs::filter::StatusClass>,

    /// Only requests with this method (`POST`); repeat for more. Lines
    /// come when their request ends.
    #[arg(long, value_name = "METHOD")]
    method: Vec<String>,

    /// Only requests with this header (`NAME`) or this value of it
    /// (`NAME:VALUE`); repeat to require several. Lines come when their
    /// request ends. Credentials (`authorization`, `cookie`) are never
    /// shown, so their values cannot be matched.
    #[arg(long, value_name = "NAME[:VALUE]", value_parser = crate::logs::filter::HeaderMatch::parse)]
    header: Vec<crate::logs::filter::HeaderMatch>,

    /// Only MCP requests with this method (`tools/call`), as their
    /// `Mcp-Method` header says; repeat for more. Lines come when their
    /// request ends.
    #[arg(long, value_name = "METHOD")]
    mcp_method: Vec<String>,

    /// Only `log` entries, `request` events or `deploy` events.
    #[arg(long = "type", value_parser = ["log", "request", "deploy"])]
    kind: Option<String>,

    /// First the stored entries from this far back (`15m`, `2h`, `7d`; `M` is
    /// months), or from a time (RFC 3339 with its zone, `2026-12-04T18:00:00Z`,
    /// or 13-digit milliseconds since the epoch), then live, with nothing
    /// missed or printed twice between the two. Needs a server whose logs
    /// the host keeps (`[tenants.logs] retain`); otherwise tail says so on
    /// stderr and goes on live.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,

    /// What was printed (behind an `Arc`: the arguments stay small).
    #[arg(skip)]
    seen: std::sync::Arc<Mutex<Seen>>,
}

/// Why the stream ended.
enum Ended {
    /// Connection lost or closed by the host: try again.
    Retry(String),
    /// The host refused us: stop.
    Refused(String),
}

impl TailArgs {
    pub(crate) async fn run(mut self) -> Result<()> {
        let Some(token) = self.token.clone() else {
            bail!(
                "no session token: pass --token or set MCTX_TOKEN (`mctx-host token --user YOU` prints one)"
            );
        };
        if let Some(since) = &self.since {
            crate::logs::store::Query::parse(&format!("since={}", urlencode(since)), 0)
                .map_err(|e| anyhow::anyhow!("--{e}"))?;
        }
        let url = self.stream_url()?;
        if url.starts_with("wss://") {
            self.tls = Some(crate::base::tls::cli_client_config(
                self.ca_cert.as_deref(),
            )?);
        }
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
        let query = self.filter()?.to_query();
        let slug = form_urlencoded::byte_serialize(self.slug.as_bytes()).collect::<String>();
        let mut url = format!("{scheme}://{authority}{base}/log-stream/{slug}");
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        Ok(url)
    }

    /// The filters the host applies for this client.
    fn filter(&self) -> Result<Filter> {
        let levels = match &self.level {
            Some(list) => {
                Filter::parse_levels(list).map_err(|e| anyhow::anyhow!("--level: {e}"))?
            }
            None => Vec::new(),
        };
        Ok(Filter {
            levels,
            search: self.search.as_ref().map(|s| s.to_lowercase()),
            request_id: self.request_id.clone(),
            kind: self.kind.as_deref().and_then(EntryKind::parse),
            sample: self.sampling_rate,
            statuses: self.status.clone(),
            methods: self.method.iter().map(|m| m.to_ascii_uppercase()).collect(),
            headers: self.header.clone(),
            mcp_methods: self.mcp_method.clone(),
        })
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
        let connector = match &self.tls {
            Some(config) => tokio_tungstenite::Connector::Rustls(config.clone()),
            None => tokio_tungstenite::Connector::Plain,
        };
        let connected =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector))
                .await;
        let mut socket = match connected {
            Ok((socket, _)) => socket,
            // A certificate that does not verify will not verify next time
            // either: say so and stop, rather than retrying forever.
            Err(WsError::Tls(e)) => {
                return Ended::Refused(format!(
                    "TLS with {url} failed: {e} (if the host's certificate comes from a private CA, pass it with --ca-cert)"
                ));
            }
            Err(WsError::Io(e)) if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) => {
                return Ended::Refused(format!(
                    "TLS with {url} failed: {e} (if the host's certificate comes from a private CA, pass it with --ca-cert)"
                ));
            }
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
        let joined_ms = crate::logs::entry::now_ms();
        let mut closing = None;
        // Joined the stream: now what was stored before (and since then;
        // the overlap is printed once). Live entries wait meanwhile.
        let mut stored = self
            .stored_since()
            .map(|since| Box::pin(self.fetch_stored(since)));
        let mut held: Vec<LogEntry> = Vec::new();
        loop {
            let message = tokio::select! {
                message = socket.next() => message,
                fetched = async { stored.as_mut().expect("polled only while fetching").await },
                    if stored.is_some() =>
                {
                    stored = None;
                    match fetched {
                        Ok(entries) => self.print_entries(&entries, color, From::Stored),
                        Err(e) => eprintln!("mctx-host tail: no stored entries: {e:#}; live entries only"),
                    }
                    let held = std::mem::take(&mut held);
                    self.fill_in(&held, joined_ms, color).await;
                    self.print_entries(&held, color, From::Live);
                    continue;
                }
            };
            let Some(message) = message else { break };
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Ended::Retry(format!("connection lost: {e}")),
            };
            // A frame this version does not know is skipped, not fatal.
            let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
                continue;
            };
            match frame {
                Frame::Logs { entries } if stored.is_some() => held.extend(entries),
                Frame::Logs { entries } => {
                    self.fill_in(&entries, joined_ms, color).await;
                    self.print_entries(&entries, color, From::Live);
                }
                Frame::Dropped { count } => eprintln!(
                    "mctx-host tail: {count} entries missed (this client fell behind, or the cluster link was down)"
                ),
                Frame::Notice { message } => eprintln!("mctx-host tail: {}", Escaped(&message)),
                Frame::Closing { reason } => closing = Some(reason),
            }
        }
        Ended::Retry(match closing {
            Some(reason) => format!("the host closed the stream: {}", Escaped(&reason)),
            None => "the host closed the stream".into(),
        })
    }

    fn print_entries(&self, entries: &[LogEntry], color: bool, from: From) {
        let mut seen = crate::base::sync::lock(&self.seen);
        let mut out = std::io::stdout().lock();
        for entry in entries.iter().filter(|e| seen.first_time(e, from)) {
            let line = match self.format {
                TailFormat::Json => serde_json::to_string(entry).expect("entries serialize"),
                TailFormat::Pretty => pretty_line(entry, color),
            };
            if writeln!(out, "{line}").is_err() {
                std::process::exit(0); // stdout closed (`| head`): done
            }
        }
        let _ = out.flush();
    }
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
            ca_cert: None,
            tls: None,
            sampling_rate: None,
            status: vec![crate::logs::filter::StatusClass::Error],
            method: vec!["post".into()],
            header: vec![crate::logs::filter::HeaderMatch::parse("X-Pick: yes").unwrap()],
            mcp_method: Vec::new(),
            since: None,
            seen: Default::default(),
        }
    }

    #[test]
    fn the_stream_url_carries_base_path_and_filters() {
        assert_eq!(
            args("http://localhost:8080").stream_url().unwrap(),
            "ws://localhost:8080/log-stream/my-app?level=warn%2Cerror&search=tool+called&requestId=abc&type=log\
             &status=error&method=POST&header=x-pick%3Ayes"
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
}
