//! `mctx-host deploy` and `mctx-host servers`: the deploy API from a
//! terminal (`wrangler deploy`'s shape), over `client.rs`.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http::Method;
use serde_json::Value;

use super::client::ControlPlane;
use crate::deploy::rfc3339;

/// Where the host is and who is asking: shared by both commands.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// The host's control plane.
    #[arg(long, default_value = "http://localhost:8080")]
    url: String,

    /// A session token of the server's owner or an admin (`mctx-host token
    /// --user YOU` prints one).
    #[arg(long, env = "MCTX_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// A CA certificate (PEM) to trust besides the system's, for a host
    /// whose certificate comes from a private CA.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl Connection {
    fn control_plane(&self) -> Result<ControlPlane> {
        ControlPlane::new(&self.url, self.token.clone(), self.ca_cert.as_deref())
    }
}

/// `mctx-host deploy <slug> <component> --version V`.
#[derive(Args, Debug)]
pub(crate) struct DeployArgs {
    /// The server to deploy to (created beforehand by an admin, or with
    /// `--create`).
    slug: String,

    /// The component (a wasi:http/proxy built for wasm32-wasip2).
    component: PathBuf,

    /// The version to deploy it as (semver; versions are immutable).
    #[arg(long)]
    version: semver::Version,

    /// Create the server first, owned by this user (admins only).
    #[arg(long, value_name = "OWNER")]
    create: Option<String>,

    #[command(flatten)]
    connection: Connection,
}

impl DeployArgs {
    pub(crate) async fn run(self) -> Result<()> {
        let host = self.connection.control_plane()?;
        let wasm = std::fs::read(&self.component)
            .with_context(|| format!("cannot read {}", self.component.display()))?;
        if let Some(owner) = &self.create {
            let body = serde_json::json!({ "slug": self.slug, "owner": owner });
            host.call(
                Method::POST,
                "/api/servers",
                Some("application/json"),
                Bytes::from(body.to_string()),
            )
            .await
            .with_context(|| format!("cannot create server {}", self.slug))?;
            eprintln!("created server {} for {owner}", self.slug);
        }
        let path = format!("/api/servers/{}/versions/{}", self.slug, self.version);
        let size = wasm.len();
        let (status, answer) = host
            .call(
                Method::PUT,
                &path,
                Some("application/wasm"),
                Bytes::from(wasm),
            )
            .await
            .with_context(|| format!("cannot deploy {} {}", self.slug, self.version))?;
        let sha256 = answer["server"]["versions"]
            .as_array()
            .and_then(|versions| {
                versions
                    .iter()
                    .find(|v| v["version"] == self.version.to_string())
            })
            .and_then(|v| v["sha256"].as_str())
            .unwrap_or("?");
        let what = if status == 201 {
            "deployed"
        } else {
            "already deployed (same bytes)"
        };
        println!(
            "{} {} {what}: {size} bytes, sha256 {sha256}",
            self.slug, self.version
        );
        Ok(())
    }
}

/// How `servers` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// A table: one line per version.
    Table,
    /// The API's JSON, as it came.
    Json,
}

/// `mctx-host servers`.
#[derive(Args, Debug)]
pub(crate) struct ServersArgs {
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,

    #[command(flatten)]
    connection: Connection,
}

impl ServersArgs {
    pub(crate) async fn run(self) -> Result<()> {
        let host = self.connection.control_plane()?;
        let (_, answer) = host
            .call(Method::GET, "/api/servers", None, Bytes::new())
            .await
            .context("cannot list servers")?;
        let mut out = std::io::stdout().lock();
        match self.format {
            ListFormat::Json => writeln!(out, "{answer:#}")?,
            ListFormat::Table => write!(out, "{}", table(&answer))?,
        }
        Ok(())
    }
}

/// `SLUG OWNER STATUS SOURCE VERSION DEPLOYED BY SHA256`, a line per
/// version (a server without versions gets one line with `-`).
fn table(answer: &Value) -> String {
    let mut rows = vec![
        [
            "SLUG", "OWNER", "STATUS", "SOURCE", "VERSION", "DEPLOYED", "BY", "SHA256",
        ]
        .map(String::from),
    ];
    let empty = Vec::new();
    for server in answer["servers"].as_array().unwrap_or(&empty) {
        let text = |key: &str| server[key].as_str().unwrap_or("-").to_string();
        let versions = server["versions"].as_array().unwrap_or(&empty);
        if versions.is_empty() {
            rows.push([
                text("slug"),
                text("owner"),
                text("status"),
                text("source"),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for version in versions {
            let sha = version["sha256"].as_str().unwrap_or("-");
            rows.push([
                text("slug"),
                text("owner"),
                text("status"),
                text("source"),
                version["version"].as_str().unwrap_or("-").to_string(),
                version["deployedAt"].as_u64().map_or("-".into(), rfc3339),
                version["deployedBy"].as_str().unwrap_or("-").to_string(),
                sha.get(..12).unwrap_or(sha).to_string(),
            ]);
        }
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_line_per_version() {
        let answer = serde_json::json!({ "servers": [
            { "slug": "app", "owner": "alice", "status": "active", "source": "api",
              "versions": [{ "version": "1.0.0", "deployedAt": 0, "deployedBy": "alice",
                             "sha256": "0123456789abcdef0123" }] },
            { "slug": "new", "owner": "bob", "status": "active", "source": "api", "versions": [] },
        ]});
        let text = table(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("SLUG  OWNER"), "{text}");
        assert!(lines[1].contains("1.0.0") && lines[1].contains("1970-01-01T00:00:00Z"));
        assert!(lines[1].ends_with("0123456789ab"), "{text}");
        assert!(lines[2].starts_with("new"), "{text}");
    }
}
