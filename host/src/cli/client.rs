//! The HTTP client the `deploy` and `servers` commands talk to a host's
//! control plane with: one request per connection, http or https (rustls
//! with the web's roots, as tenants' outbound calls), a bearer token, and
//! the host's JSON `error` turned into the message a user sees.

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A host's control plane: `--url`, and the token to use there.
pub(crate) struct ControlPlane {
    base: Uri,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl ControlPlane {
    /// `ca_cert`: a private CA to trust besides the system's (https only).
    pub(crate) fn new(
        url: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self> {
        let Some(token) = token else {
            bail!(
                "no session token: pass --token or set MCTX_TOKEN (`mctx-host token --user YOU` prints one)"
            );
        };
        let base: Uri = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        if !matches!(base.scheme_str(), Some("http" | "https")) || base.authority().is_none() {
            bail!("--url {url:?} must look like http://HOST[:PORT] or https://HOST[:PORT]");
        }
        let tls = match base.scheme_str() {
            Some("https") => Some(tokio_rustls::TlsConnector::from(
                crate::base::tls::cli_client_config(ca_cert)?,
            )),
            _ => None,
        };
        Ok(ControlPlane { base, token, tls })
    }

    /// Sends one request to `path` (under the URL's own path) and returns
    /// the status and the JSON answer; a host's refusal is an error saying
    /// what the host said.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(u16, Value)> {
        let authority = self.base.authority().expect("checked in new").clone();
        let https = self.tls.is_some();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let target = format!("{}{path}", self.base.path().trim_end_matches('/'));
        let mut request = Request::builder()
            .method(method)
            .uri(&target)
            .header(http::header::HOST, authority.as_str())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            );
        if let Some(kind) = content_type {
            request = request.header(http::header::CONTENT_TYPE, kind);
        }
        let request = request
            .body(Full::new(body))
            .context("building the request")?;
        let tcp = tokio::net::TcpStream::connect((authority.host(), port))
            .await
            .with_context(|| format!("cannot connect to {}", self.base))?;
        let response = if let Some(connector) = &self.tls {
            let name = rustls::pki_types::ServerName::try_from(authority.host().to_string())
                .with_context(|| format!("{:?} is not a host name", authority.host()))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .with_context(|| {
                    format!(
                        "TLS with {} failed (if its certificate comes from a private CA, pass it with --ca-cert)",
                        self.base
                    )
                })?;
            send(TokioIo::new(tls), request).await?
        } else {
            send(TokioIo::new(tcp), request).await?
        };
        let (parts, body) = response.into_parts();
        let bytes = body
            .collect()
            .await
            .context("reading the host's answer")?
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| serde_json::json!({ "error": String::from_utf8_lossy(&bytes).trim().to_string() }),
        );
        let status = parts.status.as_u16();
        if status >= 400 {
            let error = json["error"].as_str().unwrap_or("no reason given");
            bail!(
                "{status} {}: {error}",
                parts.status.canonical_reason().unwrap_or("")
            );
        }
        Ok((status, json))
    }
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .context("the host did not answer")
}
